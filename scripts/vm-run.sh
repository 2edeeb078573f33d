#!/bin/bash
# vm-run.sh --kernel-dir DIR --initrd FILE --console FILE|- --results FILE
#           [--timeout SECONDS] [--accel tcg|kvm] [--mem SIZE] [--edu N]
#           [--append "WORDS"] [--iommu-opts OPTS]
#
# Boots the test VM once with the known-good QEMU command line (see
# README.md): q35 + intel-iommu (interrupt remapping) + N "edu" devices at
# 00:03.0, 00:04.0, ...; ttyS0 -> --console (- = interactive on stdio),
# ttyS1 -> --results. QEMU is killed after --timeout seconds (default 300).
# Prints "qemu_rc=<rc> wall_s=<seconds>" on stdout; exits with QEMU's status
# (124 = timed out).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

usage="usage: vm-run.sh --kernel-dir DIR --initrd FILE --console FILE|- --results FILE [--timeout S] [--accel tcg|kvm] [--mem SIZE] [--edu N] [--append WORDS] [--iommu-opts OPTS]"
kdir="" initrd="" console="" results="" tmo=300 accel=tcg mem=4G edu=3 append="" iommu_opts=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --kernel-dir) kdir=${2:?$usage}; shift 2 ;;
    --initrd) initrd=${2:?$usage}; shift 2 ;;
    --console) console=${2:?$usage}; shift 2 ;;
    --results) results=${2:?$usage}; shift 2 ;;
    --timeout) tmo=${2:?$usage}; shift 2 ;;
    --accel) accel=${2:?$usage}; shift 2 ;;
    --mem) mem=${2:?$usage}; shift 2 ;;
    --edu) edu=${2:?$usage}; shift 2 ;;
    --append) append=${2?$usage}; shift 2 ;;
    --iommu-opts) iommu_opts=${2?$usage}; shift 2 ;;
    -h | --help) echo "$usage"; exit 0 ;;
    *) die "unknown argument '$1' ($usage)" ;;
    esac
done
[[ -n $kdir && -n $initrd && -n $console && -n $results ]] || die "$usage"
[[ -f $kdir/vmlinuz ]] || die "no $kdir/vmlinuz"
[[ -f $initrd ]] || die "no initrd $initrd"
[[ $edu =~ ^[0-9]+$ && $edu -le 20 ]] || die "--edu must be 0..20"
[[ $tmo =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds"

need_pkgs qemu-system-x86_64:qemu-system-x86 timeout:coreutils

case $accel in
tcg) cpu=max,-erms ;; # TCG's "max" has pdpe1gb (1G pages) and x2apic; -erms: see README
kvm) cpu=${VM_KVM_CPU:-host} ;;
*) die "--accel must be tcg or kvm" ;;
esac

# intel_iommu=on: Debian kernels leave the Intel IOMMU off by default.
# panic=-1 + -no-reboot: a guest panic ends QEMU at once instead of hanging.
# 1G pages need a free, 1G-aligned 1 GiB block at boot: with -m 4G the RAM
# above 4G is [4G,6G) and early allocations sit at its top (-m 3G fails).
cmdline="console=ttyS0 intel_iommu=on panic=-1 hugepagesz=1G hugepages=1 hugepagesz=2M hugepages=64${append:+ $append}"
iommu=intel-iommu,intremap=on${iommu_opts:+,$iommu_opts}
qemu=(qemu-system-x86_64 -accel "$accel" -M "q35,kernel-irqchip=split" -cpu "$cpu" -m "$mem" -smp 1
    -nodefaults -nographic -no-reboot
    -device "$iommu")
for ((i = 0; i < edu; i++)); do
    qemu+=(-device "edu,addr=$(printf '%02x' $((3 + i))).0,dma_mask=0xffffffffffff")
done
qemu+=(-kernel "$kdir/vmlinuz" -initrd "$initrd" -append "$cmdline")
if [[ $console == - ]]; then
    qemu+=(-serial mon:stdio)
else
    : >"$console"
    qemu+=(-serial "file:$console")
fi
: >"$results"
qemu+=(-serial "file:$results")

echo "+ ${qemu[*]}" >&2
t0=$(date +%s.%N)
set +e
if [[ $console == - ]]; then
    timeout --foreground --kill-after=5 "$tmo" "${qemu[@]}"
else
    timeout --kill-after=5 "$tmo" "${qemu[@]}" </dev/null
fi
rc=$?
set -e
wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
[[ $rc -eq 124 || $rc -eq 137 ]] && log "QEMU killed after ${tmo}s timeout"
echo "qemu_rc=$rc wall_s=$wall"
exit "$rc"
