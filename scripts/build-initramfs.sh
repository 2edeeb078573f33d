#!/bin/bash
# build-initramfs.sh --kernel-dir DIR --out FILE [--binary PATH]... [--file SRC:DEST]...
#                    [--module NAME]... [--extra-module FILE.ko]... [--init PATH]
#
# Writes an uncompressed newc cpio initramfs with: static busybox + applet
# links, each --binary in /bin with its shared libraries (+ loader, at their
# host paths, plus an ld.so.cache), each --file at DEST, the kernel modules
# for vfio-pci / vfio_iommu_type1 / brd / ext2(ext4) / loop (+ --module extras)
# with their dependencies, decompressed and re-indexed with depmod so
# busybox modprobe works, and /init = guest-init.sh (or --init PATH).
# DIR is a directory printed by fetch-kernel.sh.
# --extra-module FILE.ko: an out-of-tree module built for this kernel (e.g. by
# build-test-module.sh); it goes to /lib/modules/<kver>/extra/, the modules it
# depends on (modinfo depends) come along, and it is indexed with the rest so
# `modprobe NAME` works. With any extra module, the mtty sample module is
# added too if the kernel has it (guest-init.sh then creates an mtty mdev).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

usage="usage: build-initramfs.sh --kernel-dir DIR --out FILE [--binary PATH]... [--file SRC:DEST]... [--module NAME]... [--extra-module FILE.ko]... [--init PATH]"
kdir="" out="" init=$here/guest-init.sh
binaries=() files=() extra_mods=() extra_kos=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --kernel-dir) kdir=${2:?$usage}; shift 2 ;;
    --out) out=${2:?$usage}; shift 2 ;;
    --binary) binaries+=("${2:?$usage}"); shift 2 ;;
    --file) files+=("${2:?$usage}"); shift 2 ;;
    --module) extra_mods+=("${2:?$usage}"); shift 2 ;;
    --extra-module) extra_kos+=("${2:?$usage}"); shift 2 ;;
    --init) init=${2:?$usage}; shift 2 ;;
    -h | --help) echo "$usage"; exit 0 ;;
    *) die "unknown argument '$1' ($usage)" ;;
    esac
done
[[ -n $kdir && -n $out ]] || die "$usage"
[[ -f $kdir/kver && -d $kdir/modules ]] || die "$kdir is not a fetch-kernel.sh directory (no kver/modules)"
[[ -f $init ]] || die "init script $init not found"
kdir=$(cd "$kdir" && pwd)
kver=$(cat "$kdir/kver")
kmods=$kdir/modules/lib/modules/$kver
[[ -d $kmods ]] || die "no $kmods"

need_pkgs cpio:cpio depmod:kmod modprobe:kmod ldd:libc-bin ldconfig:libc-bin

# Static busybox (the dynamic one from package "busybox" would need libs).
busybox=""
for b in /bin/busybox /usr/bin/busybox; do
    if [[ -x $b ]] && ! ldd "$b" >/dev/null 2>&1; then busybox=$b; break; fi
done
if [[ -z $busybox ]]; then
    install_pkgs busybox-static
    busybox=/bin/busybox
    ldd "$busybox" >/dev/null 2>&1 && die "$busybox is not statically linked"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc,mnt/fs,lib/modules}
# Kernel opens /dev/console before /init runs; without it init has no stdio.
mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || log "warning: cannot mknod dev/console"
mknod -m 666 "$stage/dev/null" c 1 3 2>/dev/null || true

# --- busybox -----------------------------------------------------------------
cp "$busybox" "$stage/bin/busybox"
while IFS= read -r applet; do
    [[ -z $applet || -e $stage/$applet || -L $stage/$applet ]] && continue
    mkdir -p "$stage/$(dirname "$applet")"
    ln -s /bin/busybox "$stage/$applet"
done < <("$busybox" --list-full)

