# shellcheck shell=bash
# Shared by the VM lane's scripts (sourced, never run).
#
# The cache holds everything setup.sh builds, one directory per kernel ABI
# version (KVER), plus the file `kver` naming the one run.sh boots:
#
#   $VM_LANE_CACHE/kver                     e.g. 6.12.117+deb12-amd64
#   $VM_LANE_CACHE/<KVER>/kroot/            the unpacked linux-image deb, netdevsim in extra/
#   $VM_LANE_CACHE/<KVER>/vmlinux           uncompressed kernel (QEMU boots it via PVH)
#   $VM_LANE_CACHE/<KVER>/initrd.cpio.gz    busybox + 9p/overlay modules + scripts/vm-lane/init
#   $VM_LANE_CACHE/<KVER>/initrd.key        what the initrd was built from (rebuilt when it changes)
#   $VM_LANE_CACHE/<KVER>/complete          written last: the kernel part is usable

VM_LANE_CACHE=${VM_LANE_CACHE:-/var/cache/rdma-cni-vm-lane}
# The kernel series the lane boots; the exact ABI version is resolved from
# Debian's meta-package linux-image-<series>-amd64 at setup time.
VM_LANE_SERIES=${VM_LANE_SERIES:-6.12}
# The QEMU binary run.sh starts (tests of the lane itself may substitute one).
VM_LANE_QEMU=${VM_LANE_QEMU:-qemu-system-x86_64}

vm_lane_log() { echo "vm-lane: $*" >&2; }
vm_lane_die() {
    echo "vm-lane: ERROR: $*" >&2
    exit 1
}

# Seconds since the epoch with milliseconds, and a difference of two such.
vm_lane_now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
vm_lane_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
