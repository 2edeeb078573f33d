#!/bin/bash
# fetch-kernel.sh SPEC CACHE_DIR
# fetch-kernel.sh --apt-config CACHE_DIR
#
# Downloads a Debian amd64 kernel with a private apt setup (the machine's
# /etc/apt is never touched) and unpacks it into CACHE_DIR/kernels/<name>/:
#   vmlinuz  config  kver  modules/lib/modules/<kver>/ (depmod already run)
# The path of that directory is printed as the last line of stdout.
#
# SPEC:
#   debian:6.1                 bookworm's linux-image-amd64
#   debian:6.12                trixie's linux-image-amd64
#   debian:7.3                 trixie-backports' linux-image-amd64
#   debian:X.Y                 whichever suite's linux-image-amd64 is X.Y.*
#   debian:6.12.117+deb13-amd64   an exact ABI (package linux-image-<ABI>)
#   debian:6.12.117-1          an exact linux-image-amd64 package version
#   test:X.Y                   a small test kernel built here from Debian's
#                              linux-source-X.Y + configs/kernel/test-kernel.fragment
#                              (build-test-kernel.sh; same layout plus build/)
# Only what the archive currently holds can be fetched (no snapshots).
# Set FETCH_KERNEL_REFRESH=1 to re-resolve a SPEC that is already cached.
#
# --apt-config: only set up and update the private apt configuration under
# CACHE_DIR/apt and print the path to give APT_CONFIG (used by
# build-test-kernel.sh for linux-source-X.Y).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

