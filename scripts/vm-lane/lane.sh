#!/usr/bin/env bash
# The VM lane: real-kernel tests of the suite under QEMU/TCG (see
# /work/shared/reference/vm-lane.md). Must run as root.
#
#   scripts/vm-lane/lane.sh [--no-build] [GROUP...]
#
# 1. setup.sh (cached in $VM_LANE_CACHE, default /var/cache/rdma-cni-vm-lane);
# 2. builds the production plugins (target/release/{sriov,rdma,ib-sriov,ippool,coordinator}) and the
#    vm_vf_programming and vm_rdma test executables (--features vm-lane)
#    unless --no-build (which takes the newest target/debug/deps/<name>-*);
# 3. boots once with `true` (boot time; a machine where QEMU cannot run at all
#    is reported as "VM LANE SKIPPED: <reason>" on stderr, exit 0);
# 4. runs each test group in its own VM: every tests/vm/*.sh whose header has
#    a line `# vm-devices: none|igb|igb2|igb-iommu` (run.sh --devices); GROUP
#    arguments (e.g. igb) select some. A new group (a new plugin, rxe, ...)
#    is a new file there; new hardware is a new --devices case in run.sh.
# Prints every test's PASS/FAIL with its time, each VM run's timings, and the
# setup, build and run times. Exit 0 when every test passed, 1 otherwise (a
# guest that never reports, or a group that ran no test, is a failure).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
# shellcheck source=../lib/common.sh disable=SC1091
. scripts/lib/common.sh
# shellcheck source=lib.sh disable=SC1091
. "$here/lib.sh"

build=1
selected=()
for a in "$@"; do
    case $a in
    --no-build) build=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
        exit 0
        ;;
    -*) vm_lane_die "unknown option $a" ;;
    *) selected+=("$a") ;;
    esac
done
require_root

t_start=$(vm_lane_now)
work=$(mktemp -d /tmp/vm-lane.XXXXXX)
echo "== VM lane (logs in $work)"

# --- 1. setup ----------------------------------------------------------------
echo "== setup"
bash "$here/setup.sh" || vm_lane_die "setup failed (see above)"
t_setup=$(vm_lane_now)

# --- 2. build ----------------------------------------------------------------
test_bin=
if [ "$build" = 1 ]; then
    echo "== build: cargo build --release -p sriov -p rdma -p ib-sriov -p ippool -p coordinator -p rdma-hostprep; cargo test -p integration --features vm-lane --test vm_vf_programming --test vm_rdma --no-run"
    cargo build --release -p sriov -p rdma -p ib-sriov -p ippool -p coordinator -p rdma-hostprep
    # Only these test targets: the other integration tests are not needed here.
    cargo test -p integration --features vm-lane --test vm_vf_programming --test vm_rdma --no-run \
        --message-format=json >"$work/build.json"
