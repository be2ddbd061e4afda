#!/usr/bin/env bash
# vm-devices: none
#
# rdma-hostprep against a real RDMA subsystem (the host lane has none; its
# tests are tests/tests/hostprep.rs):
#   - `netns-mode MODE --persist` writes /etc/modprobe.d/ib_core.conf (the
#     guest's: a tmpfs overlay) and ib_core, loaded afterwards, takes that mode
#     (/sys/module/ib_core/parameters/netns_mode, `rdma system show`);
#   - `netns-mode MODE` switches the running kernel over RDMA netlink, and is
#     refused with the remedy (EBUSY) while another network namespace exists;
#   - `set-nic-addr` then `check` on soft-RoCE's netdev reports the node ready,
#     and not ready in shared mode; `unset-nic-addr` restores the NIC.
# The tests run in order and share the guest's state (rxe0 on veth0, the
# persisted file).
# Binary: $HOSTPREP_BIN, default $VM_REPO/target/release/rdma-hostprep
# (`cargo build --release --workspace --bins`; lane.sh builds only the plugins).
# Runs inside the VM lane: scripts/vm-lane/lane.sh hostprep, or
#   scripts/vm-lane/run.sh tests/vm/hostprep.sh
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

HOSTPREP_BIN=${HOSTPREP_BIN:-$VM_REPO/target/release/rdma-hostprep}
CONF=/etc/modprobe.d/ib_core.conf
HEADER='# rdma-hostprep: RDMA netns mode for ib_core (0 = exclusive, 1 = shared)'
FAKE_SYS=/run/vm-lane/hostprep-sys

hp() { "$HOSTPREP_BIN" "$@"; }
kernel_mode() { rdma system show | awk '{print $2}'; }
param() { cat /sys/module/ib_core/parameters/netns_mode; }
unload_ib_core() { # nothing uses it yet (no rxe device)
    modprobe -r ib_core
    [ ! -d /sys/module/ib_core ] || fail "ib_core still loaded"
}

t_binary() {
    [ -x "$HOSTPREP_BIN" ] || fail "$HOSTPREP_BIN is missing: cargo build --release --workspace --bins"
    [ ! -d /sys/module/ib_core ] || fail "ib_core is loaded at boot: the persistence test needs it unloaded"
    [ ! -e "$CONF" ] || fail "$CONF exists before the test"
}

# Opening the NETLINK_RDMA socket loads ib_core (alias net-pf-16-proto-20)
# through modprobe, which reads the file just written: the mode the kernel
# reports is the persisted one, both ways.
t_persisted_mode_is_what_ib_core_loads_with() {
    local out
    out=$(hp netns-mode exclusive --persist)
    expect_eq "output" "$out" "persisted: netns_mode=0 (exclusive) in $CONF (written)
RDMA netns mode: already exclusive"
    expect_eq "$CONF" "$(cat "$CONF")" "$HEADER
options ib_core netns_mode=0"
    expect_eq "mode of $CONF" "$(stat -c %a "$CONF")" 644
    expect_eq "ib_core netns_mode parameter" "$(param)" N
    expect_eq "rdma system show" "$(kernel_mode)" exclusive

    unload_ib_core
    out=$(hp netns-mode shared --persist)
    expect_eq "output" "$out" "persisted: netns_mode=1 (shared) in $CONF (written)
RDMA netns mode: already shared"
    expect_eq "ib_core netns_mode parameter" "$(param)" Y
    expect_eq "rdma system show" "$(kernel_mode)" shared

    unload_ib_core
    hp netns-mode exclusive --persist >/dev/null
    out=$(hp netns-mode exclusive --persist)
    expect_eq "second run" "$out" "persisted: netns_mode=0 (exclusive) in $CONF (unchanged)
RDMA netns mode: already exclusive"
    expect_eq "rdma system show" "$(kernel_mode)" exclusive
}

t_soft_roce() {
    modprobe rdma_rxe
    ip link add veth0 type veth peer name veth1
    ip link set veth0 up
    ip link set veth1 up
    rdma link add rxe0 type rxe netdev veth0
    note "$(rdma dev show rxe0); $(rdma system show)"
}

t_switches_now() {
    expect_eq "shared" "$(hp netns-mode shared)" "RDMA netns mode: exclusive -> shared"
    expect_eq "rdma system show" "$(kernel_mode)" shared
    expect_eq "exclusive" "$(hp netns-mode exclusive)" "RDMA netns mode: shared -> exclusive"
    expect_eq "rdma system show" "$(kernel_mode)" exclusive
    expect_eq "again" "$(hp netns-mode exclusive)" "RDMA netns mode: already exclusive"
    expect_eq "read" "$(hp netns-mode)" "RDMA netns mode: exclusive
persisted: exclusive (netns_mode=0 in $CONF)"
}

