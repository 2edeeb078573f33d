#!/bin/bash
# build-test-kernel.sh VERSION CACHE_DIR
#
# Builds a small test kernel from Debian's linux-source-VERSION package (e.g. 7.3,
# from trixie-backports) with everything the VM needs built in, IOMMUFD included
# (Debian's own kernels lack it): `make tinyconfig` + configs/kernel/test-kernel.fragment
# (merge_config.sh) + `make olddefconfig`, then checks that every option the fragment
# sets survived (Kconfig silently drops options with unmet dependencies) and fails
# with the list of those that did not.
#
# Prints (last stdout line) a directory in fetch-kernel.sh's layout:
#   vmlinuz  config  kver  packages  modules/lib/modules/<kver>/ (depmod done)
# plus
#   build/        the built kernel tree: make -C DIR/build M=/path/to/module modules
#   fragment      the fragment it was built with;  build.log  the full make output
#   build-info    package, fragment sha256, kernel release, gcc, build seconds
# It is CACHE_DIR/kernels/test-<VERSION>-<package version>-<fragment sha256, 12 hex>;
# the fragment's hash and the package version are the cache key. A second call for
# the same VERSION and fragment prints the directory at once (no network);
# FETCH_KERNEL_REFRESH=1 re-resolves linux-source-VERSION (a newer package builds anew).
#
# Env: TEST_KERNEL_FRAGMENT=FILE  another fragment (default configs/kernel/test-kernel.fragment)
#      TEST_KERNEL_JOBS=N         make -j (default nproc)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

