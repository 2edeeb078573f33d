#!/bin/bash
# bisect-demo.sh WORKDIR — proves kernel-bisect.sh on a real kernel: a git repository made from
# the test kernel's tree (Debian's linux-source, built by `vfio-exerciser vm --kernel test:7.3`),
# five commits on top, one of which swaps the first two pinned pages in type1's vaddr_get_pfns()
# — MAP_DMA still succeeds, the device's bytes land crosswise (the shape of the 2022 bug). Then
# `git bisect run` must name that commit. Slow (a copy of the tree, one rebuild per step): not in
# CI; the README gives the measured times.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[[ $# -eq 1 ]] || { echo "usage: bisect-demo.sh WORKDIR" >&2; exit 2; }
work=$1
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vfio-exerciser
src=$(ls -d "$cache"/kernels/kernels/test-7.3-*/build 2>/dev/null | head -n1)
[[ -n $src ]] || { echo "no test kernel tree: run vfio-exerciser vm --kernel test:7.3 first" >&2; exit 2; }
start=$SECONDS
rm -rf "$work"
mkdir -p "$work"
tree=$work/linux
cp -a "$src" "$tree"
cd "$tree"
git init -q
# Debian's linux-source ignores everything at the top level (its packaging repository's rule).
sed -i '/^# Debian packaging/,$d' .gitignore
git config user.email demo@vfio-exerciser.invalid
git config user.name "bisect demo"
git add -A >/dev/null
git commit -qm "base: linux-source $(cat include/config/kernel.release)"
good=$(git rev-parse HEAD)
note() { echo "$1" >>Documentation/driver-api/vfio.rst; git commit -qam "$2"; }
note "" "Documentation: vfio: a blank line"
note ".. demo: one" "Documentation: vfio: a comment"
python3 - drivers/vfio/vfio_iommu_type1.c <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
old = "\tif (ret > 0) {\n\t\t*pfn = page_to_pfn(batch->pages[0]);"
assert old in s, "vaddr_get_pfns changed shape"
s = s.replace(old, "\tif (ret > 0) {\n\t\tif (ret >= 2)\n\t\t\tswap(batch->pages[0], batch->pages[1]);\n\t\t*pfn = page_to_pfn(batch->pages[0]);", 1)
open(p, "w").write(s)
PY
git commit -qam "vfio/type1: hand the pinned pages over in a new order (the injected regression)"
injected=$(git rev-parse HEAD)
note ".. demo: two" "Documentation: vfio: another comment"
note ".. demo: three" "Documentation: vfio: a third comment"
bad=$(git rev-parse HEAD)
echo "repository ready in $((SECONDS - start)) s; injected: $(git log -1 --format='%h %s' "$injected")"
"$here/kernel-bisect.sh" "$tree" "$good" "$bad" --backend type1v2 --kind anon-private --no-events | tee "$work/bisect.log"
found=$(sed -n 's/^first bad commit: \([0-9a-f]*\) .*/\1/p' "$work/bisect.log")
if [[ $(git rev-parse "$found") == "$injected" ]]; then
    echo "bisect-demo: found the injected commit $found; $((SECONDS - start)) s in all"
else
    echo "bisect-demo: bisect named $found, the injected commit is $(git rev-parse --short "$injected")" >&2
    exit 1
fi
