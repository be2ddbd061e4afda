#!/usr/bin/env bash
# vm-devices: igb2
#
# The seed topology in small, on a real kernel: one node, one pod with the
# cluster's eth0 and two RDMA rails made of real igb SR-IOV VFs, each rail's
# chain run as Multus runs it.
#
#   eth0   Debian's `ptp` with `host-local` IPAM (10.244.0.0/24, default route):
#          the Calico-like default network
#   net1   rail 1: `sriov` (VF 0 of PF 1, ippool IPAM, pool 10.1.0.0/24) -> `coordinator`
#   net2   rail 2: `sriov` (VF 0 of PF 2, ippool IPAM, pool 10.2.0.0/24) -> `coordinator`
#
# The `rdma` plugin, which Multus chains between sriov and coordinator on a
# real rail, is left out: igb has no RDMA device (no RoCE), so there is
# nothing for it to move. Its VM tests are in rxe.sh.
#
# Each PF is its own L2 network (run.sh --devices igb2: two PFs on two QEMU
# hubs). VF 1 of PF N stands for rail N's switch/router: it lives in netns
# gwN with the pool's gateway 10.N.0.254/24 and, on lo, 10.(8+N).0.1, a
# "remote host" reached through that gateway. Both VFs of a rail are on VLAN
# 100 (the pod's through sriov's `vlan`, the gateway's set by hand like an
# access port), so sriov programs something on the PF that DEL must restore.
# Without udev the PFs are eth0 and eth1 in the VM's own netns; the pod's
# eth0 is ptp's veth, in the pod's netns.
#
# The tests run in order on one pod and share state through files in
# /run/vm-lane/seed (vm_test runs each in a subshell): topology, ADD, routes,
# traffic per rail with a negative control, CHECK, DEL.
#
# Binaries: $SRIOV_BIN (lane.sh passes it), $IPPOOL_BIN and $COORDINATOR_BIN
# (default $VM_REPO/target/release/{ippool,coordinator}: build them with
# `cargo build --release -p ippool -p coordinator`), Debian's
# /usr/lib/cni/{ptp,host-local}.
# Runs inside the VM lane: scripts/vm-lane/run.sh --devices igb2 tests/vm/seed.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh disable=SC1091
. "$(dirname "$0")/lib.sh"

IPPOOL_BIN=${IPPOOL_BIN:-$VM_REPO/target/release/ippool}
COORDINATOR_BIN=${COORDINATOR_BIN:-$VM_REPO/target/release/coordinator}
PTP_BIN=/usr/lib/cni/ptp
# sriov finds ippool here; ptp finds host-local.
CNI_PATH=$(dirname "$IPPOOL_BIN"):/usr/lib/cni
SEED=/run/vm-lane/seed
COORD_STATE=$SEED/coordinator
IPPOOL_DATA=$SEED/ippool
HOSTLOCAL_DATA=$SEED/host-local
POD=pod
POD_NS=/run/netns/$POD
CID=seed-pod-0001
RAILS=(1 2)
RAIL_VLAN=100

