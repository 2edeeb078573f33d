#!/bin/bash
# bisect-step.sh TREE [vm options...] — one `git bisect run` step on a kernel tree:
# `make olddefconfig && make -j` (KBUILD_OUTPUT=DIR builds out of tree, as O=DIR), then
# `vfio-exerciser vm --kernel-tree … --bisect` with the options given (narrow them to the
# failing case: --backend type1v2 --kind hugetlb-2M). Exit 0 good, 1 bad, 125 when the commit
# could not be tested (it did not build, or the harness could not test it).
# VFIO_EXERCISER_BIN overrides the tool (default: this checkout's release build).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[[ $# -ge 1 ]] || { echo "usage: bisect-step.sh TREE [vm options...]" >&2; exit 125; }
tree=$(cd "$1" && pwd) || exit 125
shift
bin=${VFIO_EXERCISER_BIN:-$here/../.build/release/vfio-exerciser}
[[ -x $bin ]] || { echo "bisect-step: no $bin (bash scripts/setup.sh)" >&2; exit 125; }
built=${KBUILD_OUTPUT:-$tree}
mkdir -p "$built" || exit 125
log=$built/bisect-build.log
commit=$(git -C "$tree" rev-parse --short HEAD 2>/dev/null || echo "?")
t0=$SECONDS
if ! { make -C "$tree" olddefconfig && make -C "$tree" -j"$(nproc)"; } >"$log" 2>&1; then
    echo "bisect-step: $commit does not build (tail of $log):" >&2
    tail -n 5 "$log" >&2
    exit 125
fi
t1=$SECONDS
rc=0
"$bin" vm --kernel-tree "$built" --bisect "$@" || rc=$?
echo "bisect-step: $commit: build $((t1 - t0)) s, test $((SECONDS - t1)) s, exit $rc" >&2
case $rc in 0 | 1 | 125) exit "$rc" ;; *) exit 125 ;; esac
