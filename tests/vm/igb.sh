#!/usr/bin/env bash
# vm-devices: igb
#
# The production `sriov` binary on real igb VFs (QEMU's emulated 82576 PF,
# the kernel's igb and igbvf drivers), real sysfs, Debian's `static` IPAM.
# Runs inside the VM lane: scripts/vm-lane/run.sh --devices igb tests/vm/igb.sh
# Each test starts from freshly created VFs (sriov_numvfs 0 -> 2), no netns
# and an empty state dir, so a failed test leaves nothing to the next.
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"
# shellcheck source=igb-lib.sh disable=SC1091
. "$(dirname "$0")/igb-lib.sh"

igb_prepare || exit 1

# 1a. ADD programs every PF-side attribute and hands the VF to the pod; CHECK
# agrees; DEL restores everything; a second DEL succeeds.
t_add_check_del_restores_everything() {
    igb_fresh_vfs
    local ns vf host pf_before host_before conf result want
    ns=$(pod_netns pod-a)
    vf=$VF0_PCI
    host=$(pci_netdev "$vf")
    pf_before=$(pf_vfinfo "$IGB_PF" 0)
    host_before=$(link_facts "$host")
    note "before ADD: PF side $pf_before; host netdev $host_before"
    conf=$(sriov_conf "$vf" '{"vlan": 100, "vlanQoS": 3, "mac": "02:11:22:33:44:55", "spoofchk": "off",
        "trust": "on", "max_tx_rate": 100, "mtu": 1400,
        "ipam": {"type": "static", "addresses": [{"address": "10.77.0.2/24"}]}}')
    cni_ok ADD ctr-a "$ns" net1 "$conf"
    result=$CNI_OUT

    soft_begin
    # cniVersion 1.0.0 (Debian's static IPAM stops there): no mtu/pciID yet.
    expect_json_eq "ADD result interface" "$(jq -c '.interfaces[0]' <<<"$result")" \
        "{\"name\": \"net1\", \"mac\": \"02:11:22:33:44:55\", \"sandbox\": \"$ns\"}"
    expect_eq "ADD result address" "$(jq -r '[.ips[].address] | join(" ")' <<<"$result")" "10.77.0.2/24"
    # Exactly the configured values, everything else as before.
    want=$(jq -c '.address = "02:11:22:33:44:55" | .vlan_list = [{vlan: 100, qos: 3}]
        | .tx_rate = 100 | .rate.max_tx = 100 | .spoofchk = false | .trust = true' <<<"$pf_before")
    expect_json_eq "PF-side vfinfo of VF 0 after ADD" "$(pf_vfinfo "$IGB_PF" 0)" "$want"
    expect_eq "pod interfaces" "$(netns_links pod-a)" "lo net1"
    local pod
    pod=$(link_facts net1 pod-a)
    expect_json_eq "pod net1: MAC, MTU, up" "$(jq -c '{address, mtu, up}' <<<"$pod")" \
        '{"address": "02:11:22:33:44:55", "mtu": 1400, "up": true}'
    expect_eq "pod net1 addresses" "$(ipv4_addrs net1 pod-a)" "10.77.0.2/24"
    expect_eq "pod net1 is the VF" "$(basename "$(ip netns exec pod-a readlink /sys/class/net/net1/device)")" "$vf"
    note "host netdev $host_before; in the pod: $pod"
    ip link show "$host" >/dev/null 2>&1 && mismatch "host still has $host after ADD"
    [ -n "$(state_files)" ] || mismatch "no state files after ADD"
    soft_end "after ADD"

    cni_ok CHECK ctr-a "$ns" net1 "$(with_prev "$conf" "$result")"

    cni_ok DEL ctr-a "$ns" net1 "$(with_prev "$conf" "$result")"
    local warnings
    warnings=$(grep -iE 'warn|error' <<<"$CNI_ERR" || true)
    [ -z "$warnings" ] || note "DEL logged: $warnings"
    soft_begin
    expect_json_eq "PF-side vfinfo of VF 0 after DEL (= before ADD)" "$(pf_vfinfo "$IGB_PF" 0)" "$pf_before"
    if ip link show "$host" >/dev/null 2>&1; then
        expect_json_eq "host netdev after DEL (= before ADD)" "$(link_facts "$host")" "$host_before"
    else
        mismatch "host has no $host after DEL; the VF's netdevs: $(pci_netdev "$vf") ($(ip -br link | tr '\n' ';'))"
    fi
    expect_eq "pod interfaces after DEL" "$(netns_links pod-a)" "lo"
    expect_eq "state files after DEL" "$(state_files)" ""
    [ "$VM_MISMATCHES" = 0 ] || note "DEL stderr: $CNI_ERR"
    soft_end "after DEL"

    cni_ok DEL ctr-a "$ns" net1 "$(with_prev "$conf" "$result")"
    ip netns del pod-a
}

# 1b. igb refuses link_state, min_tx_rate > 0 and 802.1ad: ADD fails with a
# CNI error naming the attribute and leaves the VF exactly as before.
refused_add() { # <extra config> <word the message must contain>
    igb_fresh_vfs
    local ns vf host pf_before host_before conf code version msg
    ns=$(pod_netns pod-r)
    vf=$VF0_PCI
    host=$(pci_netdev "$vf")
    pf_before=$(pf_vfinfo "$IGB_PF" 0)
    host_before=$(link_facts "$host")
    conf=$(sriov_conf "$vf" "$1")
    cni ADD ctr-r "$ns" net1 "$conf"
    note "ADD exit status $CNI_RC, stdout: $CNI_OUT"
    expect_eq "ADD exit status" "$CNI_RC" 1
    { read -r code && read -r version && read -r msg; } < <(jq -r '.code, .cniVersion, .msg' <<<"$CNI_OUT") ||
        fail "stdout is not a CNI error: $CNI_OUT"
    [ "$version" != null ] || fail "error without cniVersion"
    soft_begin
    [[ $msg == *"$2"* ]] || mismatch "error message does not name $2: $msg"
    expect_eq "error code (kernel refusal)" "$code" 100
    expect_json_eq "PF-side vfinfo of VF 0 (= before ADD)" "$(pf_vfinfo "$IGB_PF" 0)" "$pf_before"
    if ip link show "$host" >/dev/null 2>&1; then
        expect_json_eq "host netdev (= before ADD)" "$(link_facts "$host")" "$host_before"
    else
        mismatch "host has no $host after the failed ADD ($(ip -br link | tr '\n' ';'))"
    fi
    expect_eq "state files" "$(state_files)" ""
    expect_eq "pod interfaces" "$(netns_links pod-r)" "lo"
    soft_end
    ip netns del pod-r
}
t_refuses_link_state() {
    refused_add '{"vlan": 100, "mac": "02:11:22:33:44:66", "spoofchk": "off", "link_state": "enable"}' link_state
}
t_refuses_min_tx_rate() {
    refused_add '{"vlan": 100, "mac": "02:11:22:33:44:66", "spoofchk": "off", "min_tx_rate": 10, "max_tx_rate": 100}' min_tx_rate
}
t_refuses_vlan_8021ad() {
    refused_add '{"vlan": 300, "vlanProto": "802.1ad", "spoofchk": "off", "trust": "on"}' 802.1ad
}

# 1c. Two pods on the two VFs: same VLAN pings through igb, different VLANs
# do not.
two_pods() { # <vlan of pod a> <vlan of pod b>
    local nsa nsb
    nsa=$(pod_netns pod-a)
    nsb=$(pod_netns pod-b)
    CONF_A=$(sriov_conf "$VF0_PCI" "{\"vlan\": $1, \"ipam\": {\"type\": \"static\", \"addresses\": [{\"address\": \"10.78.0.1/24\"}]}}")
    CONF_B=$(sriov_conf "$VF1_PCI" "{\"vlan\": $2, \"ipam\": {\"type\": \"static\", \"addresses\": [{\"address\": \"10.78.0.2/24\"}]}}")
    cni_ok ADD ctr-a "$nsa" net1 "$CONF_A"
    cni_ok ADD ctr-b "$nsb" net1 "$CONF_B"
    expect_eq "pod a address" "$(ipv4_addrs net1 pod-a)" "10.78.0.1/24"
    expect_eq "pod b address" "$(ipv4_addrs net1 pod-b)" "10.78.0.2/24"
    note "PF side: VF 0 $(pf_vfinfo "$IGB_PF" 0 | jq -c .vlan_list), VF 1 $(pf_vfinfo "$IGB_PF" 1 | jq -c .vlan_list)"
}
del_two_pods() {
    cni_ok DEL ctr-a /run/netns/pod-a net1 "$CONF_A"
    cni_ok DEL ctr-b /run/netns/pod-b net1 "$CONF_B"
    ip netns del pod-a
    ip netns del pod-b
}
t_same_vlan_pods_ping() {
    igb_fresh_vfs
    two_pods 100 100
    ip netns exec pod-a ping -c 3 -i 0.3 -W 3 10.78.0.2 || fail "pod a cannot ping pod b on the same VLAN"
    del_two_pods
}
t_different_vlans_do_not_ping() {
    igb_fresh_vfs
    two_pods 100 200
    if ip netns exec pod-a ping -c 3 -i 0.3 -W 1 10.78.0.2; then
        fail "pod a pings pod b across VLANs 100 and 200"
    fi
    del_two_pods
}

# Beyond the brief's list: what igb does to a VF's own MAC handling.
# A VF given `mac` without `trust`: igb marks the MAC administratively set,
# and igbvf only takes it after a driver reload; setting it on the netdev
# (which the plugin does in the pod) is refused for an untrusted VF.
t_mac_without_trust() {
    igb_fresh_vfs
    local ns vf host pf_before host_before conf
    ns=$(pod_netns pod-m)
    vf=$VF0_PCI
    host=$(pci_netdev "$vf")
    pf_before=$(pf_vfinfo "$IGB_PF" 0)
    host_before=$(link_facts "$host")
    conf=$(sriov_conf "$vf" '{"mac": "02:11:22:33:44:88",
        "ipam": {"type": "static", "addresses": [{"address": "10.79.0.2/24"}]}}')
    cni ADD ctr-m "$ns" net1 "$conf"
    if [ "$CNI_RC" != 0 ]; then
        note "ADD failed: $CNI_OUT"
        soft_begin
        expect_json_eq "PF-side vfinfo of VF 0 after the failed ADD (= before)" "$(pf_vfinfo "$IGB_PF" 0)" "$pf_before"
        ip link show "$host" >/dev/null 2>&1 &&
            expect_json_eq "host netdev after the failed ADD (= before)" "$(link_facts "$host")" "$host_before"
        expect_eq "state files" "$(state_files)" ""
        mismatch "ADD with mac and without trust failed on igb (status $CNI_RC)"
        soft_end
    fi
    expect_eq "pod net1 MAC" "$(link_facts net1 pod-m | jq -r .address)" "02:11:22:33:44:88"
    cni_ok DEL ctr-m "$ns" net1 "$(with_prev "$conf" "$CNI_OUT")"
    expect_json_eq "PF-side vfinfo of VF 0 after DEL (= before)" "$(pf_vfinfo "$IGB_PF" 0)" "$pf_before"
    ip netns del pod-m
}

# After ADD (mac, trust on) and DEL, the VF can still change its own MAC from
# its netdev, as it could before: DEL must not leave the MAC
# administratively set when it was not.
t_vf_keeps_control_of_its_mac() {
    igb_fresh_vfs
    local ns vf host orig conf result
    ns=$(pod_netns pod-c)
    vf=$VF0_PCI
    host=$(pci_netdev "$vf")
    orig=$(link_facts "$host" | jq -r .address)
    ip link set "$host" address 02:00:00:00:01:01 || fail "before ADD the VF cannot set its own MAC"
    ip link set "$host" address "$orig" || fail "before ADD the VF cannot set its own MAC back"
    conf=$(sriov_conf "$vf" '{"mac": "02:11:22:33:44:99", "trust": "on"}')
    cni_ok ADD ctr-c "$ns" net1 "$conf"
    result=$CNI_OUT
    cni_ok DEL ctr-c "$ns" net1 "$(with_prev "$conf" "$result")"
    ip netns del pod-c
    host=$(pci_netdev "$vf")
    note "after DEL: PF side $(pf_vfinfo "$IGB_PF" 0 | jq -c '{address, trust}'), host netdev $(link_facts "$host")"
    local err
    err=$(ip link set "$host" address 02:00:00:00:01:02 2>&1) ||
        fail "after ADD+DEL the VF can no longer set its own MAC: $err"
}

# The kernel hands a physical netdev of a dying netns back to the host netns
# (under its pod name, or devN when that is taken): DEL without a netns
# must find it, rename it back and restore MAC and MTU.
t_del_after_pod_netns_deleted() {
    igb_fresh_vfs
    local ns vf host pf_before host_before conf result returned
    ns=$(pod_netns pod-g)
    vf=$VF0_PCI
    host=$(pci_netdev "$vf")
    pf_before=$(pf_vfinfo "$IGB_PF" 0)
    host_before=$(link_facts "$host")
    conf=$(sriov_conf "$vf" '{"vlan": 100, "mac": "02:11:22:33:44:aa", "trust": "on", "mtu": 1400,
        "ipam": {"type": "static", "addresses": [{"address": "10.79.0.3/24"}]}}')
    cni_ok ADD ctr-g "$ns" net1 "$conf"
    result=$CNI_OUT
    ip netns del pod-g
    wait_for 100 has_netdev "$vf" || fail "the VF netdev did not come back to the host after the netns was deleted"
    returned=$(link_facts "$(pci_netdev "$vf")")
    note "after the netns was deleted the host has: $returned (before ADD: $host_before)"
    cni_ok DEL ctr-g "$ns" net1 "$(with_prev "$conf" "$result")"
    soft_begin
    expect_json_eq "PF-side vfinfo of VF 0 after DEL (= before ADD)" "$(pf_vfinfo "$IGB_PF" 0)" "$pf_before"
    expect_json_eq "host netdev after DEL (= before ADD)" "$(link_facts "$(pci_netdev "$vf")")" "$host_before"
    expect_eq "state files after DEL" "$(state_files)" ""
    soft_end
}

vm_test "sriov: ADD mac+vlan/qos+spoofchk+trust+max_tx_rate+mtu, CHECK, DEL restores all, DEL again" t_add_check_del_restores_everything
vm_test "sriov: ADD with link_state is refused and leaves the VF as before" t_refuses_link_state
vm_test "sriov: ADD with min_tx_rate is refused and leaves the VF as before" t_refuses_min_tx_rate
vm_test "sriov: ADD with vlanProto 802.1ad is refused and leaves the VF as before" t_refuses_vlan_8021ad
vm_test "sriov: two pods on one VLAN ping each other" t_same_vlan_pods_ping
vm_test "sriov: pods on different VLANs do not ping" t_different_vlans_do_not_ping
vm_test "sriov: ADD with mac and without trust" t_mac_without_trust
vm_test "sriov: after ADD+DEL the VF can still set its own MAC" t_vf_keeps_control_of_its_mac
vm_test "sriov: pod netns deleted before DEL: DEL restores the PF side and brings the VF home" t_del_after_pod_netns_deleted
vm_summary