[[ $# -eq 2 ]] || die "usage: fetch-kernel.sh SPEC CACHE_DIR | fetch-kernel.sh --apt-config CACHE_DIR"
spec=$1
if [[ $spec == test:?* ]]; then
    # Built here, not downloaded: build-test-kernel.sh has its own cache and lock.
    exec "$here/build-test-kernel.sh" "${spec#test:}" "$2"
fi
[[ $spec == debian:?* || $spec == --apt-config ]] \
    || die "unsupported SPEC '$spec' (expected debian:... or test:X.Y)"
want=${spec#debian:}
mkdir -p "$2" || die "cannot create cache dir $2"
cache=$(cd "$2" && pwd)
key=$(printf '%s' "$want" | tr -c 'A-Za-z0-9.+_-' '_')
speclink=$cache/spec/$key

# Fast path: SPEC already resolved and unpacked; no network at all.
cached_dir() {
    local d
    [[ -f $speclink ]] || return 1
    d=$(cat "$speclink")
    [[ -f $d/.complete ]] || return 1
    echo "$d"
}
if [[ $spec != --apt-config && ${FETCH_KERNEL_REFRESH:-0} != 1 ]] && cached_dir; then
    exit 0
fi

need_pkgs apt-get:apt dpkg:dpkg depmod:kmod flock:util-linux

exec 9>"$cache/.fetch.lock"
flock 9
# Another process may have finished the same SPEC while we waited.
if [[ $spec != --apt-config && ${FETCH_KERNEL_REFRESH:-0} != 1 ]] && cached_dir; then
    exit 0
fi

# --- private apt configuration -------------------------------------------
apt=$cache/apt
mkdir -p "$apt"/{etc/parts,etc/prefs,lists/partial,archives/partial}
: >"$apt/status"

# write_conf SOURCES CONF: a complete apt configuration of our own.
# APT_CONFIG is read before Dir::Etc::parts, so setting parts here keeps
# /etc/apt/apt.conf.d out as well.
write_conf() {
    cat >"$2" <<EOF
Dir::Etc::parts "$apt/etc/parts";
Dir::Etc::main "/dev/null";
Dir::Etc::sourcelist "$1";
Dir::Etc::sourceparts "$apt/etc/parts";
Dir::Etc::preferences "/dev/null";
Dir::Etc::preferencesparts "$apt/etc/prefs";
Dir::State "$apt";
Dir::State::lists "$apt/lists";
Dir::State::status "$apt/status";
Dir::Cache "$apt";
Dir::Cache::archives "$apt/archives";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
Acquire::Retries "3";
APT::Sandbox::User "root";
EOF
}
write_sources() { # FILE KEYRING SUITES...
    local f=$1 k=$2
    shift 2
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: %s\n' \
        "$*" "$k" >"$f"
}

# The keyring must hold trixie's archive key ("13/trixie", in bookworm's
# debian-archive-keyring >= 2023.3). If not, take bookworm's current
# debian-archive-keyring (verified with the old key) into the cache.
has_trixie_key() {
    [[ -f $1 ]] || return 1
    mkdir -p "$apt/gnupg" && chmod 700 "$apt/gnupg"
    GNUPGHOME=$apt/gnupg gpg --batch --show-keys "$1" 2>/dev/null | grep -q '(13/trixie)'
}
need_pkgs gpg:gpg
keyring=${FETCH_KERNEL_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg} # override: tests only
[[ -f $keyring ]] || need_pkgs "$keyring:debian-archive-keyring"
if ! has_trixie_key "$keyring"; then
    kr=$apt/keyring/usr/share/keyrings/debian-archive-keyring.gpg
    if ! has_trixie_key "$kr"; then
        log "system keyring lacks the trixie key; fetching debian-archive-keyring from bookworm"
        write_sources "$apt/bootstrap.sources" "$keyring" bookworm bookworm-updates
        write_conf "$apt/bootstrap.sources" "$apt/bootstrap.conf"
        mkdir -p "$apt/keyring"
        # shellcheck disable=SC2030 # the subshell's APT_CONFIG is meant to be local
        (APT_CONFIG=$apt/bootstrap.conf && export APT_CONFIG && apt-get -q update >&2 &&
            cd "$apt/keyring" && apt-get -q download debian-archive-keyring >&2 &&
            dpkg -x debian-archive-keyring_*.deb .) || die "cannot fetch debian-archive-keyring"
    fi
    keyring=$kr
    has_trixie_key "$keyring" || die "no keyring with the trixie archive key"
fi

write_sources "$apt/debian.sources" "$keyring" bookworm trixie trixie-backports
write_conf "$apt/debian.sources" "$apt/apt.conf"
# shellcheck disable=SC2031
export APT_CONFIG=$apt/apt.conf
papt() { apt-get -q "$@"; }

log "updating private apt lists"
papt update >&2 || die "apt-get update (private lists) failed"
if [[ $spec == --apt-config ]]; then
    echo "$APT_CONFIG"
    exit 0
fi

# --- resolve SPEC to a linux-image package=version -------------------------
madison() { apt-cache madison "$1" 2>/dev/null | awk -F' [|] ' '{gsub(/ /,"",$2); print $2 "\t" $3}'; }
root=""
if [[ $want =~ ^[0-9]+\.[0-9]+$ ]]; then
    # newest linux-image-amd64 whose upstream version is X.Y.*
    ver=$(madison linux-image-amd64 | awk -v p="$want" -F'\t' 'index($1, p ".") == 1 {print $1; exit}')
    [[ -n $ver ]] || die "no linux-image-amd64 $want.* in bookworm/trixie/trixie-backports (have: $(madison linux-image-amd64 | cut -f1 | tr '\n' ' '))"
    root="linux-image-amd64=$ver"
elif [[ $want == *-amd64 ]]; then
    pkg=linux-image-$want
    ver=$(madison "$pkg" | head -n1 | cut -f1)
    [[ -n $ver ]] || die "package $pkg is not in the archive (only current kernels are; try debian:X.Y)"
    root="$pkg=$ver"
else
    madison linux-image-amd64 | cut -f1 | grep -qxF -- "$want" \
        || die "'$want' is neither X.Y, an ABI (…-amd64) nor a linux-image-amd64 version in the archive"
    root="linux-image-amd64=$want"
fi

# Close over the Depends that are kernel packages (image/binary/modules/base
# split of newer kernels), each pinned to the exact version.
deps_of() {
    apt-cache show --no-all-versions "$1" 2>/dev/null |
        awk '/^(Pre-)?Depends:/ {sub(/^[^:]*: */, ""); print}' | tr ',' '\n' |
        sed -e 's/|.*//' -e 's/^ *//' -e 's/ *$//' |
        sed -nE 's/^(linux-(image|binary|modules|base)-[^ ]+) *(\(= *([^)]*)\))?$/\1=\4/p'
}
declare -A seen=()
queue=("$root")
pkgs=()
while [[ ${#queue[@]} -gt 0 ]]; do
    item=${queue[0]}
    queue=("${queue[@]:1}")
    [[ -n ${seen[$item]:-} ]] && continue
    seen[$item]=1
    name=${item%%=*}
    v=${item#*=}
    if [[ -z $v ]]; then
        v=$(madison "$name" | head -n1 | cut -f1)
        [[ -n $v ]] || die "dependency $name not found in the archive"
        item="$name=$v"
    fi
    apt-cache show --no-all-versions "$item" >/dev/null 2>&1 || die "package $item not in the archive"
    pkgs+=("$item")
    while IFS= read -r d; do
        [[ -n $d ]] && queue+=("$d")
    done < <(deps_of "$item")
done

# Directory name: the ABI-named image package and its version.
main=""
for p in "${pkgs[@]}"; do
    n=${p%%=*}
    if [[ $n =~ ^linux-image-[0-9] && $n != *-unsigned ]]; then main=$p; break; fi
done
[[ -n $main ]] || main=${pkgs[0]}
dirname=$(printf '%s' "${main#linux-image-}" | tr -c 'A-Za-z0-9.+_=-' '_' | tr '=' '_')
out=$cache/kernels/$dirname
mkdir -p "$cache/spec" "$cache/kernels"
if [[ -f $out/.complete ]]; then
    echo "$out" >"$speclink"
    echo "$out"
    exit 0
fi

# --- download and unpack ------------------------------------------------------
work=$(mktemp -d "$cache/kernels/.tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/root"
log "downloading ${pkgs[*]}"
(cd "$work/debs" && papt download "${pkgs[@]}" >&2) || die "apt-get download ${pkgs[*]} failed"
for deb in "$work"/debs/*.deb; do
    dpkg -x "$deb" "$work/root" || die "dpkg -x $deb failed"
done
rm -rf "$work/debs"

r=$work/root
moddir=""
for d in "$r"/usr/lib/modules/* "$r"/lib/modules/*; do
    [[ -d $d/kernel ]] && { moddir=$d; break; }
done
[[ -n $moddir ]] || die "no modules directory in ${pkgs[*]}"
kver=$(basename "$moddir")

vmlinuz=""
for f in "$r/boot/vmlinuz-$kver" "$r/usr/lib/modules/$kver/vmlinuz" "$r/lib/modules/$kver/vmlinuz" \
    "$r/usr/lib/linux/vmlinuz-$kver" "$r"/boot/vmlinuz-*; do
    [[ -f $f ]] && { vmlinuz=$f; break; }
done
[[ -n $vmlinuz ]] || die "no vmlinuz for $kver in ${pkgs[*]}"
config=""
for f in "$r/boot/config-$kver" "$r/usr/lib/modules/$kver/config" "$r/lib/modules/$kver/config" \
    "$r/usr/lib/linux/config-$kver" "$r"/boot/config-*; do
    [[ -f $f ]] && { config=$f; break; }
done
[[ -n $config ]] || die "no kernel config for $kver in ${pkgs[*]}"

final=$work/out
mkdir -p "$final/modules/lib/modules"
cp "$vmlinuz" "$final/vmlinuz"
cp "$config" "$final/config"
mv "$moddir" "$final/modules/lib/modules/$kver"
# Newer split packages keep vmlinuz/System.map inside the modules dir.
rm -f "$final/modules/lib/modules/$kver/vmlinuz" "$final/modules/lib/modules/$kver/System.map"
depmod -b "$final/modules" "$kver" || die "depmod -b modules $kver failed"
echo "$kver" >"$final/kver"
printf '%s\n' "${pkgs[@]}" >"$final/packages"
rm -rf "$r"
touch "$final/.complete"
rm -rf "$out"
mv "$final" "$out"
echo "$out" >"$speclink"
log "kernel $kver ready in $out"
echo "$out"
