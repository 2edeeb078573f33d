#!/bin/bash
# build-test-module.sh KERNEL_DIR OUT_DIR
#
# Builds kmod/ (the vfio_exerciser_test module) out of tree for the kernel
# in KERNEL_DIR, a directory printed by fetch-kernel.sh (kver, config,
# packages; a test kernel has a `build` tree instead of Debian packages).
# Prints the path of the .ko as the last line of stdout.
#
# Debian kernels: linux-headers-<kver>, its linux-headers-*-common and the
# linux-kbuild-* it depends on are downloaded with fetch-kernel.sh's private
# apt configuration (CACHE_DIR/apt, CACHE_DIR = KERNEL_DIR/../..) and
# unpacked into CACHE_DIR/headers/<kver>/ with their absolute paths fixed.
# The compiler named by the kernel's CONFIG_CC_VERSION_TEXT is installed if
# the machine's apt has it (6.1: gcc-12); otherwise the system gcc is used,
# with a warning (KMOD_CC=... overrides the choice).
#
# Cache: OUT_DIR/<kver>/<key>/vfio_exerciser_test.ko, key = sha256 of the
# kmod sources + the kernel's config (+ Module.symvers of a build tree).
# A hit prints the path without building.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

[[ $# -eq 2 ]] || die "usage: build-test-module.sh KERNEL_DIR OUT_DIR"
[[ -f $1/kver && -f $1/config ]] || die "$1 is not a fetch-kernel.sh directory (no kver/config)"
kdir=$(cd "$1" && pwd)
mkdir -p "$2" || die "cannot create $2"
out=$(cd "$2" && pwd)
src=$(cd "$here/../kmod" && pwd)
kver=$(cat "$kdir/kver")
modname=vfio_exerciser_test

# --- cache key ----------------------------------------------------------------
srcfiles=()
while IFS= read -r f; do srcfiles+=("$f"); done < <(cd "$src" && find . -maxdepth 1 -type f \
    \( -name '*.c' -o -name '*.h' -o -name Kbuild -o -name Makefile \) ! -name selftest.c | LC_ALL=C sort)
[[ ${#srcfiles[@]} -gt 0 ]] || die "no sources in $src"
key=$({
    (cd "$src" && sha256sum "${srcfiles[@]}")
    sha256sum <"$kdir/config"
    [[ -f $kdir/build/Module.symvers ]] && sha256sum <"$kdir/build/Module.symvers"
    true
} | sha256sum | cut -c1-16)
dest=$out/$kver/$key
ko=$dest/$modname.ko
if [[ -f $ko ]]; then
    echo "$ko"
    exit 0
fi

need_pkgs make:make flock:util-linux sha256sum:coreutils
mkdir -p "$out"
exec 9>"$out/.build.lock"
flock 9
if [[ -f $ko ]]; then
    echo "$ko"
    exit 0
fi

# --- compiler -------------------------------------------------------------------
# CONFIG_CC_VERSION_TEXT="gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0", or
# "x86_64-linux-gnu-gcc-14 (Debian 14.2.0-19) 14.2.0" (7.x: the triplet goes).
cc_text=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\(.*\)"$/\1/p' "$kdir/config")
kcc=${cc_text%% *}
kcc=${kcc#x86_64-linux-gnu-}
cc=${KMOD_CC:-}
if [[ -z $cc ]]; then
    case $kcc in
    gcc | gcc-[0-9]*)
        if ! command -v "$kcc" >/dev/null 2>&1 && [[ $kcc != gcc ]] &&
            apt-cache show "$kcc" >/dev/null 2>&1; then
            install_pkgs "$kcc"
        fi
        if command -v "$kcc" >/dev/null 2>&1; then
            cc=$kcc
        else
            need_pkgs gcc:gcc
            cc=gcc
            log "warning: kernel was built with '$cc_text'; $kcc is not installable here, using $(gcc --version | head -n1)"
        fi
        ;;
    *)
        need_pkgs gcc:gcc
        cc=gcc
        log "warning: kernel compiler '$cc_text' is not gcc; using $(gcc --version | head -n1)"
        ;;
    esac
fi
command -v "${cc%% *}" >/dev/null 2>&1 || die "compiler $cc not found"

# --- kernel build directory -----------------------------------------------------------
if [[ -d $kdir/build ]]; then
    # A kernel built from source (fetch-kernel.sh test:...): its own tree.
    build=$(cd "$kdir/build" && pwd)
    [[ -f $build/Makefile ]] || die "$build has no Makefile"
    [[ -f $build/Module.symvers ]] || log "warning: $build has no Module.symvers (modpost will warn)"
else
    cache=$(cd "$kdir/../.." && pwd)
    hroot=$cache/headers/$kver
    if [[ ! -f $hroot/.complete ]]; then
        need_pkgs apt-get:apt dpkg:dpkg
        private_apt "$cache"
        # The kernel's package version, e.g. linux-image-6.1.0-50-amd64=6.1.176-1.
        kpver=""
        if [[ -f $kdir/packages ]]; then
            kpver=$(sed -nE "s/^linux-(image|modules|binary)-${kver//+/\\+}=(.*)$/\2/p" "$kdir/packages" | head -n1)
        fi
        hpkg=linux-headers-$kver
        if [[ -z $kpver ]] || ! private_apt_has "$hpkg" "$kpver"; then
            exec 8>"$cache/.fetch.lock" # fetch-kernel.sh's lock: one apt at a time
            flock 8
            log "updating private apt lists"
            apt-get -q update >&2 || die "apt-get update (private lists) failed"
            flock -u 8
        fi
        [[ -n $kpver ]] || kpver=$(private_apt_version "$hpkg")
        [[ -n $kpver ]] || die "package $hpkg is not in the archive"
        private_apt_has "$hpkg" "$kpver" || die "package $hpkg=$kpver is not in the archive (have: $(private_apt_version "$hpkg"))"

        # Close over the Depends that are linux-headers-* / linux-kbuild-*.
        deps_of() { # PKG=VER -> NAME OP VER lines
            apt-cache show --no-all-versions "$1" 2>/dev/null |
                awk '/^(Pre-)?Depends:/ {sub(/^[^:]*: */, ""); print}' | tr ',' '\n' |
                sed -e 's/|.*//' -e 's/^ *//' -e 's/ *$//' |
                sed -nE 's/^(linux-(headers|kbuild)-[^ ]+) *(\(([<>=]+) *([^)]*)\))?$/\1 \4 \5/p'
        }
        declare -A seen=()
        queue=("$hpkg=$kpver")
        pkgs=()
        while [[ ${#queue[@]} -gt 0 ]]; do
            item=${queue[0]}
            queue=("${queue[@]:1}")
            [[ -n ${seen[${item%%=*}]:-} ]] && continue
            seen[${item%%=*}]=1
            pkgs+=("$item")
            while read -r n op v; do
                [[ -z $n ]] && continue
                if [[ $op == = ]]; then
                    :
                elif [[ -n $v ]] && private_apt_has "$n" "$kpver"; then
                    v=$kpver # ">= the kernel's version": take the same build
                else
                    v=$(private_apt_version "$n")
                fi
                [[ -n $v ]] || die "dependency $n of $item is not in the archive"
                queue+=("$n=$v")
            done < <(deps_of "$item")
        done

        work=$(mktemp -d "$cache/headers.tmp.XXXXXX")
        trap 'rm -rf "$work"' EXIT
        mkdir -p "$work/debs" "$work/root"
        log "downloading ${pkgs[*]}"
        (cd "$work/debs" && apt-get -q download "${pkgs[@]}" >&2) || die "apt-get download ${pkgs[*]} failed"
        for deb in "$work"/debs/*.deb; do
            dpkg -x "$deb" "$work/root" || die "dpkg -x $deb failed"
        done
        rm -rf "$work/debs"
        printf '%s\n' "${pkgs[@]}" >"$work/root/packages"
        mkdir -p "$cache/headers"
        rm -rf "$hroot"
        mv "$work/root" "$hroot"
        rm -rf "$work"
        trap - EXIT
        # Fix-ups: the packages expect to live at /. Absolute symlinks
        # (lib/modules/<kver>/build -> /usr/src/...) and the
        # paths in the Makefile ("include /usr/src/linux-headers-*-common/Makefile",
        # 7.x also "KBUILD_OUTPUT=/usr/src/linux-headers-<kver>") are pointed
        # into $hroot; relative links (scripts -> ../../lib/linux-kbuild-*/scripts)
        # already resolve inside it.
        while IFS= read -r l; do
            t=$(readlink "$l")
            [[ $t == /* ]] && ln -sfn "$hroot$t" "$l"
        done < <(find "$hroot" -type l)
        for mk in "$hroot"/usr/src/linux-headers-*/Makefile; do
            sed -i -E "s#(^|[ =])/usr/src/#\1$hroot/usr/src/#g" "$mk"
        done
        # linux-kbuild-* of a newer suite (trixie for 7.x) has host tools
        # (modpost, objtool) linked against a newer glibc than this machine's.
        # Run those with that suite's libc6, unpacked beside them: each
        # failing ELF becomes a script that starts it through that libc's loader.
        badtools=()
        while IFS= read -r f; do
            [[ $(head -c4 "$f" | od -An -c | tr -d ' ') == 177ELF ]] || continue
            # ldd only asks the loader (nothing runs): "version `GLIBC_2.38' not found"
            err=$(ldd "$f" 2>&1) || true
            grep -q "version \`GLIBC_[0-9.]*' not found" <<<"$err" && badtools+=("$f")
        done < <(find "$hroot"/usr/lib/linux-kbuild-* -type f -perm -u+x 2>/dev/null)
        if [[ ${#badtools[@]} -gt 0 ]]; then
            log "${#badtools[@]} kbuild tools need a newer glibc; fetching libc6"
            libc=$hroot/libc
            (mkdir -p "$libc/deb" && cd "$libc/deb" && apt-get -q download libc6 >&2 &&
                dpkg -x libc6_*.deb "$libc" && rm -rf "$libc/deb") || die "cannot fetch libc6"
            ld=$(find "$libc" -name 'ld-linux-x86-64.so.2' | head -n1)
            [[ -n $ld ]] || die "no ld-linux-x86-64.so.2 in libc6"
            libdir=$(dirname "$(find "$libc" -name 'libc.so.6' | head -n1)")
            for f in "${badtools[@]}"; do
                mv "$f" "$f.newglibc"
                # shellcheck disable=SC2016 # $0/$@ are for the wrapper
                printf '#!/bin/sh\n# %s needs a newer glibc (build-test-module.sh)\nexec %s --library-path %s:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu --argv0 "$0" "$0.newglibc" "$@"\n' \
                    "${f##*/}" "$ld" "$libdir" >"$f"
                chmod 755 "$f"
            done
        fi
        touch "$hroot/.complete"
        log "headers for $kver in $hroot"
    fi
    build=$hroot/usr/src/linux-headers-$kver
    [[ -f $build/Makefile ]] || die "no $build/Makefile in the headers package"
fi

# kbuild host tools come prebuilt in linux-kbuild-*: check they run on this
# machine (those needing a newer glibc were wrapped above). fixdep and modpost
# are required; objtool, if it still can't run, is skipped for the module
# (OBJECT_FILES_NON_STANDARD=y: no retpoline/return-thunk/IBT annotations,
# which a test module can do without).
runs() { # TOOL: false if the dynamic loader refuses it
    local err
    [[ -x $1 ]] || return 0
    err=$(SRCARCH=x86 "$1" --help 2>&1 </dev/null) && return 0
    ! grep -q 'GLIBC_\|error while loading\|cannot execute' <<<"$err"
}
for t in "$build/scripts/basic/fixdep" "$build/scripts/mod/modpost"; do
    runs "$t" || die "$t cannot run here: $("$t" 2>&1 | head -n1)"
done
extra_make=()
if ! runs "$build/tools/objtool/objtool"; then
    log "warning: $build/tools/objtool/objtool cannot run here ($(SRCARCH=x86 "$build/tools/objtool/objtool" 2>&1 | grep -o "GLIBC_[0-9.]*.*" | head -n1)); building without objtool"
    extra_make+=(OBJECT_FILES_NON_STANDARD=y)
fi
# BTF for the module needs a pahole at least as new as the kernel's
# (7.3: 1.30, bookworm has 1.24); without it the module is built without BTF.
kpahole=$(sed -n 's/^CONFIG_PAHOLE_VERSION=//p' "$kdir/config")
if grep -q '^CONFIG_DEBUG_INFO_BTF_MODULES=y' "$kdir/config" && [[ -n $kpahole && $kpahole != 0 ]]; then
    hpahole=$( (pahole --version 2>/dev/null || echo v0) | tr -dc '0-9')
    if [[ ${hpahole:-0} -lt $kpahole ]]; then
        log "warning: pahole ${hpahole:-none} < the kernel's $kpahole: module built without BTF"
        extra_make+=(CONFIG_DEBUG_INFO_BTF_MODULES=)
    fi
fi

# --- build ---------------------------------------------------------------------------
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/src"
(cd "$src" && cp "${srcfiles[@]}" "$dest.tmp/src/")
if [[ $cc != "$kcc" && -z ${KMOD_CC:-} ]]; then
    # An older gcc standing in for the kernel's (Debian 7.x: gcc-14, which
    # bookworm lacks): map the options Kconfig chose for the newer one.
    cat >"$dest.tmp/cc-compat" <<EOF
#!/bin/bash
# $cc standing in for '$cc_text' (written by build-test-module.sh)
a=()
for x in "\$@"; do
    case \$x in
    -fmin-function-alignment=*) a+=("-falign-functions=\${x#*=}") ;; # gcc >= 14
    *) a+=("\$x") ;;
    esac
done
exec $cc "\${a[@]}"
EOF
    chmod 755 "$dest.tmp/cc-compat"
    cc=$dest.tmp/cc-compat
fi
makeargs=(-C "$build" M="$dest.tmp/src" CC="$cc" "${extra_make[@]}" modules)
[[ $cc != "$kcc" ]] && makeargs+=(DEBIAN_KERNEL_NO_CC_VERSION_CHECK=y)
log "make ${makeargs[*]}"
if ! make -j"$(nproc)" "${makeargs[@]}" >"$dest.tmp/build.log" 2>&1; then
    tail -n 30 "$dest.tmp/build.log" >&2
    die "module build failed (log: $dest.tmp/build.log)"
fi
grep -E 'warning:|error:' "$dest.tmp/build.log" >&2 || true
[[ -f $dest.tmp/src/$modname.ko ]] || die "make succeeded but no $modname.ko"
cp "$dest.tmp/src/$modname.ko" "$dest.tmp/$modname.ko"
rm -f "$dest.tmp/cc-compat"
mv "$dest.tmp/build.log" "$dest.tmp/$modname.build.log"
rm -rf "$dest.tmp/src" "$dest"
mv "$dest.tmp" "$dest"
log "built $ko (kernel $kver, ${cc##*/})"
echo "$ko"
