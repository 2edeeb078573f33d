#!/bin/bash
# extract-vmlinux.sh KERNEL_DIR
#
# Prints the path of KERNEL_DIR/vmlinux.pvh: the ELF kernel inside KERNEL_DIR/vmlinuz,
# unpacked once and kept, when it carries a PVH entry note (CONFIG_PVH). QEMU boots such an
# ELF directly, which skips the bzImage's self-decompression (~3 s under TCG). Prints nothing
# when the image has no PVH entry or cannot be unpacked: the caller boots the bzImage.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

[[ $# -eq 1 ]] || die "usage: extract-vmlinux.sh KERNEL_DIR"
dir=$1 img=$1/vmlinuz out=$1/vmlinux.pvh
[[ -s $out ]] && { echo "$out"; exit 0; }
[[ -r $img ]] || exit 0
need_pkgs readelf:binutils xz:xz-utils zstd:zstd gzip:gzip

# An ELF with XEN_ELFNOTE_PHYS32_ENTRY (type 0x12), the note QEMU's PVH loader looks for.
pvh() { readelf -n "$1" 2>/dev/null | grep -q "Xen.*(0x00000012)"; }

tmp=$(mktemp "$dir/.vmlinux.XXXXXX")
trap 'rm -f "$tmp"' EXIT
try() { # MAGIC(grep -P) DECOMPRESSOR...: each place the magic occurs, until one unpacks to an ELF
    local magic=$1 pos
    shift
    for pos in $(LC_ALL=C grep -aboP "$magic" "$img" | head -n 4 | cut -d: -f1); do
        tail -c "+$((pos + 1))" "$img" | "$@" >"$tmp" 2>/dev/null || true
        if pvh "$tmp"; then mv "$tmp" "$out"; echo "$out"; exit 0; fi
    done
}
try '\xfd7zXZ\x00' xz -dc
try '\x28\xb5\x2f\xfd' zstd -qdc
try '\x1f\x8b\x08' gzip -dc
exit 0
