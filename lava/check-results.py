#!/usr/bin/python3
# check-results.py LAVA_RUN_LOG: lava-run exits 0 and its result.yaml says "pass" whenever the
# infrastructure worked, whatever the tests said. This reads the log's results: exit 1 unless the job
# passed, no result is a fail, ktap-plan passed (every planned case reported), names are distinct
# and there are at least 100 cases.
import sys, yaml
results, errors = [], []
for line in open(sys.argv[1], errors="replace"):
    line = line.strip().removeprefix("- ")  # one object a line
    if not line.startswith("{"):
        continue
    try:
        entry = yaml.safe_load(line)  # JSON, but results carry YAML tags: "endtc": ! "262"
    except yaml.YAMLError:
        continue
    if entry.get("lvl") == "results":
        results.append(entry["msg"])
    elif entry.get("lvl") == "error":
        errors.append(str(entry.get("msg")))
cases = [r for r in results if r.get("definition") != "lava"]
infra = [r for r in results if r.get("definition") == "lava"]
failed = [f"{r.get('definition')}/{r.get('case')}" for r in results if r.get("result") not in ("pass", "skip")]
by = {}
for r in cases:
    by[r["result"]] = by.get(r["result"], 0) + 1
print(f"lava-run: {len(cases)} test cases ({', '.join(f'{k} {v}' for k, v in sorted(by.items()))}), {len(infra)} LAVA action results")
for r in cases[:3] + cases[-2:]:
    print(f"  {r.get('definition')}/{r.get('case')}: {r.get('result')}")
problems = []
if not any(r.get("case") == "job" and r.get("result") == "pass" for r in infra):
    problems.append("the LAVA job did not pass: " + "; ".join(errors[:2]))
if failed:
    problems.append(f"{len(failed)} results not passed: " + ", ".join(failed[:5]))
names = [r.get("case") for r in cases]
if len(names) != len(set(names)):
    problems.append("test case names repeat")
if not any(r.get("case") == "ktap-plan" and r.get("result") == "pass" for r in cases):
    problems.append("no passing ktap-plan: the KTAP was incomplete or absent")
if len(cases) < 100:
    problems.append(f"only {len(cases)} test cases")
for p in problems:
    print("lava-run: FAIL " + p)
sys.exit(1 if problems else 0)