[[ $# -eq 2 ]] || die "usage: build-test-kernel.sh VERSION CACHE_DIR  (VERSION like 7.3)"
version=$1
[[ $version =~ ^[0-9]+\.[0-9]+$ ]] || die "VERSION must be X.Y (as in linux-source-X.Y), not '$version'"
fragment=${TEST_KERNEL_FRAGMENT:-$here/../configs/kernel/test-kernel.fragment}
[[ -f $fragment ]] || die "no config fragment $fragment"
fragment=$(cd "$(dirname "$fragment")" && pwd)/$(basename "$fragment")
mkdir -p "$2" || die "cannot create cache dir $2"
cache=$(cd "$2" && pwd)
need_pkgs sha256sum:coreutils flock:util-linux
fsha=$(sha256sum "$fragment" | cut -d' ' -f1)
speclink=$cache/spec/test_${version}_${fsha:0:12}

# Fast path: this VERSION + fragment was built before; no network at all.
cached_dir() {
    local d
    [[ -f $speclink ]] || return 1
    d=$(cat "$speclink")
    [[ -f $d/.complete ]] || return 1
    echo "$d"
}
if [[ ${FETCH_KERNEL_REFRESH:-0} != 1 ]] && cached_dir; then
    exit 0
fi

# Build dependencies (Debian names; build-essential = gcc, make, libc6-dev).
need_pkgs gcc:build-essential make:build-essential bc:bc bison:bison flex:flex \
    /usr/include/libelf.h:libelf-dev /usr/include/openssl/ssl.h:libssl-dev \
    cpio:cpio python3:python3 xz:xz-utils depmod:kmod perl:perl \
    apt-get:apt dpkg:dpkg

exec 8>"$cache/.build-test-kernel.lock"
flock 8
if [[ ${FETCH_KERNEL_REFRESH:-0} != 1 ]] && cached_dir; then
    exit 0
fi

# --- which linux-source-VERSION (private apt of fetch-kernel.sh) --------------------
apt_conf=$("$here/fetch-kernel.sh" --apt-config "$cache" | tail -n1) || die "private apt setup failed"
[[ -f $apt_conf ]] || die "fetch-kernel.sh --apt-config gave no apt.conf ('$apt_conf')"
export APT_CONFIG=$apt_conf
# fetch-kernel.sh's lock also covers our use of the shared apt directory.
exec 9>"$cache/.fetch.lock"
flock 9
pkg=linux-source-$version
pver=$(apt-cache madison "$pkg" 2>/dev/null | awk -F' [|] ' '{gsub(/ /,"",$2); print $2; exit}')
if [[ -z $pver ]]; then
    have=$(apt-cache madison linux-source 2>/dev/null | awk -F' [|] ' '{gsub(/ /,"",$2); print $2}' |
        sed -E 's/^([0-9]+\.[0-9]+).*/\1/' | sort -uV | tr '\n' ' ')
    die "no package $pkg in bookworm/trixie/trixie-backports (linux-source versions there: $have)"
fi
name=test-$version-$(printf '%s' "$pver" | tr -c 'A-Za-z0-9.+_-' '_')-${fsha:0:12}
out=$cache/kernels/$name
mkdir -p "$cache/spec" "$cache/kernels"
if [[ -f $out/.complete ]]; then
    echo "$out" >"$speclink"
    echo "$out"
    exit 0
fi

# Built in place (the tree's absolute paths stay valid); .complete marks a finished one.
rm -rf "$out"
mkdir -p "$out"
done_ok=0
log_file=$out/build.log
cleanup() {
    if [[ $done_ok -ne 1 ]]; then
        # Keep the log (and the .config) for the error message; drop the 1.5 GB tree.
        [[ -f $out/build/.config ]] && cp "$out/build/.config" "$out/config.failed" 2>/dev/null
        rm -rf "$out/build" "$out/src" "$out/modules"
    fi
}
trap cleanup EXIT
t0=$(date +%s)
log "downloading $pkg=$pver"
mkdir -p "$out/src"
(cd "$out/src" && apt-get -q download "$pkg=$pver" >&2) || die "apt-get download $pkg=$pver failed"
flock -u 9
dpkg -x "$out"/src/*.deb "$out/src/root" || die "dpkg -x $pkg failed"
tarball=$(find "$out/src/root/usr/src" -maxdepth 1 -name "linux-source-$version.tar.*" | head -n1)
[[ -n $tarball ]] || die "$pkg has no /usr/src/linux-source-$version.tar.*"
log "unpacking $(basename "$tarball")"
tar -xf "$tarball" -C "$out/src" || die "cannot unpack $tarball"
mv "$out/src/linux-source-$version" "$out/build" || die "unexpected layout in $tarball"
rm -rf "$out/src"
t_src=$(date +%s)

# --- configure ---------------------------------------------------------------------
b=$out/build
kmake() { make -C "$b" ARCH=x86_64 "$@" >>"$log_file" 2>&1; }
fail_log() { # message: with the last lines of the log
    tail -n 30 "$log_file" >&2
    die "$1 (full log: $log_file)"
}
log "configuring: tinyconfig + $(basename "$fragment")"
kmake tinyconfig || fail_log "make tinyconfig failed"
(cd "$b" && ARCH=x86_64 scripts/kconfig/merge_config.sh -m .config "$fragment" >>"$log_file" 2>&1) \
    || fail_log "merge_config.sh failed"
kmake olddefconfig || fail_log "make olddefconfig failed"

# Every "CONFIG_X=v" line must be in .config exactly; every "# CONFIG_X is not set"
# must not be set (absent is fine: an option whose dependencies are unmet).
dropped=()
while IFS= read -r line; do
    line=${line%%[[:space:]]}
    if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
        opt=${BASH_REMATCH[1]}
        grep -qxF -- "$line" "$b/.config" && continue
        got=$(grep -E "^$opt=|^# $opt is not set" "$b/.config" || true)
        dropped+=("$line (final: ${got:-absent})")
    elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
        opt=${BASH_REMATCH[1]}
        got=$(grep -E "^$opt=" "$b/.config" || true)
        [[ -n $got ]] && dropped+=("$line (final: $got)")
    fi
done <"$fragment"
if [[ ${#dropped[@]} -gt 0 ]]; then
    for d in "${dropped[@]}"; do
        opt=${d%%[= ]*}
        opt=${opt#CONFIG_}
        [[ $d == "# "* ]] && { opt=${d#"# CONFIG_"}; opt=${opt%% *}; }
        if grep -rqE "^[[:space:]]*(menu)?config $opt\$" --include='Kconfig*' "$b"; then
            echo "  $d" >&2
        else
            echo "  $d -- no such symbol in this kernel" >&2
        fi
    done
    die "${#dropped[@]} option(s) of $(basename "$fragment") did not survive olddefconfig (unmet dependencies?): $(printf '%s ' "${dropped[@]%% *}")"
fi
cp "$b/.config" "$out/config"
cp "$fragment" "$out/fragment"
t_cfg=$(date +%s)

# --- build ---------------------------------------------------------------------------
jobs=${TEST_KERNEL_JOBS:-$(nproc)}
log "building bzImage and modules with -j$jobs (log: $log_file)"
kmake -j"$jobs" bzImage modules || fail_log "kernel build failed"
kver=$(make -s -C "$b" ARCH=x86_64 kernelrelease 2>>"$log_file") || fail_log "make kernelrelease failed"
[[ -n $kver ]] || die "empty kernelrelease"
mkdir -p "$out/modules"
kmake INSTALL_MOD_PATH="$out/modules" modules_install || fail_log "make modules_install failed"
mdir=$out/modules/lib/modules/$kver
[[ -d $mdir ]] || die "modules_install made no $mdir"
# A relative build link, valid wherever the cache is.
rm -f "$mdir/build" "$mdir/source"
ln -s ../../../../build "$mdir/build"
depmod -b "$out/modules" "$kver" || die "depmod -b modules $kver failed"
cp "$b/arch/x86/boot/bzImage" "$out/vmlinuz"
echo "$kver" >"$out/kver"
echo "$pkg=$pver" >"$out/packages"
t_end=$(date +%s)
gccv=$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)
cat >"$out/build-info" <<EOF
package=$pkg=$pver
fragment_sha256=$fsha
kernelrelease=$kver
gcc=$gccv
jobs=$jobs
seconds_source=$((t_src - t0))
seconds_config=$((t_cfg - t_src))
seconds_build=$((t_end - t_cfg))
seconds_total=$((t_end - t0))
EOF
done_ok=1
touch "$out/.complete"
echo "$out" >"$speclink"
nmods=$(find "$mdir" -name '*.ko' | wc -l)
log "kernel $kver ready in $out: build time $((t_end - t0)) s (source $((t_src - t0)) s, config $((t_cfg - t_src)) s, make $((t_end - t_cfg)) s, -j$jobs), bzImage $(du -h "$out/vmlinuz" | cut -f1), $nmods loadable modules"
echo "$out"
