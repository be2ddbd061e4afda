# shellcheck shell=bash
# Helpers for the guest side of the VM lane (sourced by tests/vm/*.sh).
#
# A group script defines test functions and runs each with `vm_test NAME FN`:
# FN runs in a subshell with errexit, so any failing command or `fail` ends
# that test only. Every test prints `PASS: NAME (Ns)` or `FAIL: NAME (Ns)`;
# `vm_summary` prints "N passed, M failed" and returns non-zero on any
# failure. With the results share mounted (run.sh --results), each verdict is
# also appended to /mnt/work/results.txt as `PASS|FAIL <group>/<name> <secs>`.

VM_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRIOV_BIN=${SRIOV_BIN:-$VM_REPO/target/release/sriov}
CNI_PATH=${CNI_PATH:-/usr/lib/cni}
VM_STATE=/run/vm-lane/sriov-state
VM_GROUP=${VM_GROUP:-$(basename "$0" .sh)}
VM_RESULTS=
grep -qs " /mnt/work " /proc/mounts && VM_RESULTS=/mnt/work/results.txt
vm_passed=0
vm_failed=0

if [ "${VM_LANE:-}" != 1 ]; then
    echo "$0 runs inside the VM lane: scripts/vm-lane/run.sh $0 (or scripts/vm-lane/lane.sh)" >&2
    exit 2
fi

vm_record() { # <PASS|FAIL> <name> <secs>
    [ -n "$VM_RESULTS" ] && echo "$1 $VM_GROUP/$2 $3" >>"$VM_RESULTS"
    return 0
}

