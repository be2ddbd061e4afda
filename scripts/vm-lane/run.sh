#!/usr/bin/env bash
# Boots the lane's kernel under QEMU (TCG) with the host root shared
# read-only, runs one command inside and exits with its status.
#
#   scripts/vm-lane/run.sh [options] [--] COMMAND [ARG...]
#
# COMMAND runs in the guest as root under bash, in the caller's working
# directory (the host tree is visible at the same paths), with the guest's
# output on our stdout. Options:
#   --devices none|igb|igb-iommu|igb2   emulated hardware (default none):
#        igb        an igb PF (8086:10c9, 7 VFs possible) behind a pcie-root-port
#        igb-iommu  the same plus intel-iommu (intel_iommu=on iommu=pt) for vfio-pci
#        igb2       two igb PFs (0000:01:00.0 and 0000:02:00.0), each behind its
#                   own pcie-root-port and on its own QEMU hub (hubid 0 and 1):
#                   two separate L2 networks, one per rail, as in a
#                   rail-optimized fabric (traffic between VFs of one PF is
#                   switched inside that PF; nothing crosses between the PFs)
#   --results DIR   share DIR read-write; the guest sees it at /mnt/work
#   --env NAME=VAL  export NAME in the guest (repeatable)
#   --mem SIZE      guest memory (default 1G)    --smp N   vCPUs (default 2)
#   --timeout S     kill the guest after S seconds (default 600)
#   --log FILE      keep the serial log here (default: a temporary file)
#   --timing FILE   write "boot_to_command=S command=S total=S" there
#
# Exit status: the command's (0..127; QEMU reports it through isa-debug-exit),
#   122  the guest's init failed (9p/overlay mount, modules, cd to the caller's
#        directory): its message is on the console
#   125  the guest never reported a status (panic, hang, timeout): the serial
#        log's tail is printed
#   126  QEMU itself failed (could not start, or died without guest output)
#   2    usage error, or setup.sh has not been run
# A timing line "vm-lane: boot-to-command ..." goes to stderr.
# QEMU options are comma-separated by design:
# shellcheck disable=SC2054
set -euo pipefail
shopt -s lastpipe
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh disable=SC1091
. "$here/lib.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
}

devices=none results='' mem=1G smp=2 timeout=600 log='' timing_file=''
envs=()
while [ $# -gt 0 ]; do
    case $1 in
    --devices) devices=${2:?}; shift 2 ;;
    --results) results=${2:?}; shift 2 ;;
    --env) envs+=("${2:?}"); shift 2 ;;
    --mem) mem=${2:?}; shift 2 ;;
    --smp) smp=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --log) log=${2:?}; shift 2 ;;
    --timing) timing_file=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    --) shift; break ;;
    -*) echo "run.sh: unknown option $1" >&2; usage ;;
    *) break ;;
    esac
done
[ $# -gt 0 ] || usage

kver=$(cat "$VM_LANE_CACHE/kver" 2>/dev/null || true)
kdir=$VM_LANE_CACHE/$kver
if [ -z "$kver" ] || [ ! -f "$kdir/complete" ] || [ ! -f "$kdir/initrd.cpio.gz" ]; then
    echo "run.sh: no VM lane cache in $VM_LANE_CACHE: run scripts/vm-lane/setup.sh first" >&2
    exit 2
fi

# The guest command: the caller's directory, the --env variables, then COMMAND.
cmd="cd $(printf '%q' "$PWD") || exit 122;"
for e in "${envs[@]}"; do
    [[ $e == [A-Za-z_]*=* ]] || { echo "run.sh: --env wants NAME=VALUE, got $e" >&2; exit 2; }
    cmd+=" export ${e%%=*}=$(printf '%q' "${e#*=}");"
done
cmd+=" exec$(printf ' %q' "$@")"
cmd64=$(printf '%s' "$cmd" | base64 -w0)
[ ${#cmd64} -le 1800 ] || { echo "run.sh: command too long for the kernel command line" >&2; exit 2; }

append="console=ttyS0 quiet loglevel=1 panic=-1 rdinit=/init vmkroot=$kdir/kroot vmcmd=$cmd64"
machine=(-machine q35)
devargs=()
case $devices in
none) ;;
igb | igb-iommu)
    if [ "$devices" = igb-iommu ]; then
        machine=(-machine q35,kernel-irqchip=split -device intel-iommu,intremap=on,caching-mode=on)
        append+=" intel_iommu=on iommu=pt"
    fi
    devargs=(-device pcie-root-port,id=rp1,slot=1,chassis=1
        -device igb,bus=rp1,netdev=n1 -netdev hubport,id=n1,hubid=0)
    ;;
igb2)
    devargs=(-device pcie-root-port,id=rp1,slot=1,chassis=1
        -device igb,bus=rp1,netdev=n1 -netdev hubport,id=n1,hubid=0
        -device pcie-root-port,id=rp2,slot=2,chassis=2
        -device igb,bus=rp2,netdev=n2 -netdev hubport,id=n2,hubid=1)
    ;;
*) echo "run.sh: unknown --devices $devices" >&2; exit 2 ;;
esac
share=()
if [ -n "$results" ]; then
    mkdir -p "$results"
    share=(-fsdev "local,id=fsw,path=$(cd "$results" && pwd),security_model=none"
        -device virtio-9p-pci,fsdev=fsw,mount_tag=work)
    append+=" vmwork"
