#!/bin/sh
# Runs inside the test VM (via `vm --guest-script`, with the kselftest install as a tar put in by
# --guest-file): the kernel's own run_kselftest.sh runs the vfio-exerciser target; everything it
# prints goes to /dev/ttyS1, then "KSELFTEST-EXIT <its exit code>".
mkdir -p /tmp/ks && tar -xf /etc/exerciser/kselftest.tar -C /tmp/ks || exit 1
# runner.sh calls `timeout --foreground`, which busybox's timeout lacks: a shim drops the flag.
rm -f /usr/bin/timeout
printf '#!/bin/sh\n[ "$1" = --foreground ] && shift\nexec busybox timeout "$@"\n' >/usr/bin/timeout
chmod +x /usr/bin/timeout
# runner.sh appends the test's output to /dev/stdout, a link devtmpfs does not make (udev does).
[ -e /dev/stdout ] || ln -s /proc/self/fd/1 /dev/stdout
cd /tmp/ks || exit 1
{
	VFIO_EXERCISER_ARGS="--peer 0000:00:04.0 --dma-helper 0000:00:05.0" ./run_kselftest.sh -c vfio-exerciser
	echo "KSELFTEST-EXIT $?"
} 2>&1 | cat >>/dev/ttyS1
