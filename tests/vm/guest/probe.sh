#!/bin/sh
# Runs inside the test VM (via `vm --guest-script`): `probe --json` on /dev/ttyS1 between
# markers, for the host to check with jq.
echo "PROBE-BEGIN" >>/dev/ttyS1
vfio-exerciser probe --json >>/dev/ttyS1 2>&1
rc=$?
echo "PROBE-END rc=$rc" >>/dev/ttyS1
exit $rc
