#!/bin/bash
# vm-smoke.sh SPEC
#
# Proves the VM chain for one kernel: fetch-kernel.sh SPEC, build an
# initramfs whose /bin/vfio-exerciser is a shell stand-in that reports
# /dev/vfio, the cmdline, uname, hugepages and /mnt/fs to its --output
# file (the second serial port), boot it under QEMU/TCG and check the
# result. Prints the QEMU wall time. Exit 0 only if every check passes.
#
# Environment:
#   CACHE_DIR   download cache (default: <repo>/cache)
#   VM_ACCEL    tcg (default) or kvm
#   VM_TIMEOUT  seconds before QEMU is killed (default 300; 60 for kvm)
#   VM_OUT      directory for initramfs/console.log/results.txt
#               (default: $CACHE_DIR/vm-smoke/<spec>)
#   VM_MEM      guest RAM (default 4G)
#   VM_EXTRA_APPEND  extra kernel command line words
#   VM_IOMMU_OPTS    extra intel-iommu options (e.g. caching-mode=on)
#   VM_DMA_TEST      0 to skip the compiled edu DMA check
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

[[ $# -eq 1 ]] || die "usage: vm-smoke.sh SPEC (e.g. debian:6.1)"
spec=$1
cache=${CACHE_DIR:-$here/../cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
accel=${VM_ACCEL:-tcg}
case $accel in
tcg) tmo=${VM_TIMEOUT:-300} ;;
kvm) tmo=${VM_TIMEOUT:-60} ;;
*) die "VM_ACCEL must be tcg or kvm" ;;
esac
key=$(printf '%s' "$spec" | tr -c 'A-Za-z0-9.+_-' '_')
out=${VM_OUT:-$cache/vm-smoke/$key-$accel}
mkdir -p "$out"
out=$(cd "$out" && pwd)

need_pkgs qemu-system-x86_64:qemu-system-x86 timeout:coreutils

kdir=$("$here/fetch-kernel.sh" "$spec" "$cache/kernels" | tail -n1)
[[ -f $kdir/vmlinuz ]] || die "fetch-kernel.sh gave no kernel for $spec"

# Stand-in payload: writes its report to the file after --output.
cat >"$out/vfio-exerciser" <<'EOF'
#!/bin/sh
dest=/dev/stdout
n=0
for a in "$@"; do
    n=$((n + 1))
    echo "arg$n=[$a]"
done >/tmp/args.txt
while [ $# -gt 0 ]; do
    case $1 in --output) dest=$2; shift 2 ;; *) shift ;; esac
done
{
    echo "== args"; cat /tmp/args.txt
    echo "== ls -l /dev/vfio"; ls -l /dev/vfio
    echo "== cmdline"; cat /proc/cmdline
    echo "== uname -r"; uname -r
    echo "== hugepages"; grep -i huge /proc/meminfo
    for h in /sys/kernel/mm/hugepages/hugepages-*; do
        echo "${h##*/} nr_hugepages=$(cat "$h/nr_hugepages")"
    done
    echo "== mounts"; mount | grep -E '/mnt/fs|hugetlbfs|debugfs'
    echo "== devices"
    for d in /sys/bus/pci/devices/*; do
        echo "${d##*/} $(cat "$d/vendor"):$(cat "$d/device") group=$(basename "$(readlink "$d/iommu_group")")"
    done
    echo "== dma"
    if [ -x /bin/edu-dma-test ]; then
        for d in /sys/bus/pci/devices/*; do
            [ "$(cat "$d/vendor"):$(cat "$d/device")" = 0x1234:0x11e8 ] && /bin/edu-dma-test "${d##*/}" 2>&1
        done
    fi
    echo "== end"
} >"$dest"
echo "stand-in done"
exit 3
EOF
chmod 755 "$out/vfio-exerciser"
printf '%s\n' --output /dev/ttyS1 --label "two words" >"$out/args"

