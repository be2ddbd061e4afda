#!/usr/bin/env bash
# vm-devices: none
#
# VF programming through libcni against netdevsim's PF: creates the device
# (built out of tree by scripts/vm-lane/setup.sh), then runs each test of
# tests/tests/vm_vf_programming.rs on its own, so every test gets a
# PASS/FAIL line and a time.
# Runs inside the VM lane, with VM_VF_TEST_BIN naming the test executable of
# `cargo test -p integration --features vm-lane --no-run` (lane.sh finds it):
#   scripts/vm-lane/run.sh --env VM_VF_TEST_BIN=<exe> tests/vm/netdevsim.sh
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

bin=${VM_VF_TEST_BIN:-}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "VM_VF_TEST_BIN must name the vm_vf_programming test executable (got [$bin])" >&2
    exit 2
fi

modprobe netdevsim || exit 1
echo "1 1" >/sys/bus/netdevsim/new_device || exit 1
nsim_has_netdev() { [ -n "$(ls /sys/bus/netdevsim/devices/netdevsim1/net 2>/dev/null)" ]; }
wait_for 100 nsim_has_netdev || { echo "netdevsim1 has no netdev" >&2; exit 1; }
echo 4 >/sys/bus/netdevsim/devices/netdevsim1/sriov_numvfs || exit 1
pf=$(ls /sys/bus/netdevsim/devices/netdevsim1/net)
echo "netdevsim1: PF $pf, $(cat /sys/bus/netdevsim/devices/netdevsim1/sriov_numvfs) VFs"
ip -d link show "$pf" | sed 's/^/  /'

run_one() {
    "$bin" --exact "$1" --test-threads=1 >"/tmp/test-$1.log" 2>&1 || {
        cat "/tmp/test-$1.log"
        exit 1
    }
    # Built without --features vm-lane, every test is ignored: never a pass.
    grep -q "^test result: ok. 1 passed" "/tmp/test-$1.log" || {
        cat "/tmp/test-$1.log"
        fail "test $1 did not run (built without --features vm-lane?)"
    }
}

tests=$("$bin" --list 2>/dev/null | sed -n 's/: test$//p')
[ -n "$tests" ] || { echo "$bin lists no tests" >&2; exit 1; }
for t in $tests; do
    eval "t_$t() { run_one $t; }"
    vm_test "libcni: $t" "t_$t"
done
vm_summary
