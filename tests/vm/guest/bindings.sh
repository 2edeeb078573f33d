#!/bin/sh
# Runs inside the test VM (busybox sh, via `vm --guest-script`): a run that bound a device with
# --bind and was killed leaves its binding on disk for `unbind --all`; a run stopped by SIGTERM
# gives the device back by itself. KTAP on /dev/ttyS1; exit status = number of failures.
out=/dev/ttyS1
dev=0000:00:04.0
d=/sys/bus/pci/devices/$dev
state=/run/vfio-exerciser/bindings.json
n=0 fails=0
say() { echo "$*" >>$out; }
check() {
    desc=$1
    shift
    n=$((n + 1))
    if "$@"; then say "ok $n $desc"; else say "not ok $n $desc"; fails=$((fails + 1)); fi
}
driver() { if [ -e $d/driver ]; then basename "$(readlink $d/driver)"; else echo none; fi; }
wait_driver() { i=0; while [ "$(driver)" != "$1" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; }
# The restorer forgets the entry only after the driver change it waits for (up to 30 s).
wait_forgotten() { i=0; while grep -q $dev $state 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; }
start_run() { # a run that stays busy (its one case hangs) until it is killed
    vfio-exerciser run --device $dev --bind --backend type1v2 --kind anon-private \
        --inject hang:anon-private --case-timeout 600 --no-data-check >/dev/null 2>&1 &
    pid=$!
}

say "KTAP version 1"
say "1..8"
# Start from a device with no driver, as on a machine where nothing claimed it.
echo >$d/driver_override
[ -e $d/driver ] && echo $dev >$d/driver/unbind
check "device starts with no driver" [ "$(driver)" = none ]

start_run
wait_driver vfio-pci
check "run --bind moved it to vfio-pci" [ "$(driver)" = vfio-pci ]
sleep 2
kill -9 $pid
wait $pid 2>/dev/null
check "after SIGKILL it is still on vfio-pci" [ "$(driver)" = vfio-pci ]
check "after SIGKILL the binding is on disk" grep -q "$dev" $state
vfio-exerciser unbind --all >/dev/null 2>&1
check "unbind --all gave it back to no driver" [ "$(driver)" = none ]
check "driver_override is cleared" [ "$(cat $d/driver_override)" = "(null)" ]

start_run
wait_driver vfio-pci
sleep 2
kill -TERM $pid
wait $pid 2>/dev/null
wait_driver none  # the restore runs as soon as the run's process is gone
check "SIGTERM: the run restored the device itself" [ "$(driver)" = none ]
wait_forgotten
check "SIGTERM: nothing left on disk" sh -c "! grep -q $dev $state"
say "# Totals: pass:$((n - fails)) fail:$fails"
exit $fails