# --- binaries and their shared libraries ------------------------------------
declare -A libdirs=()
copy_lib() { # absolute host path -> same path in the image, symlinks resolved
    local p=$1
    [[ -e $stage$p ]] && return 0
    mkdir -p "$stage$(dirname "$p")"
    cp -L "$p" "$stage$p"
    libdirs[$(dirname "$p")]=1
}
for b in "${binaries[@]}"; do
    [[ -f $b ]] || die "--binary $b: no such file"
    dest=$stage/bin/$(basename "$b")
    rm -f "$dest"
    cp -L "$b" "$dest"
    chmod 755 "$dest"
    [[ $(head -c4 "$b" | od -An -c | tr -d ' ') == 177ELF ]] || continue # script
    # Symbols are a quarter of a static Swift binary; the guest pays for every byte at boot.
    command -v strip >/dev/null && strip "$dest" 2>/dev/null
    if ! lddout=$(ldd "$b" 2>&1); then
        grep -q 'not a dynamic executable' <<<"$lddout" && continue # static
        die "ldd $b failed: $lddout"
    fi
    grep -q 'not found' <<<"$lddout" && die "ldd $b: missing libraries: $(grep 'not found' <<<"$lddout" | tr -s ' \t\n' ' ')"
    # "libx.so => /path (0x..)", "/lib64/ld-linux-x86-64.so.2 (0x..)", vdso lines
    while read -r a arrow p _; do
        if [[ $arrow == "=>" && $p == /* ]]; then
            copy_lib "$p"
        elif [[ $a == /* ]]; then
            copy_lib "$a" # the loader (PT_INTERP path)
        fi
    done <<<"$lddout"
done
if [[ ${#libdirs[@]} -gt 0 ]]; then
    # Cache lets the loader find libs even if the binary's RUNPATH is
    # relative ($ORIGIN/...) or points at host-only directories.
    printf '%s\n' "${!libdirs[@]}" | sort >"$stage/etc/ld.so.conf"
    ldconfig -r "$stage" 2>/dev/null || log "warning: ldconfig -r failed; relying on RUNPATH/default dirs"
fi

# --- extra files ---------------------------------------------------------------
for f in "${files[@]}"; do
    [[ $f == *:* ]] || die "--file $f: expected SRC:DEST"
    src=${f%:*} dst=${f##*:}
    [[ $dst == /* ]] || die "--file $f: DEST must be absolute"
    [[ -e $src ]] || die "--file $f: no such file $src"
    mkdir -p "$stage$(dirname "$dst")"
    rm -rf "$stage$dst"
    cp -rL "$src" "$stage$dst"
done

# --- kernel modules -------------------------------------------------------------
cfg=$kdir/config
isbuiltin() { grep -q "^CONFIG_$1=y" "$cfg" 2>/dev/null; }
mods=(vfio vfio_iommu_type1 vfio_pci brd loop)
# ext2: its own module, built in, or (Debian) served by ext4.
if grep -q '^CONFIG_EXT2_FS=m' "$cfg"; then
    mods+=(ext2)
elif ! isbuiltin EXT2_FS && ! isbuiltin EXT4_FS; then
    mods+=(ext4)
fi
# Legacy pmem (memmap=nn!ss) with fsdax and device-dax, where they are modules.
if grep -q '^CONFIG_X86_PMEM_LEGACY=m' "$cfg"; then
    mods+=(nd_e820 nd_pmem)
    grep -q '^CONFIG_DEV_DAX_PMEM=m' "$cfg" && mods+=(dax_pmem device_dax)
fi
mods+=("${extra_mods[@]}")

# Out-of-tree modules: check they were built for this kernel, bring their
# dependencies (and mtty, when the kernel has it) into the closure below.
for ko in "${extra_kos[@]}"; do
    [[ -f $ko && $ko == *.ko ]] || die "--extra-module $ko: no such .ko file"
    vm=$(modinfo -F vermagic "$ko" 2>/dev/null) || die "--extra-module $ko: modinfo failed"
    [[ ${vm%% *} == "$kver" ]] || die "--extra-module $ko is built for '${vm%% *}', not $kver"
    IFS=, read -r -a kodeps <<<"$(modinfo -F depends "$ko")"
    for d in "${kodeps[@]}"; do
        [[ -n $d ]] && mods+=("$d")
    done
done
if [[ ${#extra_kos[@]} -gt 0 ]] && modprobe -d "$kdir/modules" -S "$kver" --show-depends mtty >/dev/null 2>&1; then
    mods+=(mtty)
fi

declare -A modfiles=()
for m in "${mods[@]}"; do
    if ! deps=$(modprobe -d "$kdir/modules" -S "$kver" --show-depends "$m" 2>&1); then
        die "module $m not found for $kver: $deps"
    fi
    while read -r kind path _; do
        [[ $kind == insmod ]] && modfiles[$path]=1
    done <<<"$deps"
done
mdst=$stage/lib/modules/$kver
mkdir -p "$mdst"
for path in "${!modfiles[@]}"; do
    rel=${path#"$kmods"/}
    rel=${rel#/}
    case $rel in
    *.ko.xz) need_pkgs xz:xz-utils; t=$mdst/${rel%.xz}; mkdir -p "$(dirname "$t")"; xz -dc "$path" >"$t" ;;
    *.ko.zst) need_pkgs zstd:zstd; t=$mdst/${rel%.zst}; mkdir -p "$(dirname "$t")"; zstd -qdc "$path" >"$t" ;;
    *.ko.gz) t=$mdst/${rel%.gz}; mkdir -p "$(dirname "$t")"; gzip -dc "$path" >"$t" ;;
    *.ko) t=$mdst/$rel; mkdir -p "$(dirname "$t")"; cp "$path" "$t" ;;
    *) die "unexpected module file $path" ;;
    esac
done
for ko in "${extra_kos[@]}"; do
    mkdir -p "$mdst/extra"
    cp "$ko" "$mdst/extra/$(basename "$ko")"
done
# Built-in lists let modprobe treat built-in modules as present.
for f in modules.builtin modules.builtin.modinfo modules.order; do
    [[ -f $kmods/$f ]] && sed -e 's/\.ko\.\(xz\|zst\|gz\)$/.ko/' "$kmods/$f" >"$mdst/$f"
done
depmod -b "$stage" "$kver" || die "depmod on the initramfs modules failed"

# --- init and archive ------------------------------------------------------------
cp "$init" "$stage/init"
chmod 755 "$stage/init"
mkdir -p "$(dirname "$out")"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$out.tmp" \
    || die "cpio failed"
mv "$out.tmp" "$out"
log "wrote $out ($(du -h "$out" | cut -f1), kernel $kver, ${#modfiles[@]} modules${extra_kos[*]:+ + ${#extra_kos[@]} extra})"
