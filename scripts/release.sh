#!/bin/bash
# release.sh [OUT_DIR] — the release tarball: the tool built with the Swift runtime linked in,
# with configs/, the kmod/ sources, the scripts a `vm` run needs (harness, guest /init), the
# kselftest target and the LAVA files, as vfio-exerciser-<version>-linux-<arch>.tar.gz in OUT_DIR (default out/release).
# Prints the tarball's path. The binary needs only glibc, libstdc++ and libgcc_s from the target.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
root=$(cd "$here/.." && pwd)
out=${1:-$root/out/release}
[[ -x /opt/swift/usr/bin/swift ]] && export PATH=/opt/swift/usr/bin:$PATH
command -v swift >/dev/null || die "no swift on PATH (scripts/setup.sh installs the build's prerequisites)"
need_pkgs strip:binutils tar:tar gzip:gzip git:git

cd "$root"
swift build -c release --static-swift-stdlib >&2 || die "swift build failed"
bin=.build/release/vfio-exerciser
# "vfio-exerciser 0.1.0 (git 1a2b3c4d5e6f)"
full=$("$bin" --version) || die "$bin --version failed"
version=$(awk '{ print $2 }' <<<"$full")
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || die "no version in '$full'"
name=vfio-exerciser-$version-linux-$(uname -m)

mkdir -p "$out" || die "cannot create $out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/release.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/$name/bin"
strip -o "$stage/$name/bin/vfio-exerciser" "$bin"
# The tracked files only (no build output in kmod/), as they are in the working tree.
git ls-files -z configs kmod kselftest lava scripts README.md | tar -cf - --null -T - | tar -xf - -C "$stage/$name"
printf '%s\n' "$full" >"$stage/$name/VERSION"
# Reproducible: fixed owner, order and times (the commit's).
mtime=$(git log -1 --format=%ct 2>/dev/null || echo 0)
tar -C "$stage" --owner=0 --group=0 --numeric-owner --sort=name --mtime="@$mtime" -cf - "$name" |
    gzip -9n >"$out/$name.tar.gz.tmp"
mv "$out/$name.tar.gz.tmp" "$out/$name.tar.gz"
echo "$out/$name.tar.gz"
