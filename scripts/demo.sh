#!/usr/bin/env bash
# Shows the `sriov` CNI plugin at work on a machine without SR-IOV hardware:
# a veth end stands in for the VF and a simulated PF (a JSON file in a fake
# sysfs tree) takes the PF-side settings. Runs ADD, CHECK, DEL and DEL again
# exactly as a container runtime does, printing what changes. Must run as root;
# everything it creates is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib/common.sh disable=SC1091
. scripts/lib/common.sh

require_root
ensure_packages iproute2 containernetworking-plugins jq iputils-ping

if [ -t 1 ]; then BOLD=$'\e[1;4m' RED=$'\e[1;31m' OFF=$'\e[0m'; else BOLD='' RED='' OFF=''; fi
step() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$OFF"; }
fail() { printf '%sFAILED: %s%s\n' "$RED" "$*" "$OFF" >&2; exit 1; }

POD=demo-pod-$$ SW=demo-sw-$$
VF=dvf$$ PEER=dsw$$         # "dvf" + a pid of at most 7 digits: within IFNAMSIZ (15)
VF=${VF:0:15} PEER=${PEER:0:15}
PF_PCI=0000:af:00.1 VF_PCI=0000:af:06.0
TMP=$(mktemp -d /tmp/sriov-demo.XXXXXX)
SYS=$TMP/sys STATE=$TMP/state
PFDIR=$SYS/bus/pci/devices/$PF_PCI
PLUGIN=target/testbin/debug/sriov

