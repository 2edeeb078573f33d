#!/bin/bash
# kselftest-install.sh SELFTESTS INSTALL_DIR [BINARY]
#
# Adds the vfio-exerciser target to a kselftest install: INSTALL_DIR/vfio-exerciser/ with the
# tool (BINARY, default the release build), configs/, settings and run_vfio_exerciser.sh, and a
# "vfio-exerciser:run_vfio_exerciser.sh" line in kselftest-list.txt. SELFTESTS is the kernel's
# tools/testing/selftests (or an existing install); run_kselftest.sh and kselftest/ are copied from
# it when INSTALL_DIR has none. Then: INSTALL_DIR/run_kselftest.sh -c vfio-exerciser
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
root=$(cd "$here/.." && pwd)
[[ $# -eq 2 || $# -eq 3 ]] || die "usage: kselftest-install.sh SELFTESTS INSTALL_DIR [BINARY]"
src=$1 dst=$2 bin=${3:-$root/.build/release/vfio-exerciser}
[[ -f $src/run_kselftest.sh && -f $src/kselftest/runner.sh ]] || die "$src has no run_kselftest.sh and kselftest/runner.sh"
[[ -x $bin ]] || die "no binary $bin (swift build -c release --static-swift-stdlib)"
need_pkgs strip:binutils

mkdir -p "$dst" || die "cannot create $dst"
if [[ ! -f $dst/run_kselftest.sh ]]; then
    cp "$src/run_kselftest.sh" "$dst/"
    mkdir -p "$dst/kselftest"
    for f in runner.sh ktap_helpers.sh prefix.pl module.sh; do
        [[ -f $src/kselftest/$f ]] && cp "$src/kselftest/$f" "$dst/kselftest/"
    done
fi
t=$dst/vfio-exerciser
rm -rf "$t"
mkdir -p "$t/configs"
strip -o "$t/vfio-exerciser" "$bin"
cp "$root/configs/matrix.yaml" "$root/configs/expectations.yaml" "$t/configs/"
cp "$root/kselftest/run_vfio_exerciser.sh" "$root/kselftest/settings" "$t/"
line=vfio-exerciser:run_vfio_exerciser.sh
grep -qxF "$line" "$dst/kselftest-list.txt" 2>/dev/null || echo "$line" >>"$dst/kselftest-list.txt"
echo "$dst"