# Real DMA check through vfio + vIOMMU (dynamically linked on purpose, which
# also exercises the ldd/loader copying); skipped without a C compiler.
extra=()
dma=0
if [[ ${VM_DMA_TEST:-1} == 1 ]] && command -v cc >/dev/null 2>&1; then
    cc -O2 -Wall -o "$out/edu-dma-test" "$here/edu-dma-test.c" || die "cannot compile edu-dma-test.c"
    extra=(--binary "$out/edu-dma-test")
    dma=1
fi

t0=$(date +%s.%N)
"$here/build-initramfs.sh" --kernel-dir "$kdir" --out "$out/initramfs.cpio" \
    --binary "$out/vfio-exerciser" --file "$out/args:/etc/exerciser/args" "${extra[@]}"
t1=$(date +%s.%N)

rm -f "$out/console.log" "$out/results.txt"
set +e
runline=$("$here/vm-run.sh" --kernel-dir "$kdir" --initrd "$out/initramfs.cpio" \
    --console "$out/console.log" --results "$out/results.txt" --timeout "$tmo" --accel "$accel" \
    --mem "${VM_MEM:-4G}" --append "${VM_EXTRA_APPEND:-}" --iommu-opts "${VM_IOMMU_OPTS:-}" \
    2>"$out/qemu.log")
qrc=$?
set -e
[[ $runline == qemu_rc=* ]] || die "vm-run.sh failed: $(tail -n 3 "$out/qemu.log")"
wall=${runline##*wall_s=}
build_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
head -n 1 "$out/qemu.log" >&2

# --- checks -------------------------------------------------------------------------
fails=()
check() { # description, then a command that must succeed
    local d=$1
    shift
    if "$@" >/dev/null 2>&1; then echo "  ok   $d"; else echo "  FAIL $d"; fails+=("$d"); fi
}
r=$out/results.txt c=$out/console.log
touch "$r" "$c"
echo "== $spec ($accel): qemu rc=$qrc, wall ${wall}s (initramfs build ${build_s}s), logs in $out"
check "qemu exited by itself (rc 0)" test "$qrc" -eq 0
check "setup ok" grep -q 'VFIO-EXERCISER-SETUP ok' "$c"
check "exit line on ttyS1" grep -q '^VFIO-EXERCISER-EXIT 3$' "$r"
check "exit line on console" grep -q 'VFIO-EXERCISER-EXIT 3' "$c"
check "arg with spaces kept" grep -qF 'arg4=[two words]' "$r"
ngroups=$(awk '/^== ls -l \/dev\/vfio/{f=1;next} /^==/{f=0} f && /^c/ && $NF ~ /^[0-9]+$/' "$r" | wc -l)
check "two /dev/vfio/<group> nodes (found $ngroups)" test "$ngroups" -eq 2
check "1G hugepage reserved" grep -q '^hugepages-1048576kB nr_hugepages=1$' "$r"
check "2M hugepages reserved" grep -q '^hugepages-2048kB nr_hugepages=64$' "$r"
check "/mnt/fs mounted" grep -q ' on /mnt/fs type ext2' "$r"
if [[ $dma == 1 ]]; then
    check "edu DMA round trip through vfio on both devices" test "$(grep -c '^DMA OK' "$r")" -eq 2
    grep -h '^DMA' "$r" | sed 's/^/  /'
else
    echo "  skip edu DMA test (no cc or VM_DMA_TEST=0)"
fi
check "uname is $(cat "$kdir/kver")" grep -qxF "$(cat "$kdir/kver")" "$r"
grep -h 'VFIO-EXERCISER-\(DEVICE\|SETUP\)' "$c" | tr -d '\r' | sed 's/^/  /'
if [[ ${#fails[@]} -gt 0 ]]; then
    tail -n 30 "$c" | tr -d '\r' | sed 's/^/  console| /' >&2
    die "$spec: ${#fails[@]} check(s) failed"
fi
echo "PASS $spec: boot+run ${wall}s"
