#!/bin/bash
# fetch-uapi.sh [DEST] — the newest linux-libc-dev (trixie-backports) unpacked into DEST
# (default: .uapi in the repository), so the C shim sees <linux/iommufd.h> and current
# <linux/vfio.h>. Debian 12's own linux-libc-dev (6.1) has no iommufd.h. The machine's
# headers and apt sources are not touched. Uses the private apt tree of fetch-kernel.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
dest=${1:-$here/../.uapi}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vfio-exerciser/kernels
need_pkgs dpkg-deb:dpkg apt-get:apt
[[ -f $cache/apt/debian.sources ]] || "$here/fetch-kernel.sh" debian:7.3 "$cache" >/dev/null
private_apt "$cache"
ver=$(private_apt_version linux-libc-dev)
[[ -n $ver ]] || { apt-get update -qq >&2 || die "apt-get update (private) failed"; ver=$(private_apt_version linux-libc-dev); }
[[ -n $ver ]] || die "no linux-libc-dev in the private apt lists"
if [[ -f $dest/.version && $(cat "$dest/.version") == "$ver" ]]; then
    echo "$dest"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq "linux-libc-dev=$ver" >&2) || die "apt-get download linux-libc-dev=$ver failed"
rm -rf "$dest"
mkdir -p "$dest"
dpkg-deb -x "$tmp"/linux-libc-dev_*.deb "$dest"
[[ -f $dest/usr/include/linux/iommufd.h ]] || die "linux-libc-dev $ver has no linux/iommufd.h"
echo "$ver" >"$dest/.version"
log "UAPI headers from linux-libc-dev $ver in $dest"
echo "$dest"