# --- the binaries ----------------------------------------------------------
t_binaries() {
    local b missing=()
    for b in "$SRIOV_BIN" "$IPPOOL_BIN" "$COORDINATOR_BIN" "$PTP_BIN" /usr/lib/cni/host-local; do
        [ -x "$b" ] || missing+=("$b")
    done
    [ ${#missing[@]} = 0 ] || fail "missing: ${missing[*]} (the release ippool and coordinator come from" \
        "cargo build --release -p ippool -p coordinator; Debian's from containernetworking-plugins)"
}

# --- configs (plain strings: jq costs ~0.4 s per start under TCG) ------------
rail_ip() { echo "10.$1.0.1"; }
rail_gw() { echo "10.$1.0.254"; }
rail_remote() { echo "10.$((8 + $1)).0.1"; }
rail_table() { echo $((100 + $1)); }
rail_prio() { echo $((1100 + $1)); }

ptp_conf() {
    printf '{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"ptp","ipMasq":false,"ipam":{"type":"host-local","dataDir":"%s","ranges":[[{"subnet":"10.244.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}}' \
        "$HOSTLOCAL_DATA"
}

# The rail's ippool section: one IPv4 pool, its gateway, and the rail's
# supernet through the gateway (other nodes' rail-N subnets, as a rail's pool
# usually routes). The remote 10.(8+N).0.1 is outside it on purpose: only the
# coordinator's table default reaches it.
ippool_section() { # <rail>
    local n=$1
    printf '{"type":"ippool","dataDir":"%s","poolsDir":"/nonexistent","default_ipv4_ippool":["rail%s-v4"],"pools":[{"name":"rail%s-v4","subnet":"10.%s.0.0/24","gateway":"10.%s.0.254","routes":[{"dst":"10.%s.0.0/16","gw":"10.%s.0.254"}]}]}' \
        "$IPPOOL_DATA" "$n" "$n" "$n" "$n" "$n" "$n"
}

sriov_rail_conf() { # <rail>
    printf '{"cniVersion":"1.0.0","name":"rail%s","type":"sriov","deviceID":"%s","stateDir":"%s","vlan":%s,"trust":"on","ipam":%s}' \
        "$1" "${VFA[$1]}" "$VM_STATE" "$RAIL_VLAN" "$(ippool_section "$1")"
}

coord_rail_conf() { # <rail>
    printf '{"cniVersion":"1.0.0","name":"rail%s","type":"coordinator","mode":"overlay","podDefaultCniNic":"eth0","stateDir":"%s"}' \
        "$1" "$COORD_STATE"
}

# ippool called alone (as sriov calls it) asking for one address explicitly.
ippool_request_conf() { # <rail> <address>
    printf '{"cniVersion":"1.0.0","name":"rail%s","type":"sriov","runtimeConfig":{"ips":["%s"]},"ipam":%s}' \
        "$1" "$2" "$(ippool_section "$1")"
}

# The config with prevResult, without jq: the configs above end with "}".
prev() { printf '%s,"prevResult":%s}' "${1%\}}" "$2"; }

plugin() { # <binary> <CMD> <ifname> <conf>: one plugin call for the pod, must succeed
    CNI_BIN=$1 cni_ok "$2" "$CID" "$POD_NS" "$3" "$4"
    # Warnings and errors it logged on success go to the log (no grep: a process).
    if [[ ${CNI_ERR,,} == *warn* || ${CNI_ERR,,} == *error* ]]; then
        note "${1##*/} $2 $3 logged: $CNI_ERR"
    fi
    return 0
}

# "eth0-tx netN-tx" (packets) from `ip -s -j link` in the pod.
tx_counts() { # <rail>
    ip -n "$POD" -s -j link show | jq -r --arg n "net$1" \
        '[.[] | {(.ifname): .stats64.tx.packets}] | add | "\(.eth0) \(.[$n])"'
}

# ping <pod's netN address> from gwN with the remote address as source.
# Sends <count> requests 0.3 s apart, then waits at most <timeout> s.
ping_from_remote() { # <rail> <count> <timeout s>
    ip netns exec "gw$1" ping -q -n -c "$2" -i 0.3 -W "$3" -I "$(rail_remote "$1")" "$(rail_ip "$1")"
}

# The pod's IPv4 routes of every table but local, one per line, sorted:
# "<table> <dst> via=<gateway or -> dev=<dev>".
pod_routes() {
    ip -n "$POD" -4 -j route show table all | jq -r '.[] | select(.table != "local")
        | "\(.table // "main") \(.dst) via=\(.gateway // "-") dev=\(.dev)"' | LC_ALL=C sort
}
# The pod's IPv4 rules, one per line: "<priority> <from> <table>".
pod_rules() { ip -n "$POD" -4 -j rule | jq -r '.[] | "\(.priority) \(.src // "all") \(.table)"'; }

need() { # <marker>: an earlier step this test builds on
    [ -e "$SEED/$1" ] || fail "skipped: the step that creates $1 failed (see above)"
}

# --- 0. two PFs, two VFs each; the names go to $SEED/env, which the main
# shell sources so that every later test has them ---
seed_prepare() {
    local d pf pcis=() n
    rm -rf "$SEED" "$VM_STATE"
    mkdir -p "$SEED"
    modprobe igb
    for d in /sys/bus/pci/drivers/igb/0000:*; do
        [ -e "$d" ] && pcis+=("$(basename "$d")")
    done
    [ ${#pcis[@]} = 2 ] || fail "want 2 igb PFs (run.sh --devices igb2), found ${#pcis[@]}: ${pcis[*]}"
    for n in "${RAILS[@]}"; do
        PF_PCI[n]=${pcis[n - 1]}
        wait_for 100 has_netdev "${PF_PCI[n]}" || fail "igb PF ${PF_PCI[n]} has no netdev"
        PF[n]=$(pci_netdev "${PF_PCI[n]}")
        ip link set "${PF[n]}" up
    done
    for n in "${RAILS[@]}"; do
        pf=${PF[n]}
        wait_for 150 grep -qx 1 "/sys/class/net/$pf/carrier" || fail "igb PF $pf has no carrier"
        echo 2 >"/sys/bus/pci/devices/${PF_PCI[n]}/sriov_numvfs"
    done
    for n in "${RAILS[@]}"; do
        d=/sys/bus/pci/devices/${PF_PCI[n]}
        VFA[n]=$(basename "$(readlink "$d/virtfn0")")
        VFB[n]=$(basename "$(readlink "$d/virtfn1")")
        wait_for 300 has_netdev "${VFA[n]}" || fail "VF ${VFA[n]} got no netdev"
        wait_for 300 has_netdev "${VFB[n]}" || fail "VF ${VFB[n]} got no netdev"
        VFA_NAME[n]=$(pci_netdev "${VFA[n]}")
        VFB_NAME[n]=$(pci_netdev "${VFB[n]}")
        echo "  rail $n: PF ${PF_PCI[n]} (${PF[n]}, $(<"/sys/class/net/${PF[n]}/speed") Mb/s);" \
            "pod VF ${VFA[n]} (${VFA_NAME[n]}), gateway VF ${VFB[n]} (${VFB_NAME[n]})"
    done
    declare -p PF PF_PCI VFA VFB VFA_NAME VFB_NAME >"$SEED/env"
}

# --- 1. the rails' gateways; the two rails are separate L2 networks ----------
t_topology() {
    local n ns a b
    for n in "${RAILS[@]}"; do
        ns=gw$n
        ip netns add "$ns"
        ip link set "${PF[n]}" vf 1 vlan "$RAIL_VLAN"
        ip link set "${VFB_NAME[n]}" netns "$ns"
        ip -n "$ns" -b - <<EOF
link set lo up
link set ${VFB_NAME[n]} up
addr add $(rail_gw "$n")/24 dev ${VFB_NAME[n]}
addr add $(rail_remote "$n")/32 dev lo
EOF
    done
    for n in "${RAILS[@]}"; do
        wait_for 150 ip netns exec "gw$n" grep -qx 1 "/sys/class/net/${VFB_NAME[n]}/carrier" ||
            fail "gateway VF ${VFB_NAME[n]} in gw$n has no carrier"
    done
    # Separate L2: the two gateways on one test subnet do not reach each other.
    a=${VFB_NAME[1]} b=${VFB_NAME[2]}
    ip -n gw1 addr add 10.254.0.1/24 dev "$a"
    ip -n gw2 addr add 10.254.0.2/24 dev "$b"
    if ip netns exec gw1 ping -q -n -c 1 -W 1 -w 2 10.254.0.2 >/dev/null; then
        mismatch "gw1 (rail 1) reaches gw2 (rail 2) at L2: the rails are not separate networks"
    fi
    ip -n gw1 addr del 10.254.0.1/24 dev "$a"
    ip -n gw2 addr del 10.254.0.2/24 dev "$b"
    # The PF side and the pod VFs' netdevs before any plugin runs, for DEL
    # to be compared with.
    for n in "${RAILS[@]}"; do
        ip -d -j link show "${PF[n]}" | jq -c '.[0].vfinfo_list' >"$SEED/pf$n.vfinfo"
        link_facts "${VFA_NAME[n]}" >"$SEED/vf$n.facts"
        note "PF ${PF[n]} VFs before ADD: $(<"$SEED/pf$n.vfinfo"); pod VF ${VFA_NAME[n]}: $(<"$SEED/vf$n.facts")"
    done
    touch "$SEED/gateways"
}

# --- 2. ADD: eth0, then each rail's chain -------------------------------------
t_add() {
    need gateways
    local n result
    pod_netns "$POD" >/dev/null
    plugin "$PTP_BIN" ADD eth0 "$(ptp_conf)"
    printf '%s' "$CNI_OUT" >"$SEED/eth0.result"
    for n in "${RAILS[@]}"; do
        plugin "$SRIOV_BIN" ADD "net$n" "$(sriov_rail_conf "$n")"
        result=$CNI_OUT
        plugin "$COORDINATOR_BIN" ADD "net$n" "$(prev "$(coord_rail_conf "$n")" "$result")"
        # The final result, as the runtime caches it for CHECK and DEL.
        printf '%s' "$CNI_OUT" >"$SEED/rail$n.result"
    done
    note "eth0 result: $(jq -c '{ips, routes}' "$SEED/eth0.result")"
    note "rail 1 final result (as cached): $(<"$SEED/rail1.result")"
    soft_begin
    expect_eq "pod interfaces" "$(netns_links "$POD")" "eth0 lo net1 net2"
    for n in "${RAILS[@]}"; do
        result=$(jq -c '{ips: [.ips[] | {address, gateway}], routes, ifaces: [.interfaces[].name]}' "$SEED/rail$n.result")
        note "rail $n final result: $result"
        expect_json_eq "rail $n result: addresses, routes, interfaces" "$result" \
            "{\"ips\": [{\"address\": \"$(rail_ip "$n")/24\", \"gateway\": \"$(rail_gw "$n")\"}],
              \"routes\": [{\"dst\": \"10.$n.0.0/16\", \"gw\": \"$(rail_gw "$n")\"}], \"ifaces\": [\"net$n\"]}"
        expect_eq "net$n addresses" "$(ipv4_addrs "net$n" "$POD")" "$(rail_ip "$n")/24"
        # What DEL must undo on the PF: sriov programmed VF 0.
        expect_json_eq "rail $n: PF ${PF[n]} VF 0 vlan and trust" \
            "$(ip -d -j link show "${PF[n]}" | jq -c '.[0].vfinfo_list[0] | {vlan_list, trust}')" \
            "{\"vlan_list\": [{\"vlan\": $RAIL_VLAN}], \"trust\": true}"
    done
    # Each plugin keeps state, which DEL must remove.
    [ -n "$(state_files)" ] || mismatch "sriov: no state files after ADD"
    [ -n "$(find "$COORD_STATE" -type f ! -name '*.lock' ! -name .boot_id 2>/dev/null)" ] || mismatch "coordinator: no record after ADD"
    [ -e "$HOSTLOCAL_DATA/k8s-pod-network/10.244.0.2" ] || mismatch "host-local: no record of 10.244.0.2 after ADD"
    soft_end "after ADD"
    touch "$SEED/added"
}

# --- 3. routes and rules as the coordinator documents them --------------------
t_routes() {
    need added
    local all rules n want
    all=$(pod_routes)
    rules=$(pod_rules)
    note "ip rule: $(tr '\n' ';' <<<"$rules")"
    note "routes (table dst via dev): $(tr '\n' ';' <<<"$all")"
    soft_begin
    expect_eq "main table defaults" "$(grep '^main default ' <<<"$all")" "main default via=10.244.0.1 dev=eth0"
    for n in "${RAILS[@]}"; do
        want="$(rail_table "$n") 10.$n.0.0/16 via=$(rail_gw "$n") dev=net$n
$(rail_table "$n") 10.$n.0.0/24 via=- dev=net$n
$(rail_table "$n") default via=$(rail_gw "$n") dev=net$n"
        expect_eq "table $(rail_table "$n")" "$(grep "^$(rail_table "$n") " <<<"$all")" "$want"
        expect_eq "rule for $(rail_ip "$n")" "$(grep " $(rail_ip "$n") " <<<"$rules")" \
            "$(rail_prio "$n") $(rail_ip "$n") $(rail_table "$n")"
    done
    expect_eq "rules" "$(cut -d' ' -f1 <<<"$rules" | tr '\n' ' ')" "0 $(rail_prio 1) $(rail_prio 2) 32766 32767 "
    soft_end
}

# --- 4. traffic from beyond each rail's gateway ---------------------------------
# a. The reply to a request that came in on netN leaves through netN.
ping_answered() { # <rail>
    need added
    local n=$1 before after out
    read -r -a before < <(tx_counts "$n")
    [ ${#before[@]} = 2 ] || fail "no tx counters for eth0 and net$n"
    out=$(ping_from_remote "$n" 3 2) || fail "ping $(rail_ip "$n") from $(rail_remote "$n") in gw$n: $out"
    read -r -a after < <(tx_counts "$n")
    local d_eth0=$((after[0] - before[0])) d_rail=$((after[1] - before[1]))
    note "gw$n: $(grep -m1 'transmitted' <<<"$out"); pod tx packets: net$n +$d_rail, eth0 +$d_eth0"
    soft_begin
    [[ $out == *" 3 received"* ]] || mismatch "not every request was answered"
    [ "$d_rail" -ge 3 ] || mismatch "net$n sent $d_rail packets for 3 replies"
    # eth0 may send one unrelated packet (IPv6 router solicitation, MLD).
    [ "$d_eth0" -le 1 ] || mismatch "eth0 sent $d_eth0 packets during the ping: replies leaked through eth0"
    soft_end
}
t_answered_1() { ping_answered 1; }
t_answered_2() { ping_answered 2; }

# b. Negative control: without the coordinator's `from` rule the same ping
# fails, its replies leaving through eth0 (the main default); coordinator
# CHECK sees the missing rule. The rule is put back as it was (CHECK in the
# next test proves it).
negative_control() { # <rail>
    need added
    local n=$1 before after out ping_rc=0 check_rc check_out rule
    rule=(from "$(rail_ip "$n")" lookup "$(rail_table "$n")" priority "$(rail_prio "$n")")
    ip -n "$POD" rule del "${rule[@]}"
    CNI_BIN=$COORDINATOR_BIN cni CHECK "$CID" "$POD_NS" "net$n" \
        "$(prev "$(coord_rail_conf "$n")" "$(<"$SEED/rail$n.result")")"
    check_rc=$CNI_RC check_out=$CNI_OUT
    read -r -a before < <(tx_counts "$n")
    out=$(ping_from_remote "$n" 2 1) || ping_rc=$?
    read -r -a after < <(tx_counts "$n")
    ip -n "$POD" rule add "${rule[@]}"
    [ "${#before[@]}${#after[@]}" = 22 ] || fail "no tx counters for eth0 and net$n"
    local d_eth0=$((after[0] - before[0])) d_rail=$((after[1] - before[1]))
    note "without the rule: gw$n: exit $ping_rc, $(grep -m1 'transmitted' <<<"$out"); pod tx packets: net$n +$d_rail, eth0 +$d_eth0"
    note "coordinator CHECK without the rule: exit $check_rc, $check_out"
    soft_begin
    [ "$ping_rc" != 0 ] || mismatch "the ping succeeded without the from-rule: the test cannot tell"
    [ "$d_eth0" -ge 2 ] || mismatch "eth0 sent $d_eth0 packets: the 2 replies did not follow the main default"
    [ "$check_rc" != 0 ] || mismatch "coordinator CHECK passed without its rule"
    [[ $check_out =~ \"code\":[[:space:]]*105[^0-9] ]] ||
        mismatch "coordinator CHECK without its rule: want error 105, got $check_out"
    soft_end
}
t_negative_1() { negative_control 1; }
t_negative_2() { negative_control 2; }

# --- 5. CHECK (sriov's CHECK also runs ippool's) --------------------------------
t_check() {
    need added
    local n result
    plugin "$PTP_BIN" CHECK eth0 "$(prev "$(ptp_conf)" "$(<"$SEED/eth0.result")")"
    for n in "${RAILS[@]}"; do
        result=$(<"$SEED/rail$n.result")
        plugin "$SRIOV_BIN" CHECK "net$n" "$(prev "$(sriov_rail_conf "$n")" "$result")"
        plugin "$COORDINATOR_BIN" CHECK "net$n" "$(prev "$(coord_rail_conf "$n")" "$result")"
    done
}

# --- 6. DEL in reverse order ----------------------------------------------------
t_del() {
    need added
    local n result left routes
    # Control: while the pod holds them, the rails' first addresses are taken.
    for n in "${RAILS[@]}"; do
        CNI_BIN=$IPPOOL_BIN cni ADD seed-probe "$POD_NS" net9 "$(ippool_request_conf "$n" "$(rail_ip "$n")")"
        [ "$CNI_RC" != 0 ] || fail "ippool handed out $(rail_ip "$n") while the pod holds it: $CNI_OUT"
        note "before DEL, ippool refuses $(rail_ip "$n") to another attachment: $CNI_OUT"
    done
    for n in 2 1; do
        result=$(<"$SEED/rail$n.result")
        plugin "$COORDINATOR_BIN" DEL "net$n" "$(prev "$(coord_rail_conf "$n")" "$result")"
        plugin "$SRIOV_BIN" DEL "net$n" "$(prev "$(sriov_rail_conf "$n")" "$result")"
    done
    soft_begin
    expect_eq "pod interfaces after the rails' DEL" "$(netns_links "$POD")" "eth0 lo"
    expect_eq "pod rules after the rails' DEL" "$(pod_rules | tr '\n' ';')" "0 all local;32766 all main;32767 all default;"
    routes=$(pod_routes)
    expect_eq "pod routes outside main after the rails' DEL" "$(grep -v '^main ' <<<"$routes" || true)" ""
    expect_eq "pod main routes after the rails' DEL" "$(grep -v 'dev=eth0$' <<<"$routes" || true)" ""
    expect_eq "pod main default after the rails' DEL" "$(grep '^main default ' <<<"$routes")" \
        "main default via=10.244.0.1 dev=eth0"
    soft_end "after the rails' DEL"

    plugin "$PTP_BIN" DEL eth0 "$(prev "$(ptp_conf)" "$(<"$SEED/eth0.result")")"
    soft_begin
    expect_eq "pod interfaces after DEL of eth0" "$(netns_links "$POD")" "lo"
    for n in "${RAILS[@]}"; do
        expect_eq "rail $n: the VF's netdev on the host" "$(pci_netdev "${VFA[n]}")" "${VFA_NAME[n]}"
        if ip link show "${VFA_NAME[n]}" >/dev/null 2>&1; then
            expect_json_eq "rail $n: host netdev ${VFA_NAME[n]} after DEL (= before ADD)" \
                "$(link_facts "${VFA_NAME[n]}")" "$(<"$SEED/vf$n.facts")"
        fi
        expect_json_eq "rail $n: PF ${PF[n]} VFs after DEL (= before ADD)" \
            "$(ip -d -j link show "${PF[n]}" | jq -c '.[0].vfinfo_list')" "$(<"$SEED/pf$n.vfinfo")"
        # ippool released the address: an explicit request for it succeeds
        # (a plain ADD would not tell: the file store allocates next-fit).
        CNI_BIN=$IPPOOL_BIN cni ADD seed-probe "$POD_NS" net9 "$(ippool_request_conf "$n" "$(rail_ip "$n")")"
        if [ "$CNI_RC" = 0 ]; then
            CNI_BIN=$IPPOOL_BIN cni DEL seed-probe "$POD_NS" net9 "$(ippool_request_conf "$n" "$(rail_ip "$n")")"
            [ "$CNI_RC" = 0 ] || mismatch "ippool DEL of the probe failed: $CNI_OUT"
        else
            mismatch "rail $n: $(rail_ip "$n") is still taken after DEL: $CNI_OUT"
        fi
    done
    expect_eq "sriov state files after DEL" "$(state_files)" ""
    left=$(find "$COORD_STATE" -type f ! -name '*.lock' ! -name .boot_id 2>/dev/null | sort | tr '\n' ' ')
    expect_eq "coordinator state files after DEL" "$left" ""
    [ ! -e "$HOSTLOCAL_DATA/k8s-pod-network/10.244.0.2" ] || mismatch "host-local still holds 10.244.0.2"
    soft_end "after DEL"
    note "ippool dataDir (pool state files stay by design): $(find "$IPPOOL_DATA" -type f -printf '%f ' 2>/dev/null)"
    note "coordinator stateDir: $(find "$COORD_STATE" -type f -printf '%f ' 2>/dev/null)"
    ip netns del "$POD"
}

vm_test "seed: release binaries and Debian's ptp/host-local present" t_binaries
if [ "$vm_failed" != 0 ]; then
    vm_summary
    exit 1
fi
vm_test "seed: two igb PFs up with carrier, 2 VFs each with igbvf netdevs" seed_prepare
if [ ! -s "$SEED/env" ]; then
    vm_summary
    exit 1
fi
# shellcheck disable=SC1091
. "$SEED/env"

vm_test "seed: rail gateways gw1, gw2 on VF 1 of each PF; the rails are separate L2 networks" t_topology
vm_test "seed: ADD eth0 (ptp + host-local), then net1 and net2 (sriov + ippool -> coordinator)" t_add
vm_test "seed: main default only via eth0; per-rail tables 101/102 and from-rules" t_routes
vm_test "seed: rail 1: a request from beyond gw1 is answered through net1, not eth0" t_answered_1
vm_test "seed: rail 2: a request from beyond gw2 is answered through net2, not eth0" t_answered_2
vm_test "seed: rail 1 negative control: without the from-rule the reply goes via eth0 and is lost" t_negative_1
vm_test "seed: rail 2 negative control: without the from-rule the reply goes via eth0 and is lost" t_negative_2
vm_test "seed: CHECK of ptp, and of sriov and coordinator on both rails" t_check
vm_test "seed: DEL coordinator, sriov per rail, then ptp: VFs, PF side, addresses, state restored" t_del
ip -all netns delete 2>/dev/null || true
vm_summary
