#!/bin/bash
# Tests of the VM harness itself, against a real guest (debian:6.1): a wrong expectation, an
# unexpected skip, a hung guest and a panicking guest must each give a failing verdict while every
# case that finished before is still reported. Needs a release build (scripts/setup.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=.build/release/vfio-exerciser
out=out/harness-test
rm -rf "$out"
mkdir -p "$out"
# shellcheck source=../lib.sh
. tests/lib.sh
report() { echo "$out/$1/debian-6.1/report.json"; }
verdict() { jq -r --arg id "$2" '.results[] | select(.record.id == $id) | .verdict.kind' "$(report "$1")"; }

# The guests boot side by side, as many as there are cores (each is one TCG thread); the checks
# then read what each left. launch NAME OUTPUT-FILE COMMAND...: exit code in $out/NAME.rc,
# seconds in $out/NAME.secs.
jobs_max=$(nproc)
launch() {
    local name=$1 file=$2
    shift 2
    while [[ $(jobs -rp | wc -l) -ge $jobs_max ]]; do wait -n; done
    (
        s=$SECONDS rc=0
        "$@" >"$file" 2>"$out/$name.err" || rc=$?
        echo "$rc" >"$out/$name.rc"
        echo $((SECONDS - s)) >"$out/$name.secs"
    ) &
}
vm() { # name, then vm arguments: the matrix on debian:6.1's plain boot, type1v2, KTAP, no kind ×
    # event cases (these tests count cases around an injected fault; the events and the movable
    # boot have their own runs in CI's matrix)
    local name=$1
    shift
    launch "$name" "$out/$name.ktap" $bin vm --kernel debian:6.1 --boot plain --out "$out/$name" --backend type1v2 --no-events --format ktap "$@"
}
result() { rc=$(cat "$out/$1.rc" 2>/dev/null || echo none); } # sets $rc for NAME

cfg=$out/configs
mkdir -p "$cfg"
cp configs/matrix.yaml "$cfg/"
# anon-private really maps (ok); claim EFAULT.
awk '/kind: \[anon-private, anon-shared/ { print "  - kind: anon-private\n    outcome: EFAULT\n    decided_by: \"deliberately wrong\""; sub(/anon-private, /, "") } { print }' \
    configs/expectations.yaml >"$cfg/expectations.yaml"

cfg_noskips=$out/configs-noskips
mkdir -p "$cfg_noskips"
cp configs/matrix.yaml configs/expectations.yaml "$cfg_noskips/"
printf 'schema: 1\nskips: []\n' >"$cfg_noskips/skips.yaml"
tree=$(ls -d "${XDG_CACHE_HOME:-$HOME/.cache}"/vfio-exerciser/kernels/kernels/test-7.3-*/build 2>/dev/null | head -n1)

t0=$SECONDS
# The slowest first.
launch probe "$out/probe.txt" $bin vm --kernel test:7.3 --out "$out/probe" --guest-script tests/vm/guest/probe.sh
launch tree "$out/tree.out" $bin vm --kernel-tree "$tree" --boot plain --out "$out/tree" --backend type1v2 --backend mdev-pin --kind anon-private \
    --kind mixedmap-special --kind mixedmap-page --format json --output "$out/tree.json"
vm oops --kind anon-private --kind hole --kind prot-none --inject oops-after:1
vm hang --kind anon-private --kind hole --kind prot-none --inject hang-after:1 --timeout 20
vm isolate --kind anon-private --kind memfd --kind bar --kind tmpfs-file --kind hole \
    --inject kill:anon-private,hang:memfd,bar-fault:bar --case-timeout 5
launch bindings "$out/bindings.ktap" $bin vm --kernel debian:6.1 --out "$out/bindings" --guest-script tests/vm/guest/bindings.sh
vm wrong --configs "$cfg" --kind anon-private --kind hole
vm wrongiova --kind anon-private --kind readonly-read --inject wrong-iova
vm panic --kind anon-private --kind hole --kind prot-none --inject panic-after:2
vm strict --configs "$cfg_noskips" --backend iommufd --kind anon-private --strict-skips
vm swapprp --kind hugetlb-2M --kind anon-private --inject swap-prp
wait
echo "(11 guests, $jobs_max at a time: $((SECONDS - t0)) s)"

