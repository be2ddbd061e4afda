#!/usr/bin/env bash
# vm-devices: none
#
# RDMA netlink through libcni against soft-RoCE: loads rdma_rxe, creates
# rxe0 on a veth (no hardware needed), then runs each test of
# tests/tests/vm_rdma.rs on its own, so every test gets a PASS/FAIL line and
# a time. No network namespace is created here: the kernel refuses to switch
# the RDMA netns mode while one exists, and the tests switch it.
# Runs inside the VM lane, with VM_RDMA_TEST_BIN naming the test executable of
# `cargo test -p integration --features vm-lane --test vm_rdma --no-run`
# (lane.sh finds it):
#   scripts/vm-lane/run.sh --env VM_RDMA_TEST_BIN=<exe> tests/vm/rxe.sh
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

bin=${VM_RDMA_TEST_BIN:-}
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "VM_RDMA_TEST_BIN must name the vm_rdma test executable (got [$bin])" >&2
    exit 2
fi

modprobe rdma_rxe || exit 1
ip link add veth0 type veth peer name veth1 || exit 1
ip link set veth0 up && ip link set veth1 up || exit 1
rdma link add rxe0 type rxe netdev veth0 || exit 1
echo "rxe0 on veth0: $(rdma dev show rxe0)"
echo "  $(rdma link show rxe0/1)"
echo "  $(rdma system show)"

run_one() {
    "$bin" --exact "$1" --test-threads=1 --nocapture >"/tmp/test-$1.log" 2>&1 || {
        cat "/tmp/test-$1.log"
        exit 1
    }
    # Built without --features vm-lane, every test is ignored: never a pass.
    grep -q "^test result: ok. 1 passed" "/tmp/test-$1.log" || {
        cat "/tmp/test-$1.log"
        fail "test $1 did not run (built without --features vm-lane?)"
    }
    # What the kernel said (errnos, modes, retries): the test's own lines.
    # (--nocapture: the first line follows the harness's "test NAME ... ".)
    sed -e 's/^test [a-z_]* \.\.\. //' "/tmp/test-$1.log" |
        grep -v -e '^running ' -e '^ok$' -e '^$' -e '^test result' | sed 's/^/  /'
}

tests=$("$bin" --list 2>/dev/null | sed -n 's/: test$//p')
[ -n "$tests" ] || { echo "$bin lists no tests" >&2; exit 1; }
for t in $tests; do
    eval "t_$t() { run_one $t; }"
    vm_test "rdma netlink: $t" "t_$t"
done
# --- the production `rdma` plugin against the real subsystem -----------------
# rxe0 hangs off a veth, not a PCI or auxiliary function, so the plugin is
# pointed at it through a one-entry sysfs tree (the layout of
# /sys/bus/pci/devices/<pci>/infiniband/<dev>); the mode read and the move
# are the kernel's own.
RDMA_BIN=${RDMA_BIN:-$VM_REPO/target/release/rdma}
RDMA_STATE=/run/vm-lane/rdma-state
fake_sys=/run/vm-lane/rxe-sys
mkdir -p "$fake_sys/bus/pci/devices/0000:00:1f.7/infiniband/rxe0"
rdma_conf=$(jq -cn --arg s "$RDMA_STATE" --arg f "$fake_sys" \
    '{cniVersion: "1.0.0", name: "rail", type: "rdma", deviceID: "0000:00:1f.7", stateDir: $s, sysfsRoot: $f,
      prevResult: {cniVersion: "1.0.0", interfaces: [{name: "net1"}], ips: []}}')
rdma_state_files() { [ -d "$RDMA_STATE" ] && find "$RDMA_STATE" -type f ! -name '*.lock' ! -name .boot_id | sort | tr '\n' ' '; true; }
rxe_in_host() { rdma dev show rxe0 >/dev/null 2>&1; }
set_mode() { # <mode>: retried, a deleted netns leaves the kernel's list asynchronously
    wait_for 30 rdma system set netns "$1" || fail "rdma system set netns $1 kept failing"
}

t_plugin_refuses_shared_mode() {
    expect_eq "mode" "$(rdma system show | awk '{print $2}')" shared
    local ns
    ns=$(pod_netns rdma-pod)
    CNI_BIN=$RDMA_BIN cni ADD ctr-rxe "$ns" net1 "$rdma_conf"
    ip netns del rdma-pod
    [ "$CNI_RC" != 0 ] || fail "ADD succeeded in shared mode: $CNI_OUT"
    expect_eq "error code" "$(jq -r .code <<<"$CNI_OUT")" 108
    jq -r .msg <<<"$CNI_OUT" | grep -q "netns mode is shared.*rdma system set netns exclusive" ||
        fail "unclear error: $CNI_OUT"
    expect_eq "state files" "$(rdma_state_files)" ""
    rxe_in_host || fail "rxe0 left the host"
    note "$(jq -r .msg <<<"$CNI_OUT")"
}

t_plugin_reports_the_kernels_refusal_and_rolls_back() {
    set_mode exclusive
    local ns
    ns=$(pod_netns rdma-pod)
    CNI_BIN=$RDMA_BIN cni ADD ctr-rxe "$ns" net1 "$rdma_conf"
    local rc=$CNI_RC out=$CNI_OUT
    CNI_BIN=$RDMA_BIN cni DEL ctr-rxe "$ns" net1 "$rdma_conf"
    local del_rc=$CNI_RC
    ip netns del rdma-pod
    set_mode shared
    [ "$rc" != 0 ] || fail "ADD succeeded: rxe cannot change netns ($out)"
    jq -r .msg <<<"$out" | grep -q "move RDMA device rxe0 of 0000:00:1f.7 into the pod.*Operation not supported" ||
        fail "unclear error: $out"
    expect_eq "DEL after the failed ADD" "$del_rc" 0
    expect_eq "state files" "$(rdma_state_files)" ""
    rxe_in_host || fail "rxe0 left the host"
    note "$(jq -r .msg <<<"$out")"
}
vm_test "rdma plugin: refuses shared mode" t_plugin_refuses_shared_mode
vm_test "rdma plugin: reports the kernel's EOPNOTSUPP and rolls back" t_plugin_reports_the_kernels_refusal_and_rolls_back

# The device is still where it started, and the mode is back to the default.
t_final_state() {
    expect_eq "rdma dev after the tests" "$(rdma dev show | cut -d' ' -f2)" "rxe0:"
    expect_eq "rdma system netns after the tests" "$(rdma system show | awk '{print $2}')" shared
}
vm_test "rdma netlink: final state" t_final_state
vm_summary
