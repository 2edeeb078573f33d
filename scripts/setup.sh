#!/bin/bash
# setup.sh — everything a fresh Debian 12 machine (as root, Swift in PATH or /opt/swift)
# needs: the packages the VM harness uses, then a release build of the tool with the
# Swift runtime linked in, so the same binary runs inside the guest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
cd "$here/.."

need_pkgs qemu-system-x86_64:qemu-system-x86 /bin/busybox:busybox-static cpio:cpio depmod:kmod \
    mke2fs:e2fsprogs jq:jq xz:xz-utils zstd:zstd gpgv:gpgv
# busybox from the "busybox" package is dynamic; the initramfs needs the static one.
if ! file -L /bin/busybox 2>/dev/null | grep -q static && ! ldd /bin/busybox 2>&1 | grep -q "not a dynamic"; then
    install_pkgs busybox-static
fi

# iommufd.h and current vfio.h: Debian 12's linux-libc-dev (6.1) predates them.
"$here/fetch-uapi.sh" >/dev/null || die "cannot fetch the UAPI headers"

[[ -x /opt/swift/usr/bin/swift ]] && export PATH=/opt/swift/usr/bin:$PATH
command -v swift >/dev/null || die "no swift toolchain in PATH or /opt/swift"
log "building (release, static Swift runtime)"
swift build -c release --static-swift-stdlib >&2 || die "swift build failed"
log "built $(pwd)/.build/release/vfio-exerciser"