echo "== a wrong expectation fails its case and only its case"
result wrong
check "exit code is 1" test "$rc" -eq 1
check "anon-private fails" test "$(verdict wrong type1v2/anon-private)" = fail
check "the reason names both outcomes" grep -q "got ok, expected EFAULT" "$(report wrong)"
check "hole still passes" test "$(verdict wrong type1v2/hole)" = pass
check "KTAP says not ok for it" grep -q "^not ok .* type1v2/anon-private" "$out/wrong.ktap"
check "hygiene was checked and the run left nothing behind" jqe '(.hygiene | length) == 5 and (.hygiene | all(.passed))' "$(report wrong)"
check "the session's teardown is one of the hygiene checks" jqe '.hygiene | map(.name) | index("teardown-type1v2") != null' "$(report wrong)"

echo "== strict skips: a skip configs/skips.yaml does not expect fails, naming the case and its reason"
result strict
check "exit code is 1" test "$rc" -eq 1
check "the unexpected skip fails" test "$(verdict strict iommufd/anon-private)" = fail
check "its reason names the case and why it skipped" grep -q "unexpected skip of iommufd/anon-private: no /dev/iommu" "$(report strict)"
check "type1v2 still passes" test "$(verdict strict type1v2/anon-private)" = pass

echo "== a data check aimed at the wrong IOVA is a mismatch, even though the map succeeded"
result wrongiova
check "exit code is 1" test "$rc" -eq 1
for id in type1v2/anon-private type1v2/readonly-read; do
    check "$id: outcome ok but verdict fail" test "$(jq -r --arg id $id '.results[] | select(.record.id == $id) | "\(.record.outcome) \(.verdict.kind)"' "$(report wrongiova)")" = "ok fail"
    check "$id: the failed check is an NVMe data check" jqe --arg id $id '.results[] | select(.record.id == $id) | .record.checks | map(select(.passed == false) | .name | startswith("data-nvme-")) | any' "$(report wrongiova)"
done

echo "== two PRP entries swapped in one NVMe command: the pages land crosswise and the check fails"
result swapprp
check "exit code is 1" test "$rc" -eq 1
for id in type1v2/hugetlb-2M type1v2/anon-private; do
    check "$id: outcome ok but verdict fail" test "$(jq -r --arg id $id '.results[] | select(.record.id == $id) | "\(.record.outcome) \(.verdict.kind)"' "$(report swapprp)")" = "ok fail"
    check "$id: the NVMe read check names the pages" jqe --arg id $id '.results[] | select(.record.id == $id) | .record.checks | map(select(.name == "data-nvme-read" and .passed == false) | .detail | test("pages differ")) | any' "$(report swapprp)"
done

echo "== one case killed, one hung, one faulting on a BAR: each loses only itself"
result isolate
outcome() { jq -r --arg id "$2" '.results[] | select(.record.id == $id) | .record.outcome' "$(report "$1")"; }
check "exit code is 1" test "$rc" -eq 1
check "the killed case is reported with its signal" test "$(outcome isolate type1v2/anon-private)" = "lost: crashed: killed by SIGKILL"
check "the hung case is reported as timed out" test "$(outcome isolate type1v2/memfd)" = "lost: timed out after 5 s"
check "the BAR fault is reported as SIGBUS" test "$(outcome isolate type1v2/bar/BAR0)" = "lost: crashed: killed by SIGBUS"
check "what the killed case mapped was cleaned up" test "$(jq -r '.results[] | select(.record.id == "type1v2/anon-private") | .record.properties.cleanup_unmapped' "$(report isolate)")" = "65536 bytes from the case's IOVA window"
check "the cases after them still pass" test "$(verdict isolate type1v2/tmpfs-file) $(verdict isolate type1v2/hole)" = "pass pass"
check "hygiene holds even after killed cases" jqe '.hygiene | all(.passed)' "$(report isolate)"
check "data still moves through the device after the BAR fault" jqe '.results[] | select(.record.id == "type1v2/tmpfs-file") | .record.properties.data | startswith("ok")' "$(report isolate)"

echo "== bindings: a killed run is undone by unbind --all, a terminated run undoes itself (in the guest)"
result bindings
sed 's/^/    /' "$out/bindings.ktap"
check "the guest script exited 0" test "$rc" -eq 0
check "it ran all 8 checks" test "$(grep -c '^ok ' "$out/bindings.ktap")" -eq 8
check "none failed" sh -c "! grep -q '^not ok' '$out/bindings.ktap'"