cleanup() {
    ip netns del "$POD" 2>/dev/null || true
    ip netns del "$SW" 2>/dev/null || true   # takes the veth pair with it
    ip link del "$VF" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

step "Building the test build of the plugin"
cat <<'EOF'
This machine has no SR-IOV NIC, so the demo uses the plugin's test build: the VF
is stood in by one end of a veth pair, and the PF side (VLAN, MAC, spoofchk,
trust... which a real driver programs on the PF) goes to a simulated PF whose VF
table is a JSON file in a fake sysfs tree. The release binary
(`cargo build --release`) programs real PFs through rtnetlink and is never
built with the simulation.
EOF
command -v cargo >/dev/null || fail "cargo not found in PATH (install Rust from https://rustup.rs; with sudo, keep PATH)"
cargo build -p sriov --features test-build --target-dir target/testbin
[ -x "$PLUGIN" ] || fail "$PLUGIN was not built"

step "Setting up: pod netns, switch netns, stand-in VF, fake sysfs"
ip netns add "$POD"
ip netns add "$SW"
ip link add "$VF" type veth peer name "$PEER" mtu 9000 netns "$SW"   # VF starts at 1500: ADD sets 9000, DEL restores
ip -n "$SW" addr add 192.168.77.1/24 dev "$PEER"
ip -n "$SW" link set "$PEER" up
mkdir -p "$PFDIR/net/pf0" "$SYS/bus/pci/devices/$VF_PCI/net/$VF" "$SYS/bus/pci/drivers/iavf" "$STATE"
echo 9000 >"$PFDIR/net/pf0/mtu"
echo 1 >"$PFDIR/sriov_numvfs"
ln -s "../$VF_PCI" "$PFDIR/virtfn0"
ln -s "../$PF_PCI" "$SYS/bus/pci/devices/$VF_PCI/physfn"
ln -s ../../drivers/iavf "$SYS/bus/pci/devices/$VF_PCI/driver"
echo "pod netns $POD, switch netns $SW (gateway 192.168.77.1 on $PEER), VF $VF_PCI = $VF, PF $PF_PCI = pf0"
echo "fake sysfs: $SYS"

CONF=$(jq -n --arg state "$STATE" --arg sys "$SYS" --arg log "$TMP/sriov.log" '{
    cniVersion: "1.0.0", name: "rail1", type: "sriov",
    deviceID: "0000:af:06.0", vlan: 100, vlanQoS: 2, spoofchk: "off", trust: "on",
    mac: "02:00:00:00:77:02", mtu: 9000, stateDir: $state, sysfsRoot: $sys, logFile: $log,
    ipam: {type: "static",
           addresses: [{address: "192.168.77.2/24", gateway: "192.168.77.1"}],
           routes: [{dst: "10.77.0.0/16"}]}}')

# cni COMMAND CONFIG: runs the plugin as a runtime does; its stdout lands in OUT.
cni() {
    local rc=0
    OUT=$(CNI_COMMAND=$1 CNI_CONTAINERID=demo-$$ CNI_NETNS=/var/run/netns/$POD \
        CNI_IFNAME=net1 CNI_PATH=/usr/lib/cni "$PLUGIN" <<<"$2") || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '%ssriov %s exited %d; its error on stdout:%s\n' "$RED" "$1" "$rc" "$OFF" >&2
        jq . <<<"$OUT" >&2 2>/dev/null || printf '%s\n' "$OUT" >&2
        [ -s "$TMP/sriov.log" ] && { echo "plugin log:" >&2; tail -n 20 "$TMP/sriov.log" >&2; }
        fail "sriov $1"
    fi
}
host_vf() { # the stand-in VF as the host sees it: name, state, MAC, flags, MTU
    local br mtu
    br=$(ip -br link show dev "$VF" | sed "s/ *$//") && mtu=$(cat "/sys/class/net/$VF/mtu") && printf '%s mtu %s' "$br" "$mtu"
}
pf_state() {
    if [ -f "$PFDIR/sim-vf0.json" ]; then cat "$PFDIR/sim-vf0.json"; echo; else echo "(fresh VF: no PF-side settings yet)"; fi
}

step "Host side before ADD"
BEFORE=$(host_vf)
echo "$BEFORE"
echo "PF-side state of VF 0:"
pf_state

step "ADD: the result the runtime caches"
cni ADD "$CONF"
ADD_RESULT=$OUT
jq . <<<"$ADD_RESULT"

step "What the pod sees"
ip -n "$POD" -br addr
ip -n "$POD" -d link show net1 | head -n 2
ip -n "$POD" route
ip link show dev "$VF" >/dev/null 2>&1 && fail "$VF is still in the host netns after ADD"
echo "($VF is gone from the host: it is net1 in the pod now)"

step "PF side after ADD (simulated PF)"
echo "VF 0 state ($PFDIR/sim-vf0.json):"
pf_state
echo "PF-side writes (sim-calls.log):"
cat "$PFDIR/sim-calls.log"

step "Ping the gateway from the pod"
ip netns exec "$POD" ping -c 2 -W 1 192.168.77.1 || fail "ping from the pod to 192.168.77.1"

step "CHECK, with the cached ADD result as prevResult"
CONF_PREV=$(jq --argjson prev "$ADD_RESULT" '.prevResult = $prev' <<<"$CONF")
cni CHECK "$CONF_PREV"
echo "CHECK ok"

step "DEL"
cni DEL "$CONF_PREV"
echo "DEL ok"

step "Host side after DEL"
AFTER=$(host_vf) || fail "$VF is not back in the host under its name"
printf 'before ADD: %s\nafter DEL:  %s\n' "$BEFORE" "$AFTER"
[ "$BEFORE" = "$AFTER" ] || fail "$VF did not come back with its original name, MAC and MTU"
ip -n "$POD" link show net1 >/dev/null 2>&1 && fail "net1 is still in the pod after DEL"
echo "PF-side state of VF 0 (restored):"
pf_state
echo "PF-side writes, ADD then DEL:"
cat "$PFDIR/sim-calls.log"
echo "state dir (only the VF's lock file remains; no attachment record, no claim):"
ls -R "$STATE"
LEFT=$(find "$STATE" -type f ! -name '*.lock')
[ -z "$LEFT" ] || fail "records left in the state dir: $LEFT"

step "DEL again (idempotent)"
cni DEL "$CONF_PREV"
echo "second DEL ok"

step "Done: ADD, CHECK, DEL and DEL again all succeeded"