fi
rdma_bin=
if [ -s "$work/build.json" ]; then
    test_bin=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "vm_vf_programming")
        | .executable // empty' "$work/build.json" | tail -n1)
    rdma_bin=$(jq -r 'select(.reason == "compiler-artifact" and .target.name == "vm_rdma")
        | .executable // empty' "$work/build.json" | tail -n1)
else
    # --no-build: the newest executable cargo left (built with --features vm-lane, or
    # its tests report ignored and netdevsim.sh fails them).
    for f in target/debug/deps/vm_vf_programming-*; do
        [ -x "$f" ] && [ "$f" -nt "${test_bin:-/nonexistent}" ] && test_bin=$f
    done
    # (rxe.sh fails its tests when this one is missing.)
    for f in target/debug/deps/vm_rdma-*; do
        [ -x "$f" ] && [ "$f" -nt "${rdma_bin:-/nonexistent}" ] && rdma_bin=$f
    done
fi
for b in sriov rdma ib-sriov ippool coordinator; do
    [ -x "target/release/$b" ] || vm_lane_die "target/release/$b is missing (run without --no-build)"
done
[ -n "$test_bin" ] || vm_lane_die "no vm_vf_programming test executable (run without --no-build)"
t_build=$(vm_lane_now)

# --- 3. can QEMU run here? ---------------------------------------------------
echo "== boot check (run.sh true)"
set +e
"$here/run.sh" --timeout 180 --timing "$work/boot.timing" --log "$work/boot.serial.log" true
rc=$?
set -e
if [ "$rc" = 126 ]; then
    reason=$(tail -n 3 "$work/boot.serial.log" 2>/dev/null | tr '\n' ' ' || true)
    {
        echo
        echo "############################################################"
        echo "VM LANE SKIPPED: QEMU cannot run on this machine: $VM_LANE_QEMU -accel tcg failed to start: ${reason:-no output}"
        echo "No VM test ran."
        echo "############################################################"
    } >&2
    exit 0
fi
[ "$rc" = 0 ] || vm_lane_die "the lane's guest does not boot (run.sh true exited $rc): see above"

# --- 4. the test groups --------------------------------------------------------
groups=()
for f in tests/vm/*.sh; do
    grep -q '^# vm-devices:' "$f" || continue
    g=$(basename "$f" .sh)
    if [ ${#selected[@]} -gt 0 ] && [[ " ${selected[*]} " != *" $g "* ]]; then
        continue
    fi
    groups+=("$g")
done
[ ${#groups[@]} -gt 0 ] || vm_lane_die "no test group selected (tests/vm/*.sh with a '# vm-devices:' line)"

declare -A group_rc group_timing group_devices
for g in "${groups[@]}"; do
    devices=$(sed -n 's/^# vm-devices: *\([a-z0-9-]*\).*/\1/p' "tests/vm/$g.sh" | head -n1)
    group_devices[$g]=$devices
    mkdir -p "$work/$g"
    echo "== $g (devices: $devices)"
    set +e
    "$here/run.sh" --devices "$devices" --results "$work/$g" --timing "$work/$g.timing" \
        --log "$work/$g.serial.log" --env "SRIOV_BIN=$repo/target/release/sriov" \
        --env "RDMA_BIN=$repo/target/release/rdma" \
        --env "VM_VF_TEST_BIN=$test_bin" --env "VM_RDMA_TEST_BIN=$rdma_bin" -- "tests/vm/$g.sh"
    group_rc[$g]=$?
    set -e
    group_timing[$g]=$(cat "$work/$g.timing" 2>/dev/null || true)
done
t_end=$(vm_lane_now)

# --- summary -------------------------------------------------------------------
passed=0
failed=0
echo
echo "================ VM lane summary ================"
for g in "${groups[@]}"; do
    rc=${group_rc[$g]}
    results=$work/$g/results.txt
    n=0
    if [ -s "$results" ]; then
        # Lines of tests/vm/lib.sh: "PASS|FAIL <group>/<name, may have spaces> <secs>"
        while IFS= read -r line; do
            verdict=${line%% *}
            rest=${line#* }
            printf '%-4s %6ss  %s\n' "$verdict" "${rest##* }" "${rest% *}"
            n=$((n + 1))
            if [ "$verdict" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
        done <"$results"
    fi
    if [ "$rc" != 0 ] && ! grep -q '^FAIL' "$results" 2>/dev/null; then
        printf '%-4s %6s   %s\n' FAIL - "$g: the guest exited $rc without a failing test (125: never reported; 126: QEMU failed)"
        failed=$((failed + 1))
    elif [ "$n" = 0 ]; then
        printf '%-4s %6s   %s\n' FAIL - "$g: ran no test"
        failed=$((failed + 1))
    fi
done
echo "-------------------------------------------------"
echo "VM runs (boot-to-command is wall time from starting QEMU to the guest command):"
printf '  %-10s %-10s %s\n' boot none "$(cat "$work/boot.timing")"
for g in "${groups[@]}"; do
    printf '  %-10s %-10s %s exit=%s\n' "$g" "${group_devices[$g]}" "${group_timing[$g]}" "${group_rc[$g]}"
done
echo "setup: $(vm_lane_elapsed "$t_start" "$t_setup") s; build: $(vm_lane_elapsed "$t_setup" "$t_build") s;" \
    "VM runs: $(vm_lane_elapsed "$t_build" "$t_end") s; total: $(vm_lane_elapsed "$t_start" "$t_end") s"
echo "logs: $work"
echo "vm-lane: $passed passed, $failed failed"
[ "$failed" = 0 ]
