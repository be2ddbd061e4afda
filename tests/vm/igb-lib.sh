# shellcheck shell=bash
# The emulated igb PF (run.sh --devices igb or igb-iommu): sourced after lib.sh.
#
# igb_prepare: loads igb, finds the PF and brings it up (igb refuses max_tx_rate while
#   the PF is down), waits for its carrier. Sets IGB_PF_PCI, IGB_PF.
# igb_fresh_vfs: a clean slate for one test: deletes every netns and the
#   plugin's state dir, recreates 2 VFs (sriov_numvfs 0 -> 2) and waits for
#   their igbvf netdevs. Sets VF0_PCI, VF1_PCI.

igb_prepare() {
    IGB_PF_PCI=
    local d
    modprobe igb
    for d in /sys/bus/pci/drivers/igb/0000:*; do
        [ -e "$d" ] && IGB_PF_PCI=$(basename "$d") && break
    done
    if [ -z "$IGB_PF_PCI" ]; then
        echo "no igb PF in this VM (run.sh --devices igb)" >&2
        return 1
    fi
    wait_for 100 has_netdev "$IGB_PF_PCI" || { echo "igb PF has no netdev" >&2; return 1; }
    IGB_PF=$(pci_netdev "$IGB_PF_PCI")
    ip link set "$IGB_PF" up
    wait_for 150 grep -qx 1 "/sys/class/net/$IGB_PF/carrier" || { echo "igb PF $IGB_PF has no carrier" >&2; return 1; }
    echo "igb PF $IGB_PF_PCI ($IGB_PF, MTU $(cat "/sys/class/net/$IGB_PF/mtu"), $(cat "/sys/class/net/$IGB_PF/speed") Mb/s), sriov_totalvfs $(cat "/sys/bus/pci/devices/$IGB_PF_PCI/sriov_totalvfs")"
}

igb_fresh_vfs() {
    local dev=/sys/bus/pci/devices/$IGB_PF_PCI
    ip -all netns delete 2>/dev/null || true
    rm -rf "$VM_STATE"
    if [ "$(cat "$dev/sriov_numvfs")" != 0 ]; then
        echo 0 >"$dev/sriov_numvfs"
    fi
    echo 2 >"$dev/sriov_numvfs"
    VF0_PCI=$(basename "$(readlink "$dev/virtfn0")")
    VF1_PCI=$(basename "$(readlink "$dev/virtfn1")")
    # igbvf is loaded by the guest's uevent listener; its netdevs come up
    # asynchronously, and igbvf reports its random MAC to the PF at probe.
    wait_for 300 has_netdev "$VF0_PCI" || fail "VF $VF0_PCI got no netdev"
    wait_for 300 has_netdev "$VF1_PCI" || fail "VF $VF1_PCI got no netdev"
    echo "  VFs: 0=$VF0_PCI ($(pci_netdev "$VF0_PCI")), 1=$VF1_PCI ($(pci_netdev "$VF1_PCI"))"
}