fi

tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
[ -n "$log" ] || log=$tmpdir/serial.log
qerr=$tmpdir/qemu.err
: >"$log"

qemu=("$VM_LANE_QEMU" -accel tcg,thread=multi -cpu max "${machine[@]}" -m "$mem" -smp "$smp"
    -nographic -no-reboot -nodefaults -serial stdio -vga none
    -kernel "$kdir/vmlinux" -initrd "$kdir/initrd.cpio.gz" -append "$append"
    -fsdev local,id=fsroot,path=/,security_model=none,readonly=on,multidevs=remap
    -device virtio-9p-pci,fsdev=fsroot,mount_tag=hostroot
    -device isa-debug-exit,iobase=0xf4,iosize=0x04
    "${share[@]}" "${devargs[@]}")

t0=$(vm_lane_now)
t_boot='' t_cmd='' exit_rc='' serial_lines=0
# Stream the serial console to stdout and the log, timestamping the markers;
# what comes before VMLANE-BOOT (firmware noise) only goes to the log.
set +e
timeout -k 10 "$timeout" "${qemu[@]}" </dev/null 2>"$qerr" |
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line%$'\r'}
        serial_lines=$((serial_lines + 1))
        case $line in
        *VMLANE-BOOT*) t_boot=$(vm_lane_now) ;;
        *VMLANE-CMD-START*) t_cmd=$(vm_lane_now) ;;
        *VMLANE-EXIT*)
            read -r exit_rc _ <<<"${line##*VMLANE-EXIT }"
            ;;
        *) [ -n "$t_boot" ] && printf '%s\n' "$line" ;;
        esac
        printf '%s\n' "$line" >>"$log"
    done
status=${PIPESTATUS[0]}
set -e
t1=$(vm_lane_now)
# QEMU's stderr (also kept in the log): the hubport warnings ("hub N is not
# connected to host network", one per hub) are expected with the igb kinds
# and harmless.
grep -Ev "hub [0-9]+ is not connected to host network" "$qerr" | tee -a "$log" >&2 || true

timing="total $(vm_lane_elapsed "$t0" "$t1") s"
[ -n "$t_cmd" ] && timing="boot-to-command $(vm_lane_elapsed "$t0" "$t_cmd") s, command $(vm_lane_elapsed "$t_cmd" "$t1") s, $timing"
echo "vm-lane: $timing (devices: $devices)" >&2
if [ -n "$timing_file" ]; then
    printf 'boot_to_command=%s command=%s total=%s\n' \
        "${t_cmd:+$(vm_lane_elapsed "$t0" "$t_cmd")}" "${t_cmd:+$(vm_lane_elapsed "$t_cmd" "$t1")}" \
        "$(vm_lane_elapsed "$t0" "$t1")" >"$timing_file"
fi

if [ -n "$exit_rc" ] && [ $((status & 1)) = 1 ] && [ $((status >> 1)) = "$exit_rc" ]; then
    exit "$exit_rc"
fi
tail_log() {
    echo "vm-lane: ---- last lines of the serial log ----" >&2
    tail -n 40 "$log" >&2
    echo "vm-lane: ----" >&2
}
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "vm-lane: ERROR: the guest did not finish within ${timeout} s (killed)" >&2
    tail_log
    exit 125
fi
if [ "$serial_lines" = 0 ] && [ "$status" != 0 ]; then
    echo "vm-lane: ERROR: QEMU failed (exit status $status) before the guest printed anything" >&2
    exit 126
fi
if [ -n "$exit_rc" ]; then
    echo "vm-lane: ERROR: the guest reported status $exit_rc but QEMU exited with $status (isa-debug-exit failed?)" >&2
else
    echo "vm-lane: ERROR: the guest never reported a status (QEMU exit status $status: kernel panic or init failure?)" >&2
fi
tail_log
exit 125
