#!/bin/bash
# lava-run.sh [--kernel debian:6.1] [--tarball FILE] [--out DIR]
#
# Runs the LAVA job (lava/) with Debian 12's lava-run on this machine, no LAVA server: the
# lava-dispatcher, lava-common, lava-dispatcher-host and lava-server (for its qemu device type)
# packages and the python3 modules lava-run imports are downloaded and unpacked into
# CACHE/lava (apt-get download + dpkg -x: nothing is installed, no service is started or
# touched); libguestfs, which only image deploys use, is replaced by a stub module. The ramdisk
# holds the release tarball's binary (scripts/release.sh unless --tarball), the configs and the
# test module. Checks: lava-run finished the job, every LAVA result passed, the KTAP plan was
# complete, and there are as many cases as the tool planned (at least 100).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
root=$(cd "$here/.." && pwd)
kernel=debian:6.1 tarball= out=$root/out/lava
while [[ $# -gt 0 ]]; do
    case $1 in
    --kernel) kernel=${2:?}; shift 2 ;;
    --tarball) tarball=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    *) die "usage: lava-run.sh [--kernel SPEC] [--tarball FILE] [--out DIR]" ;;
    esac
done
need_pkgs apt-get:apt dpkg:dpkg cpio:cpio gzip:gzip qemu-system-x86_64:qemu-system-x86 /usr/bin/python3:python3 jq:jq
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vfio-exerciser
py=/usr/bin/python3
t0=$SECONDS

# --- LAVA, unpacked privately -----------------------------------------------------------
lava=$cache/lava
pkgs=(lava-dispatcher lava-dispatcher-host lava-common lava-server python3-jinja2 python3-markupsafe python3-pexpect
    python3-ptyprocess python3-requests python3-urllib3 python3-idna python3-certifi python3-chardet
    python3-charset-normalizer python3-configobj python3-six python3-magic python3-netifaces python3-pyudev
    python3-setproctitle python3-tz python3-voluptuous python3-yaml)
key=$(printf '%s\n' "${pkgs[@]}" | sha256sum | cut -c1-12)
if [[ ! -f $lava/$key/.complete ]]; then
    log "unpacking LAVA and its python modules into $lava/$key"
    rm -rf "$lava/$key"
    mkdir -p "$lava/$key/debs" "$lava/$key/root/stub"
    (cd "$lava/$key/debs" && apt-get -q download "${pkgs[@]}" >&2) || die "apt-get download failed"
    for d in "$lava/$key"/debs/*.deb; do dpkg -x "$d" "$lava/$key/root"; done
    cat >"$lava/$key/root/stub/guestfs.py" <<'PY'
# Stand-in for python3-guestfs (libguestfs): lava_dispatcher imports it at start; only image deploys use it.
class GuestFS:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("libguestfs is not installed (scripts/lava-run.sh runs tmpfs deploys only)")
PY
    touch "$lava/$key/.complete"
fi
lroot=$lava/$key/root
export PYTHONPATH=$lroot/usr/lib/python3/dist-packages:$lroot/stub
export PYTHONDONTWRITEBYTECODE=1
t_lava=$SECONDS

# --- the release and the ramdisk ------------------------------------------------------------
rm -rf "$out"
mkdir -p "$out/rel" "$out/job"
[[ -n $tarball ]] || tarball=$(bash "$here/release.sh" "$out/rel" | tail -n 1)
tar -xzf "$tarball" -C "$out/rel"
rel=$(echo "$out"/rel/vfio-exerciser-*/)
rel=${rel%/}
kdir=$(bash "$rel/scripts/fetch-kernel.sh" "$kernel" "$cache/kernels" | tail -n 1)
ko=$(bash "$rel/scripts/build-test-module.sh" "$kdir" "$cache/kmod" 2>"$out/kmod.log" | tail -n 1) || die "the test module did not build ($out/kmod.log)"
bash "$rel/scripts/build-initramfs.sh" --kernel-dir "$kdir" --out "$out/job/ramdisk.cpio" --binary "$rel/bin/vfio-exerciser" \
    --file "$rel/configs/matrix.yaml:/etc/vfio-exerciser/matrix.yaml" \
    --file "$rel/configs/expectations.yaml:/etc/vfio-exerciser/expectations.yaml" --extra-module "$ko" 2>"$out/initramfs.log" ||
    die "build-initramfs.sh failed ($out/initramfs.log)"
gzip -1 "$out/job/ramdisk.cpio"
cp "$kdir/vmlinuz" "$out/job/vmlinuz"

# --- device and job, rendered as lava-server would --------------------------------------
"$py" - "$root/lava" "$lroot/usr/share/lava-server/device-types" "$out" "$kernel" <<'PY'
import json, sys, jinja2, yaml
lava_dir, types, out, kernel = sys.argv[1:]
env = jinja2.Environment(loader=jinja2.FileSystemLoader([lava_dir, types]), autoescape=False, trim_blocks=True)
open(out + "/device.yaml", "w").write(env.get_template("vfio-vm.jinja2").render())
testdef = yaml.safe_load(open(lava_dir + "/vfio-exerciser.yaml"))
job = env.get_template("job.yaml.jinja2").render(
    kernel_name=kernel, kernel_url="file://" + out + "/job/vmlinuz", ramdisk_url="file://" + out + "/job/ramdisk.cpio.gz",
    test_repository="", inline_definition=json.dumps(testdef))
yaml.safe_load(job)  # a template mistake stops here, not in lava-run
open(out + "/job.yaml", "w").write(job)
PY

# lava-run keeps its downloads in /var/lib/lava/dispatcher/tmp/<job> (a constant); it removes
# that directory, we remove the rest when we made it.
[[ -e /var/lib/lava ]] || trap 'rm -rf /var/lib/lava' EXIT

# --- lava-run ------------------------------------------------------------------------------
log "lava-run (LAVA set up in $((t_lava - t0)) s)"
t1=$SECONDS
rc=0
"$py" "$lroot/usr/bin/lava-run" --job-id 1 --output-dir "$out/run" --device "$out/device.yaml" "$out/job.yaml" \
    >"$out/lava-run.log" 2>&1 || rc=$?
log "lava-run exited $rc after $((SECONDS - t1)) s"

# --- what LAVA recorded ------------------------------------------------------------------------
check=0
"$py" "$root/lava/check-results.py" "$out/lava-run.log" || check=$?
# The check must be able to fail: the same log with one case turned to a failure.
sed '0,/"definition": "0_vfio-exerciser", \(.*\)"result": "pass"/s//"definition": "0_vfio-exerciser", \1"result": "fail"/' \
    "$out/lava-run.log" >"$out/lava-run.doctored.log"
if "$py" "$root/lava/check-results.py" "$out/lava-run.doctored.log" >"$out/check-doctored.txt"; then
    echo "lava-run: FAIL the result check passed a log with a failed case"
    check=1
fi
echo "lava-run: $((SECONDS - t0)) s in all (LAVA set-up $((t_lava - t0)) s, lava-run $((SECONDS - t1)) s); log: $out/lava-run.log"
exit $check
