#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# kselftest target: the vfio-exerciser matrix as KTAP, with kselftest's exit codes (0 pass,
# 1 fail, 4 skip). VFIO_EXERCISER_DEVICE names the device bound to vfio-pci (default: the
# first one there); VFIO_EXERCISER_ARGS or arguments add `run` options (--peer BDF, --kind K).
here=$(cd "$(dirname "$0")" && pwd)
dev=${VFIO_EXERCISER_DEVICE:-}
if [ -z "$dev" ]; then
	for d in /sys/bus/pci/drivers/vfio-pci/[0-9a-f]*:*; do
		[ -e "$d" ] && dev=${d##*/} && break
	done
fi
if [ -z "$dev" ]; then
	echo "TAP version 13"
	echo "1..0 # SKIP no device bound to vfio-pci (set VFIO_EXERCISER_DEVICE)"
	exit 4
fi
# shellcheck disable=SC2086 # VFIO_EXERCISER_ARGS is a list of words
exec "$here/vfio-exerciser" run --device "$dev" --configs "$here/configs" --format ktap --color never \
	$VFIO_EXERCISER_ARGS "$@"