vm_test() { # <name> <function>
    local name=$1 fn=$2 t0 t1 rc
    echo "=== RUN $name"
    dmesg -C 2>/dev/null || true
    t0=$EPOCHREALTIME
    (
        set -eE -o pipefail
        trap 'echo "  command failed (status $?): $BASH_COMMAND (${BASH_SOURCE[0]##*/}:$LINENO)" >&2' ERR
        "$fn"
    )
    rc=$?
    t1=$EPOCHREALTIME
    local secs
    secs=$(awk -v a="${t0/,/.}" -v b="${t1/,/.}" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" = 0 ]; then
        echo "PASS: $name (${secs}s)"
        vm_passed=$((vm_passed + 1))
        vm_record PASS "$name" "$secs"
    else
        if [ -n "$(dmesg 2>/dev/null)" ]; then
            echo "  kernel log during the test (last 25 lines):"
            dmesg | tail -n 25 | sed 's/^/    /'
        fi
        echo "FAIL: $name (${secs}s)"
        vm_failed=$((vm_failed + 1))
        vm_record FAIL "$name" "$secs"
    fi
}

vm_summary() {
    echo "$VM_GROUP: $vm_passed passed, $vm_failed failed"
    [ "$vm_failed" = 0 ] && [ "$vm_passed" -gt 0 ]
}

# --- assertions (inside a test) --------------------------------------------
fail() {
    echo "  ASSERTION FAILED: $*" >&2
    exit 1
}

# Between `soft_begin` and `soft_end`, failed expectations are counted and
# printed instead of ending the test, so one run shows every difference.
VM_SOFT=0
VM_MISMATCHES=0
mismatch() {
    if [ "$VM_SOFT" = 1 ]; then
        echo "  MISMATCH: $*" >&2
        VM_MISMATCHES=$((VM_MISMATCHES + 1))
    else
        fail "$@"
    fi
}
soft_begin() { VM_SOFT=1; }
soft_end() {
    VM_SOFT=0
    [ "$VM_MISMATCHES" = 0 ] || fail "$VM_MISMATCHES mismatch(es), see above${1:+ ($1)}"
}
note() { echo "  note: $*"; }

expect_eq() { # <what> <got> <want>
    [ "$2" = "$3" ] || mismatch "$1: got [$2], want [$3]"
}

# JSON equality, independent of key order and formatting (one jq run when
# equal: jq costs ~0.4 s per start under TCG).
expect_json_eq() { # <what> <got> <want>
    local eq
    eq=$(jq -n --argjson g "$2" --argjson w "$3" '$g == $w' 2>&1) || fail "$1: not JSON: [$2] / [$3]"
    [ "$eq" = true ] && return 0
    mismatch "$1:
      got  $(jq -cS . <<<"$2")
      want $(jq -cS . <<<"$3")
      diff $(jq -cn --argjson g "$2" --argjson w "$3" '[(($g, $w) | paths(scalars)) as $p
        | select(($g | getpath($p)) != ($w | getpath($p))) | {path: ($p | map(tostring) | join(".")),
          got: ($g | getpath($p)), want: ($w | getpath($p))}] | unique')"
}

# Polls until the command succeeds (it is run anew each time: pass a function
# rather than a command with a $(...) argument, which is expanded only once).
wait_for() { # <tenths of a second> <command...>
    local n=$1
    shift
    while ! "$@" >/dev/null 2>&1; do
        n=$((n - 1))
        [ "$n" -gt 0 ] || return 1
        sleep 0.1
    done
}

# --- CNI ---------------------------------------------------------------------
# cni <CMD> <containerID> <netns path> <ifname> <config JSON>
# Runs the plugin binary $CNI_BIN (default: the production sriov binary) as a
# runtime does. Sets CNI_RC, CNI_OUT (stdout) and CNI_ERR (stderr); never
# fails itself.
cni() {
    local errf
    errf=$(mktemp)
    CNI_RC=0
    CNI_OUT=$(printf '%s' "$5" | env -i PATH="$PATH" CNI_COMMAND="$1" CNI_CONTAINERID="$2" \
        CNI_NETNS="$3" CNI_IFNAME="$4" CNI_PATH="$CNI_PATH" "${CNI_BIN:-$SRIOV_BIN}" 2>"$errf") || CNI_RC=$?
    CNI_ERR=$(cat "$errf")
    rm -f "$errf"
}

# Runs cni and requires success.
cni_ok() {
    cni "$@"
    [ "$CNI_RC" = 0 ] || fail "$1 failed with status $CNI_RC: $CNI_OUT
      stderr: $CNI_ERR"
}

# The sriov config for VF <pci> with the keys of <extra JSON object> merged in;
# stateDir on a tmpfs, sysfs the real one (no sysfsRoot key).
sriov_conf() { # <pci> [extra JSON]
    local extra='{}'
    [ $# -ge 2 ] && extra=$2
    jq -cn --arg dev "$1" --arg state "$VM_STATE" --argjson extra "$extra" \
        '{cniVersion: "1.0.0", name: "vmnet", type: "sriov", deviceID: $dev, stateDir: $state} + $extra'
}

# The config a runtime sends for CHECK and DEL: the ADD config plus prevResult.
with_prev() { # <conf> <result>
    jq -c --argjson prev "$2" '. + {prevResult: $prev}' <<<"$1"
}

# Regular files of the state dir (lock files persist by design, as sriov-cni's).
state_files() {
    [ -d "$VM_STATE" ] || return 0
    # Lock files and per-boot markers (.boot_id) stay by design.
    find "$VM_STATE" -type f ! -name '*.lock' ! -name .boot_id | sort | tr '\n' ' '
}

pod_netns() { # <name>: a fresh netns with lo up; prints its path
    ip netns del "$1" 2>/dev/null || true
    ip netns add "$1"
    ip -n "$1" link set lo up
    echo "/run/netns/$1"
}

# Interface names in a netns, sorted, space separated.
netns_links() { ip -n "$1" -j link show | jq -r '[.[].ifname] | sort | join(" ")'; }

# --- links and VFs -----------------------------------------------------------
# name, MAC, MTU, altnames, ifindex and UP flag of a link: <ifname> [netns]
link_facts() {
    local ns=()
    [ -n "${2:-}" ] && ns=(-n "$2")
    ip "${ns[@]}" -d -j link show "$1" | jq -c '.[0] | {ifname, address, mtu,
        altnames: (.altnames // []), ifindex, up: ((.flags // []) | index("UP") != null)}'
}

# The PF's vfinfo_list entry of VF <index>, as `ip -d -j link show` reports it.
pf_vfinfo() { # <pf ifname> <vf index>
    ip -d -j link show "$1" | jq -c --argjson i "$2" '.[0].vfinfo_list[] | select(.vf == $i)'
}

# The netdev of a PCI function in the host netns ("" when none).
pci_netdev() {
    local d=/sys/bus/pci/devices/$1/net
    # shellcheck disable=SC2012 # interface names are plain
    [ -d "$d" ] && ls "$d" | head -n1
    return 0
}
has_netdev() { [ -n "$(pci_netdev "$1")" ]; }
pci_driver() { basename "$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)" 2>/dev/null || true; }

# IPv4 addresses (with prefix) of a link: <ifname> [netns]
ipv4_addrs() {
    local ns=()
    [ -n "${2:-}" ] && ns=(-n "$2")
    ip "${ns[@]}" -j addr show "$1" |
        jq -r '[.[0].addr_info[] | select(.family == "inet") | "\(.local)/\(.prefixlen)"] | join(" ")'
}