t_refused_while_a_netns_exists() {
    ip netns add blocker
    local rc=0 err
    err=$(hp netns-mode shared 2>&1 >/dev/null) || rc=$?
    ip netns del blocker
    expect_eq "exit status" "$rc" 1
    expect_eq "rdma system show" "$(kernel_mode)" exclusive
    grep -q "Device or resource busy" <<<"$err" || fail "no errno: $err"
    grep -q "named namespaces now: blocker" <<<"$err" || fail "the namespace is not named: $err"
    grep -q "netns-mode shared --persist" <<<"$err" || fail "no remedy: $err"
    note "$err"
}

fake_pf() { # veth0 as an SR-IOV PF with rxe0, the layout of /sys
    local dev=$FAKE_SYS/bus/pci/devices/0000:00:1f.7
    mkdir -p "$dev/infiniband/rxe0" "$FAKE_SYS/class/net/veth0"
    echo 2 >"$dev/sriov_numvfs"
    echo 8 >"$dev/sriov_totalvfs"
    echo 1 >"$FAKE_SYS/class/net/veth0/type"
    ln -sfn ../../../bus/pci/devices/0000:00:1f.7 "$FAKE_SYS/class/net/veth0/device"
}

t_prepared_nic_checks_ready() {
    fake_pf
    hp set-nic-addr --nic veth0 --address 172.16.11.10/24 --gateway 172.16.11.254 --table 111 --mtu 4200 |
        sed 's/^/  /'
    expect_eq "rule" "$(ip -j rule show | jq -c '[.[] | select(.src == "172.16.11.10")]')" \
        '[{"priority":1111,"src":"172.16.11.10","table":"111"}]'
    expect_eq "table 111" "$(ip -j route show table 111 | jq -c '[.[] | {dst, gateway, dev}]')" \
        '[{"dst":"default","gateway":"172.16.11.254","dev":"veth0"},{"dst":"172.16.11.0/24","gateway":null,"dev":"veth0"}]'
    local report
    report=$(hp check --json --nic veth0 --sysfs-root "$FAKE_SYS")
    expect_json_eq "check" "$(jq -c '{ready, rdmaNetnsMode, persisted: .persistedNetnsMode.mode, missing,
        nic: (.nics[0] | {name, linkLayer, numVfs, totalVfs, mtu, rdmaDevices, rdmaNetnsMode, missing,
              policyRoutes})}' <<<"$report")" \
        '{"ready": true, "rdmaNetnsMode": "exclusive", "persisted": "exclusive", "missing": [],
          "nic": {"name": "veth0", "linkLayer": "Ethernet", "numVfs": 2, "totalVfs": 8, "mtu": 4200,
                  "rdmaDevices": ["rxe0"], "rdmaNetnsMode": "exclusive", "missing": [],
                  "policyRoutes": [{"address": "172.16.11.10", "table": 111, "priority": 1111,
                                    "defaultVia": "172.16.11.254"}]}}'
    hp check --nic veth0 --sysfs-root "$FAKE_SYS" | tail -n1 | grep -qx "ready: yes" || fail "text report not ready"
}

switch_to() { hp netns-mode "$1" >/dev/null; } # retried: a deleted netns leaves asynchronously

t_shared_mode_is_reported_missing() {
    wait_for 50 switch_to shared || fail "netns-mode shared kept failing"
    local rc=0 report
    report=$(hp check --json --nic veth0 --sysfs-root "$FAKE_SYS") || rc=$?
    hp netns-mode exclusive >/dev/null
    expect_eq "exit status" "$rc" 3
    expect_json_eq "check" "$(jq -c '{ready, rdmaNetnsMode, missing: .nics[0].missing}' <<<"$report")" \
        '{"ready": false, "rdmaNetnsMode": "shared",
          "missing": ["RDMA netns mode is shared (rdma-hostprep netns-mode exclusive --persist)"]}'
}

t_unset_restores_the_nic() {
    hp unset-nic-addr --nic veth0 | sed 's/^/  /'
    expect_eq "rules from 172.16.11.10" "$(ip -j rule show | jq -c '[.[] | select(.src == "172.16.11.10")] | length')" 0
    expect_eq "table 111" "$(ip -j route show table all | jq -c '[.[] | select(.table == "111")] | length')" 0
    expect_eq "addresses" "$(ip -j addr show veth0 | jq -c '[.[0].addr_info[] | select(.family == "inet")] | length')" 0
    expect_eq "MTU" "$(ip -j link show veth0 | jq '.[0].mtu')" 1500
}

vm_test "hostprep: binary and a fresh kernel" t_binary
vm_test "hostprep: the persisted mode is what ib_core loads with" t_persisted_mode_is_what_ib_core_loads_with
vm_test "hostprep: soft-RoCE rxe0 on veth0" t_soft_roce
vm_test "hostprep: netns-mode switches the running kernel" t_switches_now
vm_test "hostprep: the switch is refused with the remedy while a netns exists" t_refused_while_a_netns_exists
vm_test "hostprep: a prepared NIC checks ready" t_prepared_nic_checks_ready
vm_test "hostprep: shared mode is reported missing" t_shared_mode_is_reported_missing
vm_test "hostprep: unset-nic-addr restores the NIC" t_unset_restores_the_nic
vm_summary
