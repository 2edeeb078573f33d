#!/bin/sh
# /init of the test VM (busybox sh, PID 1).
#
# Sets up proc/sys/dev/debugfs/tmpfs/hugetlbfs, loads vfio and binds every
# QEMU "edu" device (1234:11e8) to vfio-pci, creates an ext2 fs on a brd ram
# disk at /mnt/fs, then runs /bin/vfio-exerciser with the arguments listed one
# per line in /etc/exerciser/args (console gets its stdout/stderr) and powers
# off. Without that file it starts a debug shell on the console.
#
# Console lines meant for the host:
#   VFIO-EXERCISER-SETUP-ERROR <step> <message>   one per setup problem
#   VFIO-EXERCISER-DEVICE <bdf> group=<n> dev=<path>|none
#   VFIO-EXERCISER-TESTDEV /dev/vfio_exerciser_test   } only when the initramfs
#   VFIO-EXERCISER-MDEV <uuid> group=<n> dev=<path>    } has the test module
#   VFIO-EXERCISER-MTTY <uuid> group=<n> dev=<path>    } (+ mtty if the kernel has it)
#   VFIO-EXERCISER-FSDAX /mnt/dax, VFIO-EXERCISER-DEVDAX /dev/dax1.0   (memmap=nn!ss pmem)
#   VFIO-EXERCISER-SETUP ok | VFIO-EXERCISER-SETUP failed <step>...
#   VFIO-EXERCISER-EXIT <rc>                      also written to /dev/ttyS1
# Kernel command line knobs (optional):
#   exerciser.timeout=SECONDS   SIGTERM the payload after that long (rc 143)
#   exerciser.shell=1           debug shell instead of the payload
#
# PID 1 must never exit (the kernel panics) and nothing here may block for
# long: every step that can fail only reports and the script goes on.

PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH HOME=/root TERM=vt100
# The console is a tty, but the host shows progress: the tool's own would garble the log.
export VFIO_EXERCISER_NO_PROGRESS=1

FAILED=""
err() { # step message...
    s=$1
    shift
    FAILED="$FAILED $s"
    echo "VFIO-EXERCISER-SETUP-ERROR $s $*"
}
# try STEP CMD...: run with a time limit; report output on failure.
try() {
    s=$1
    shift
    if ! out=$(timeout 60 "$@" 2>&1); then
        err "$s" "$(echo "$out" | tr '\n' ' ')"
        return 1
    fi
    return 0
}

mkdir -p /proc /sys /dev /tmp /run /mnt/fs /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mount -t tmpfs -o mode=0755 tmpfs /dev
# Re-open the console from the new /dev (the initramfs node is now hidden).
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
echo "guest-init: kernel $(uname -r)"

mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
try mount-debugfs mount -t debugfs debugfs /sys/kernel/debug
try mount-tmp mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm 2>/dev/null

cmdline=$(cat /proc/cmdline)
karg() { # value of exerciser.NAME= on the kernel command line
    for w in $cmdline; do
        case $w in "exerciser.$1="*) echo "${w#*=}"; return 0 ;; esac
    done
    return 1
}

# --- hugetlbfs -----------------------------------------------------------------
mkdir -p /dev/hugepages
try mount-hugetlbfs-2M mount -t hugetlbfs -o pagesize=2M hugetlbfs /dev/hugepages
if [ -d /sys/kernel/mm/hugepages/hugepages-1048576kB ]; then
    mkdir -p /dev/hugepages1G
    try mount-hugetlbfs-1G mount -t hugetlbfs -o pagesize=1G hugetlbfs /dev/hugepages1G
fi
for h in /sys/kernel/mm/hugepages/hugepages-*; do
    [ -d "$h" ] && echo "guest-init: ${h##*/} nr=$(cat "$h/nr_hugepages") free=$(cat "$h/free_hugepages")"
done

# --- modules -------------------------------------------------------------------
# load MOD [PARAMS]: modprobe unless already loaded/built in.
load() {
    m=$1
    [ -d "/sys/module/$m" ] && return 0
    try "modprobe-$m" modprobe "$@"
}

load vfio
load vfio_iommu_type1
load vfio_pci

