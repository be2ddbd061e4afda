#!/usr/bin/env bash
# vm-devices: igb-iommu
#
# DPDK mode of the production `sriov` binary: an igb VF bound to vfio-pci
# (emulated intel-iommu, intel_iommu=on iommu=pt). ADD programs the PF side
# and returns a result without moving a netdev; DEL restores the PF side.
# Runs inside the VM lane: scripts/vm-lane/run.sh --devices igb-iommu tests/vm/dpdk.sh
# shellcheck source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"
# shellcheck source=igb-lib.sh disable=SC1091
. "$(dirname "$0")/igb-lib.sh"

igb_prepare || exit 1

bind_vfio() { # <pci>
    modprobe vfio-pci
    echo vfio-pci >"/sys/bus/pci/devices/$1/driver_override"
    [ -e "/sys/bus/pci/devices/$1/driver" ] && echo "$1" >"/sys/bus/pci/devices/$1/driver/unbind"
    echo "$1" >/sys/bus/pci/drivers_probe
    expect_eq "driver of $1" "$(pci_driver "$1")" vfio-pci
    local group
    group=$(basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")")
    [ -e "/dev/vfio/$group" ] || fail "no /dev/vfio/$group for $1"
    note "$1 bound to vfio-pci, iommu group $group, no netdev: [$(pci_netdev "$1")]"
}

t_userspace_vf_add_check_del() {
    igb_fresh_vfs
    local vf=$VF0_PCI ns pf_before conf result want
    bind_vfio "$vf"
    ns=$(pod_netns pod-d)
    pf_before=$(pf_vfinfo "$IGB_PF" 0)
    note "before ADD: PF side $pf_before"
    conf=$(sriov_conf "$vf" '{"vlan": 100, "vlanQoS": 2, "mac": "02:22:33:44:55:66", "spoofchk": "off"}')
    cni_ok ADD ctr-d "$ns" net1 "$conf"
    result=$CNI_OUT
    note "ADD result: $result"

    soft_begin
    expect_json_eq "ADD result interface" "$(jq -c '.interfaces[0]' <<<"$result")" \
        "{\"name\": \"net1\", \"mac\": \"02:22:33:44:55:66\", \"sandbox\": \"$ns\"}"
    want=$(jq -c '.address = "02:22:33:44:55:66" | .vlan_list = [{vlan: 100, qos: 2}] | .spoofchk = false' <<<"$pf_before")
    expect_json_eq "PF-side vfinfo of VF 0 after ADD" "$(pf_vfinfo "$IGB_PF" 0)" "$want"
    expect_eq "pod interfaces (no netdev moved)" "$(netns_links pod-d)" "lo"
    expect_eq "driver after ADD" "$(pci_driver "$vf")" vfio-pci
    soft_end "after ADD"

    cni_ok CHECK ctr-d "$ns" net1 "$(with_prev "$conf" "$result")"
    cni_ok DEL ctr-d "$ns" net1 "$(with_prev "$conf" "$result")"
    soft_begin
    expect_json_eq "PF-side vfinfo of VF 0 after DEL (= before ADD)" "$(pf_vfinfo "$IGB_PF" 0)" "$pf_before"
    expect_eq "state files after DEL" "$(state_files)" ""
    expect_eq "driver after DEL" "$(pci_driver "$vf")" vfio-pci
    soft_end "after DEL"
    cni_ok DEL ctr-d "$ns" net1 "$(with_prev "$conf" "$result")"
}

# A DPDK application may change the VF's MAC through the PF side while the
# pod runs (sriov-cni #214): DEL without a configured mac puts it back.
t_userspace_vf_del_restores_mac_changed_by_app() {
    igb_fresh_vfs
    local vf=$VF0_PCI ns pf_before conf result
    bind_vfio "$vf"
    ns=$(pod_netns pod-d)
    pf_before=$(pf_vfinfo "$IGB_PF" 0)
    conf=$(sriov_conf "$vf" '{"vlan": 200}')
    cni_ok ADD ctr-d "$ns" net1 "$conf"
    result=$CNI_OUT
    ip link set "$IGB_PF" vf 0 mac 02:99:88:77:66:55
    cni_ok DEL ctr-d "$ns" net1 "$(with_prev "$conf" "$result")"
    expect_json_eq "PF-side vfinfo of VF 0 after DEL (= before ADD)" "$(pf_vfinfo "$IGB_PF" 0)" "$pf_before"
}

vm_test "sriov: vfio-pci VF: ADD programs vlan/qos+mac+spoofchk, no netdev moved, CHECK, DEL restores, DEL again" t_userspace_vf_add_check_del
vm_test "sriov: DEL restores a MAC the application changed" t_userspace_vf_del_restores_mac_changed_by_app
vm_summary
