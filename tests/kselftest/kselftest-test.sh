#!/bin/bash
# The kselftest install (scripts/kselftest-install.sh) run by the kernel's own run_kselftest.sh and
# kselftest/runner.sh from Debian's linux-source (the test kernel's tree): here, where no device is
# bound to vfio-pci (an honest SKIP), and in the test VM, where every case must come out in the
# runner's output and the target must pass.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=out/kselftest-test
rm -rf "$out"
mkdir -p "$out"
# shellcheck source=../lib.sh
. tests/lib.sh
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vfio-exerciser
kdir=$(bash scripts/fetch-kernel.sh test:7.3 "$cache/kernels" 2>"$out/fetch.log" | tail -n 1)
selftests=$kdir/build/tools/testing/selftests
check "linux-source's selftests are there ($selftests)" test -f "$selftests/kselftest/runner.sh"
bash scripts/kselftest-install.sh "$selftests" "$out/install" >/dev/null 2>"$out/install.log"
check "the install has the target, its settings and the list line" sh -c "test -x '$out/install/vfio-exerciser/run_vfio_exerciser.sh' &&
    grep -q '^timeout=' '$out/install/vfio-exerciser/settings' && grep -qx 'vfio-exerciser:run_vfio_exerciser.sh' '$out/install/kselftest-list.txt'"

echo "== on this machine (no device on vfio-pci): a skip, said as one"
rc=0
(cd "$out/install" && ./run_kselftest.sh -c vfio-exerciser 2>&1 | cat) >"$out/host.txt" || rc=$?
check "the runner says SKIP for the target" grep -qx 'ok 1 selftests: vfio-exerciser: run_vfio_exerciser.sh # SKIP' "$out/host.txt"
check "with the reason" grep -q '^# 1..0 # SKIP no device bound to vfio-pci' "$out/host.txt"

echo "== in the test VM (debian:6.1)"
tar -cf "$out/install.tar" -C "$out/install" .
rc=0
.build/release/vfio-exerciser vm --kernel debian:6.1 --out "$out/vm" --guest-file "$out/install.tar:/etc/exerciser/kselftest.tar" \
    --guest-script tests/vm/guest/kselftest.sh >"$out/vm.txt" 2>"$out/vm.err" || rc=$?
sed -n '/^TAP version/,/^# Totals/p' "$out/vm.txt" | head -n 8 | sed 's/^/    /'
echo "    …"
grep -E '^ok 1 |^# Totals|^KSELFTEST-EXIT' "$out/vm.txt" | sed 's/^/    /'
plan=$(sed -n 's/^# 1\.\.\([0-9]*\)$/\1/p' "$out/vm.txt" | head -n 1)
cases=$(grep -cE '^# (not )?ok [0-9]+ ' "$out/vm.txt")
check "the guest script exited 0" test "$rc" -eq 0
check "run_kselftest.sh exited 0" grep -qx 'KSELFTEST-EXIT 0' "$out/vm.txt"
check "the runner passes the target" grep -qx 'ok 1 selftests: vfio-exerciser: run_vfio_exerciser.sh' "$out/vm.txt"
check "the runner's totals: one pass" grep -q '^# Totals: pass:1 fail:0' "$out/vm.txt"
check "every case of the plan is in the runner's output ($cases of ${plan:-no plan})" test "${plan:-0}" -gt 100 -a "$cases" -eq "${plan:-0}"
check "no case failed" sh -c "! grep -q '^# not ok' '$out/vm.txt'"
check "skips are said as skips" grep -qE '^# ok [0-9]+ .* # SKIP ' "$out/vm.txt"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
