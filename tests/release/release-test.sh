#!/bin/bash
# release-test.sh [TARBALL] — the release tarball (scripts/release.sh): its binary runs in a chroot holding nothing but the
# binary and the shared libraries it names (no Swift, no toolchain), and the unpacked tarball —
# its binary, scripts and configs, with no Swift on PATH — runs the matrix in the test VM.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=out/release-test
rm -rf "$out"
mkdir -p "$out"
# shellcheck source=../lib.sh
. tests/lib.sh

t0=$SECONDS
tarball=${1:-}  # a tarball release.sh made already, or make one
[[ -n $tarball ]] || tarball=$(bash scripts/release.sh "$out" 2>"$out/release.log" | tail -n 1)
check "release.sh made a tarball ($((SECONDS - t0)) s)" test -f "$tarball"
[[ -f $tarball ]] || { tail -n 5 "$out/release.log"; echo "$passed passed, $failed failed"; exit 1; }
echo "  $(basename "$tarball"): $(du -k "$tarball" | cut -f1) KiB"
tar -xzf "$tarball" -C "$out"
dir=$(echo "$out"/vfio-exerciser-*/)
dir=${dir%/}
bin=$dir/bin/vfio-exerciser
version=$(cat "$dir/VERSION")
check "VERSION names the version and commit: $version" grep -Eq '^vfio-exerciser [0-9]+\.[0-9]+\.[0-9]+ \(git [0-9a-f]{12}(-dirty)?\)$' "$dir/VERSION"
check "the configs, kmod sources and guest scripts are in it" test -f "$dir/configs/expectations.yaml" -a -f "$dir/kmod/vfio_exerciser_test.c" -a -x "$dir/scripts/guest-init.sh"
check "the binary names no Swift library" sh -c "! ldd '$bin' | grep -qi swift"

echo "== in a chroot with only the binary and its libraries"
root=$out/chroot
mkdir -p "$root/bin" "$root/etc"
cp "$bin" "$root/bin/"
cp -r "$dir/configs" "$root/etc/vfio-exerciser"
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
echo "  $(find "$root" -type f | wc -l) files: $(find "$root" -type f ! -path '*/etc/*' -printf '%P ')"
# Swift on Linux reads its arguments from /proc/self/cmdline: /proc is the one thing it needs mounted.
mkdir -p "$root/proc"
mount -t proc proc "$root/proc" || { echo "  FAIL cannot mount /proc in the chroot"; exit 1; }
trap 'umount "$root/proc" 2>/dev/null' EXIT
rc=0
got=$(chroot "$root" /bin/vfio-exerciser --version 2>&1) || rc=$?
check "--version exits 0 and says the same as VERSION" test "$rc:$got" = "0:$version"
rc=0
chroot "$root" /bin/vfio-exerciser list >"$out/list.txt" 2>&1 || rc=$?
check "list exits 0 and names the kinds" sh -c "test $rc -eq 0 && grep -q '^anon-private' '$out/list.txt' && grep -q '^devdax' '$out/list.txt'"
rc=0
chroot "$root" /bin/vfio-exerciser run --device 0000:99:99.9 >"$out/run.out" 2>"$out/run.err" || rc=$?
check "run without the device: exit 2 and one line ($(head -c 100 "$out/run.err"))" \
    sh -c "test $rc -eq 2 && test \$(wc -l <'$out/run.err') -eq 1 && grep -q '^vfio-exerciser: error: ' '$out/run.err'"
umount "$root/proc"
trap - EXIT

echo "== the unpacked tarball runs the matrix in the test VM (no Swift on PATH)"
rc=0
abs=$PWD/$out
(cd "$dir" && env -i HOME="$HOME" PATH=/usr/sbin:/usr/bin:/sbin:/bin ./bin/vfio-exerciser vm --kernel debian:6.1 \
    --boot plain --backend type1v2 --kind anon-private --kind hole --kind memfd --no-events --out "$abs/vm" --format json --output "$abs/vm.json") \
    2>"$out/vm.err" || rc=$?
check "exit code is 0" test "$rc" -eq 0
check "three cases passed" test "$(jq '[.results[] | select(.verdict.kind == "pass")] | length' "$out/vm.json")" -eq 3
check "the guest ran the tarball's binary: the report names its version" test "$(jq -r .header.tool "$out/vm.json")" = "$version"

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