echo "== a hung guest is killed and the finished cases are kept"
result hang
check "exit code is 1" test "$rc" -eq 1
check "the finished case kept its pass" test "$(verdict hang type1v2/anon-private)" = pass
check "the unfinished cases fail as lost" test "$(jq '[.results[] | select(.record.outcome | startswith("lost"))] | length' "$(report hang)")" -eq 2
check "a timeout incident is reported" jqe '.incidents | map(test("timed out|timeout")) | any' "$(report hang)"

echo "== a kernel panic is reported with the finished cases"
result panic
check "exit code is 1" test "$rc" -eq 1
check "both finished cases kept" test "$(jq '[.results[] | select(.verdict.kind == "pass")] | length' "$(report panic)")" -eq 2
check "the panic is an incident" jqe '.incidents | map(test("Kernel panic")) | any' "$(report panic)"
check "the case after the panic is lost" test "$(jq -r '.results[] | select(.record.id == "type1v2/hole") | .record.outcome' "$(report panic)" | cut -c1-5)" = "lost:"

echo "== an oopsed guest that stops making progress is ended ~30 s after its last result, not at the timeout"
result oops
took=$(cat "$out/oops.secs")
check "exit code is 1" test "$rc" -eq 1
check "the finished case kept its pass" test "$(verdict oops type1v2/anon-private)" = pass
check "the unfinished cases fail as lost" test "$(jq '[.results[] | select(.record.outcome | startswith("lost"))] | length' "$(report oops)")" -eq 2
check "the oops is named" jqe '.incidents | map(test("BUG: kernel NULL pointer dereference|Oops:")) | any' "$(report oops)"
stall=$(jq -r '.incidents[] | capture("guest ended (?<s>[0-9]+) s after its last result: the kernel oopsed").s' "$(report oops)")
check "the guest was ended for making no progress (${stall:-never} s after its last result)" test "${stall:-999}" -le 35
check "not by the timeout" jqe '.incidents | map(test("timeout")) | any | not' "$(report oops)"
check "the whole run took ${took} s, not the 300 s timeout" test "$took" -lt 150

echo "== probe on the test kernel: what it says is what the guest has"
result probe
sed -n '/PROBE-BEGIN/,/PROBE-END/p' "$out/probe.txt" | sed '1d;$d' >"$out/probe.json"
check "the guest script exited 0" test "$rc" -eq 0
check "probe --json is JSON" jqe . "$out/probe.json"
check "/dev/iommu and vfio cdevs (three edus, the NVMe, two mdevs)" jqe '.devIOMMU and (.vfioCdevs | length) == 6' "$out/probe.json"
check "/dev/vfio/vfio is the real type1 container (IOMMUFD_VFIO_CONTAINER off)" jqe '.vfioContainerBackend == "vfio (vfio_iommu_type1)"' "$out/probe.json"
check "type1v2 and unmap-all offered" jqe '.extensions.type1v2 and .extensions["unmap-all"]' "$out/probe.json"
check "each edu in its own viable group, with 4K|2M|1G IOMMU pages" \
    jqe '[.groups[] | select(.devices[0].device == "0x11e8")] | length == 3 and all(.viable and .iommu.pageSizes == 1075843072)' "$out/probe.json"
check "the hugepage pools the VM reserved" jqe '.hugepages["hugepages-1048576kB"] == "nr=1 free=1" and .hugepages["hugepages-2048kB"] == "nr=64 free=64"' "$out/probe.json"

echo "== a built kernel tree in one command: the test kernel's, with its test module and the seed rows"
result tree
check "exit code is 0" test "$rc" -eq 0
check "the test module was built against the tree and loaded" grep -q "VFIO-EXERCISER-TESTDEV" "$out/tree/tree/console.log"
for id in type1v2/mixedmap-special mdev-pin/mixedmap-special mdev-pin/anon-private type1v2/mixedmap-page; do
    check "$id passes" test "$(jq -r --arg id $id '.results[] | select(.record.id == $id) | .verdict.kind' "$out/tree.json")" = pass
done
check "mixedmap-special is EEXIST (65462462ffb2)" test "$(jq -r '.results[] | select(.record.id == "type1v2/mixedmap-special") | .record.outcome' "$out/tree.json")" = EEXIST

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
