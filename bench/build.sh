#!/bin/bash
# build.sh [OUT]: builds bench/map_bench.c as a static binary (default bench/map_bench) for the
# test VM's initramfs. `vfio-exerciser bench --vm` runs this itself; it needs gcc and libc6-dev.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/map_bench}
command -v gcc >/dev/null || { echo "build.sh: gcc not found (apt-get install gcc libc6-dev)" >&2; exit 2; }
gcc -O2 -Wall -Wextra -static -I "$here/../Sources/CVFIO/include" -o "$out.tmp" "$here/map_bench.c"
mv "$out.tmp" "$out"
echo "$out"