# --- bind edu devices and NVMe controllers to vfio-pci -----------------------------
# The guest has no NVMe driver loaded: the harness's controller (a pattern image) is the data
# check's engine, never a disk.
n_edu=0
for d in /sys/bus/pci/devices/*; do
    [ -f "$d/vendor" ] || continue
    case "$(cat "$d/vendor"):$(cat "$d/device")" in
    0x1234:0x11e8) n_edu=$((n_edu + 1)) ;;
    *) [ "$(cat "$d/class")" = 0x010802 ] || continue ;;
    esac
    bdf=${d##*/}
    echo vfio-pci >"$d/driver_override" || err "bind-$bdf" "cannot write driver_override"
    if [ -e "$d/driver" ]; then
        cur=$(basename "$(readlink "$d/driver")")
        [ "$cur" = vfio-pci ] || echo "$bdf" >"$d/driver/unbind" || err "bind-$bdf" "cannot unbind from $cur"
    fi
    [ -e "$d/driver" ] || echo "$bdf" >/sys/bus/pci/drivers_probe 2>/dev/null
    drv=none
    [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
    [ "$drv" = vfio-pci ] || err "bind-$bdf" "driver is $drv, not vfio-pci"
    if [ -e "$d/iommu_group" ]; then
        g=$(basename "$(readlink "$d/iommu_group")")
        dev=/dev/vfio/$g
        i=0
        while [ ! -c "$dev" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        [ -c "$dev" ] || { err "vfio-$bdf" "no $dev"; dev=none; }
    else
        g=none dev=none
        err "iommu-$bdf" "no iommu_group (IOMMU off? need intel_iommu=on)"
    fi
    echo "VFIO-EXERCISER-DEVICE $bdf group=$g dev=$dev"
done
[ $n_edu -gt 0 ] || err edu "no edu device (1234:11e8) found"

# --- test module (kmod/, build-initramfs.sh --extra-module) -------------------------
# mdev_create PARENT TYPE NAME: one mdev of TYPE under PARENT, reported as
# "VFIO-EXERCISER-<NAME> <uuid> group=<n> dev=/dev/vfio/<n>".
mdev_create() {
    t=/sys/class/mdev_bus/$1/mdev_supported_types/$2
    if [ ! -d "$t" ]; then
        err "mdev-$3" "no $t"
        return 1
    fi
    u=$(cat /proc/sys/kernel/random/uuid)
    try "mdev-$3" sh -c "echo $u >$t/create" || return 1
    g=none dev=none
    if [ -e "/sys/bus/mdev/devices/$u/iommu_group" ]; then
        g=$(basename "$(readlink "/sys/bus/mdev/devices/$u/iommu_group")")
        dev=/dev/vfio/$g
        i=0
        while [ ! -c "$dev" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        [ -c "$dev" ] || { err "mdev-$3" "no $dev"; dev=none; }
    else
        err "mdev-$3" "$u has no iommu_group"
    fi
    echo "VFIO-EXERCISER-$3 $u group=$g dev=$dev"
}
if [ -f "/lib/modules/$(uname -r)/extra/vfio_exerciser_test.ko" ]; then
    modprobe -q vfio_mdev 2>/dev/null # a separate module before 5.16; folded into mdev since
    load mdev
    if load vfio_exerciser_test; then
        i=0
        while [ ! -c /dev/vfio_exerciser_test ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        if [ -c /dev/vfio_exerciser_test ]; then
            echo "VFIO-EXERCISER-TESTDEV /dev/vfio_exerciser_test"
        else
            err testdev "no /dev/vfio_exerciser_test after loading vfio_exerciser_test"
        fi
        mdev_create vfio_exerciser_test vfio_exerciser_test-pin MDEV
    fi
    # The mtty sample (test kernels with CONFIG_SAMPLE_VFIO_MDEV_MTTY).
    [ -d /sys/class/mdev_bus/mtty ] || modprobe -q mtty 2>/dev/null
    [ -d /sys/class/mdev_bus/mtty ] && mdev_create mtty mtty-1 MTTY
fi

# --- ext2 on a ram disk at /mnt/fs ----------------------------------------------
# rd_size is in KiB: one 64 MiB disk.
load brd rd_nr=1 rd_size=65536
i=0
while [ ! -b /dev/ram0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/ram0 ]; then
    # ext2 is often provided by the ext4 module (CONFIG_EXT4_USE_FOR_EXT2).
    if ! grep -qw ext2 /proc/filesystems; then
        modprobe ext2 >/dev/null 2>&1 || load ext4
    fi
    try mkfs-ram0 mke2fs /dev/ram0 && try mount-fs mount -t ext2 /dev/ram0 /mnt/fs
else
    err ram0 "no /dev/ram0 after loading brd"
fi
load loop

# --- persistent memory (memmap=nn!ss on the command line) ---------------------------
# Two legacy pmem regions: region0 becomes fsdax (pfn device, struct pages in RAM) with
# ext4 -o dax at /mnt/dax; region1 becomes device-dax /dev/dax1.0. Through sysfs, no ndctl:
# a seed device gets a uuid, mode, alignment and namespace, then its driver binds it.
nd=/sys/bus/nd/devices
case " $cmdline " in *" memmap="*"!"*)
    load nd_e820
    load nd_pmem
    load dax_pmem
    [ -d /sys/module/device_dax ] || modprobe -q device_dax 2>/dev/null
    i=0
    while { [ ! -e $nd/namespace0.0 ] || [ ! -e $nd/namespace1.0 ]; } && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    # nd_seed STEP SEED NAMESPACE DRIVER: claim NAMESPACE for the pfn/dax SEED device (sysfs
    # writes only: nothing here can block).
    nd_seed() {
        if [ ! -e "$nd/$3" ]; then
            err "$1" "no pmem $3"
            return 1
        fi
        [ -e "$nd/$3/driver" ] && echo "$3" >"$nd/$3/driver/unbind"
        if ! out=$({ cat /proc/sys/kernel/random/uuid >"$nd/$2/uuid" && echo ram >"$nd/$2/mode" &&
            echo 2097152 >"$nd/$2/align" && echo "$3" >"$nd/$2/namespace" && echo "$2" >"/sys/bus/nd/drivers/$4/bind"; } 2>&1); then
            err "$1" "$2 on $3: $(echo "$out" | tr '\n' ' ')"
            return 1
        fi
    }
    if nd_seed fsdax pfn0.0 namespace0.0 nd_pmem; then
        mkdir -p /mnt/dax
        # DAX needs 4 KiB blocks (busybox mke2fs defaults to 1 KiB); ext4 mounts the ext2 layout.
        try fsdax-mkfs mke2fs -b 4096 /dev/pmem0 && try fsdax-mount mount -t ext4 -o dax /dev/pmem0 /mnt/dax &&
            echo "VFIO-EXERCISER-FSDAX /mnt/dax"
    fi
    if nd_seed devdax dax1.0 namespace1.0 dax_pmem; then
        i=0
        while [ ! -c /dev/dax1.0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        if [ -c /dev/dax1.0 ]; then echo "VFIO-EXERCISER-DEVDAX /dev/dax1.0"; else err devdax "no /dev/dax1.0"; fi
    fi
    ;;
esac

if [ -z "$FAILED" ]; then
    echo "VFIO-EXERCISER-SETUP ok"
else
    echo "VFIO-EXERCISER-SETUP failed$FAILED"
fi

# --- payload ------------------------------------------------------------------
shutdown() {
    sync
    # Last close of a tty waits until its output is sent: drain both ports.
    exec 3>&- 0</dev/null 1>/dev/null 2>&1
    sleep 0.3
    poweroff -f
    sleep 5
    echo o >/proc/sysrq-trigger
}

shell() {
    echo "guest-init: starting debug shell (exit to power off)"
    setsid cttyhack sh -l
    shutdown
}

if [ ! -f /etc/exerciser/args ] || [ "$(karg shell)" = 1 ]; then
    shell
fi

# Results port: raw so bytes are not rewritten (no \n -> \r\n); held open by
# init so the setting survives the payload's own open/close.
if [ -c /dev/ttyS1 ]; then
    exec 3<>/dev/ttyS1
    stty -F /dev/ttyS1 raw -echo 2>/dev/null || err stty-ttyS1 "cannot set raw mode"
else
    exec 3>/dev/null
    err ttyS1 "no /dev/ttyS1"
fi

# One argument per line (lines may contain spaces).
set --
while IFS= read -r line || [ -n "$line" ]; do
    set -- "$@" "$line"
done </etc/exerciser/args

if [ ! -x /bin/vfio-exerciser ]; then
    echo "guest-init: /bin/vfio-exerciser missing"
    rc=127
else
    echo "guest-init: running /bin/vfio-exerciser $*"
    cd /tmp || true
    if t=$(karg timeout); then
        timeout "$t" /bin/vfio-exerciser "$@" </dev/null 3>&-
    else
        /bin/vfio-exerciser "$@" </dev/null 3>&-
    fi
    rc=$?
fi

echo "VFIO-EXERCISER-EXIT $rc" >&3
echo "VFIO-EXERCISER-EXIT $rc"
shutdown
