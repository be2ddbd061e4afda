#!/usr/bin/env bash
# One-time setup of the VM lane (see /work/shared/reference/vm-lane.md and
# scripts/vm-lane/lib.sh for the cache layout). Idempotent: a second run with
# the same kernel and the same init is a no-op apart from a few dpkg queries.
#
# Installs from Debian: QEMU 10 from bookworm-backports (bookworm's 7.2 has no
# igb) and the host tools the guest uses (it sees the host root read-only).
# The 6.12 kernel image, headers and source (bookworm-security, resolved from
# linux-image-6.12-amd64) are downloaded and unpacked into the cache, never
# installed: netdevsim is built from them, and nothing touches /boot.
#
# Environment: VM_LANE_CACHE (default /var/cache/rdma-cni-vm-lane).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../lib/common.sh disable=SC1091
. "$repo/scripts/lib/common.sh"
# shellcheck source=lib.sh disable=SC1091
. "$here/lib.sh"

require_root
export DEBIAN_FRONTEND=noninteractive
t0=$(vm_lane_now)
# Progress lines carry the time since setup started.
vm_lane_log() { echo "vm-lane: [+$(vm_lane_elapsed "$t0" "$(vm_lane_now)") s] $*" >&2; }

# Host tools: QEMU's helpers and everything the guest tests run (the guest
# sees this root). containernetworking-plugins gives /usr/lib/cni/static.
HOST_PACKAGES=(busybox-static cpio kmod zstd xz-utils iproute2 ethtool pciutils jq procps
    iputils-ping rdma-core ibverbs-utils ibverbs-providers containernetworking-plugins)
# Only to build netdevsim (installed when the cache has no kernel yet); the
# Debian headers name gcc-12; their kbuild tools need libelf1, libssl3, pahole.
BUILD_PACKAGES=(make gcc-12 libelf1 libssl3 pahole)

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        vm_lane_log "apt-get update"
        apt-get update -qq >&2
        apt_updated=1
    fi
}

# --- QEMU >= 8 with -device igb, from bookworm-backports --------------------
qemu_has_igb() {
    command -v qemu-system-x86_64 >/dev/null 2>&1 &&
        qemu-system-x86_64 -device help 2>/dev/null | grep -q '"igb"'
}
if ! qemu_has_igb; then
    if ! grep -rqs --include='*.list' --include='*.sources' --include='sources.list' \
        -e 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        vm_lane_log "adding bookworm-backports to /etc/apt/sources.list.d/"
        cat >/etc/apt/sources.list.d/bookworm-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    apt_update
    vm_lane_log "installing qemu-system-x86 from bookworm-backports"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >&2
    qemu_has_igb || vm_lane_die "qemu-system-x86_64 from bookworm-backports has no -device igb"
fi

# --- the kernel: resolve KVER from the meta-package ------------------------
resolve_kver() {
    apt-cache depends "linux-image-$VM_LANE_SERIES-amd64" 2>/dev/null |
        sed -n "s/^ *Depends: linux-image-\(${VM_LANE_SERIES//./\\.}\.[^ ]*-amd64\)\$/\1/p" | head -n1
}
KVER=$(resolve_kver)
if [ -z "$KVER" ] || [ ! -f "$VM_LANE_CACHE/$KVER/complete" ]; then
    # Not cached (or the local package lists are missing): refresh first so a
    # fresh machine gets the kernel the archive has now.
    apt_update
    KVER=$(resolve_kver)
fi
[ -n "$KVER" ] || vm_lane_die "cannot resolve the kernel version from linux-image-$VM_LANE_SERIES-amd64 (is bookworm-security in the apt sources?)"
kdir=$VM_LANE_CACHE/$KVER
mkdir -p "$VM_LANE_CACHE"
# One install round (ensure_packages runs apt-get update before installing).
if [ -f "$kdir/complete" ]; then
    ensure_packages "${HOST_PACKAGES[@]}"
else
    ensure_packages "${HOST_PACKAGES[@]}" "${BUILD_PACKAGES[@]}"
fi

# --- kernel root, vmlinux, netdevsim (cached per KVER) ----------------------
extract_vmlinux() { # <vmlinuz> <out>
    local vmlinuz=$1 out=$2 off
    # zstd (Debian 6.12), then xz (6.1) payloads; the first that decompresses
    # to an ELF image is the kernel.
    for magic in '\x28\xb5\x2f\xfd' '\xfd\x37\x7a\x58\x5a\x00'; do
        for off in $(LC_ALL=C grep -obUaP "$magic" "$vmlinuz" | cut -d: -f1 | head -n 5); do
            if [ "$magic" = '\x28\xb5\x2f\xfd' ]; then
                tail -c +$((off + 1)) "$vmlinuz" | zstd -dcq >"$out" 2>/dev/null || true
            else
                tail -c +$((off + 1)) "$vmlinuz" | xz -dcq >"$out" 2>/dev/null || true
            fi
            if [ "$(head -c 4 "$out" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
                return 0
            fi
        done
    done
    return 1
}

if [ ! -f "$kdir/complete" ]; then
    vm_lane_log "building the kernel part of the cache for $KVER"
    image_version=$(apt-cache show "linux-image-$KVER" | sed -n 's/^Version: //p' | head -n1)
    [ -n "$image_version" ] || vm_lane_die "no linux-image-$KVER in the package lists"
    # Image, headers (with their -common and kbuild parts) and source, all of
    # exactly the image's version, downloaded and unpacked into the cache's
    # scratch directory. Installing linux-headers-KVER would install the
    # kernel image too (it depends on it) and run update-initramfs.
    mapfile -t header_debs < <(echo "linux-headers-$KVER"
        apt-cache depends "linux-headers-$KVER" |
            sed -n 's/^ *Depends: \(linux-\(headers\|kbuild\)-[^ ]*\)$/\1/p' | sort -u)
    tmp=$kdir.tmp
    rm -rf "$tmp"
    mkdir -p "$tmp/debs" "$tmp/build/src"
    vm_lane_log "downloading linux-image-$KVER, ${header_debs[*]}, linux-source-$VM_LANE_SERIES (unpacked, not installed)"
    # apt-get download as root warns that _apt cannot write here: harmless.
    (
        cd "$tmp/debs"
        apt-get download -qq "linux-image-$KVER=$image_version" "${header_debs[@]/%/=$image_version}" \
            "linux-source-$VM_LANE_SERIES=$image_version" 2>"$tmp/download.err"
    ) || {
        cat "$tmp/download.err" >&2
        vm_lane_die "apt-get download failed"
    }
    dpkg-deb -x "$tmp"/debs/linux-image-*.deb "$tmp/kroot"
    extract_vmlinux "$tmp/kroot/boot/vmlinuz-$KVER" "$tmp/vmlinux" ||
        vm_lane_die "cannot extract an ELF vmlinux from vmlinuz-$KVER"

    vm_lane_log "building netdevsim out of tree (Debian kernels do not ship it)"
    hroot=$tmp/build/hroot
    for d in "$tmp"/debs/linux-headers-*.deb "$tmp"/debs/linux-kbuild-*.deb; do
        dpkg-deb -x "$d" "$hroot"
    done
    # The arch headers' Makefile includes the -common one by absolute path.
    sed -i "s#^include /usr/src/#include $hroot/usr/src/#" "$hroot/usr/src/linux-headers-$KVER/Makefile"
    dpkg-deb --fsys-tarfile "$tmp"/debs/linux-source-*.deb |
        tar -xO "./usr/src/linux-source-$VM_LANE_SERIES.tar.xz" |
        tar -xJ -C "$tmp/build/src" --strip-components=1 \
            --wildcards "linux-source-$VM_LANE_SERIES/drivers/net/netdevsim/*"
    make -s -C "$hroot/usr/src/linux-headers-$KVER" M="$tmp/build/src/drivers/net/netdevsim" \
        CONFIG_NETDEVSIM=m -j"$(nproc)" modules >"$tmp/netdevsim-build.log" 2>&1 || {
        tail -n 30 "$tmp/netdevsim-build.log" >&2
        vm_lane_die "netdevsim build failed"
    }
    mkdir -p "$tmp/kroot/lib/modules/$KVER/extra"
    cp "$tmp/build/src/drivers/net/netdevsim/netdevsim.ko" "$tmp/kroot/lib/modules/$KVER/extra/"
    rm -rf "$tmp/build" "$tmp/debs"
    depmod -b "$tmp/kroot" "$KVER"
    touch "$tmp/complete"
    rm -rf "$kdir"
    mv "$tmp" "$kdir"
fi

# --- initramfs: busybox, the 9p/overlay modules, our init -------------------
# busybox-static (which replaces the dynamic busybox package) installs it here.
busybox=/bin/busybox
INITRD_MODULES=(virtio_pci 9pnet_virtio 9p overlay)
initrd_key=$( {
    echo "$KVER ${INITRD_MODULES[*]}"
    sha256sum "$here/init" "$here/setup.sh" "$busybox"
} | sha256sum | cut -d' ' -f1)
if [ "$(cat "$kdir/initrd.key" 2>/dev/null)" != "$initrd_key" ] || [ ! -f "$kdir/initrd.cpio.gz" ]; then
    vm_lane_log "building the initramfs"
    ir=$(mktemp -d)
    trap 'rm -rf "$ir"' EXIT
    mkdir -p "$ir"/{bin,sbin,dev,proc,sys,lower,rw,newroot,lib/modules}
    cp "$busybox" "$ir/bin/busybox"
    ln -s busybox "$ir/bin/sh"
    cp "$here/init" "$ir/init"
    chmod 0755 "$ir/init"
    # request_module runs /proc/sys/kernel/modprobe relative to the initramfs
    # root (the guest command runs chrooted): hop into the real root.
    cat >"$ir/sbin/vm-lane-modprobe" <<'EOF'
#!/bin/sh
exec /bin/busybox chroot /newroot /sbin/modprobe "$@"
EOF
    # Run by the init's uevent listener: loads the driver of a device added
    # later, as udev would.
    cat >"$ir/sbin/vm-lane-hotplug" <<'EOF'
#!/bin/sh
[ "$ACTION" = add ] && [ -n "$MODALIAS" ] && exec /bin/busybox chroot /newroot /sbin/modprobe -bq "$MODALIAS"
exit 0
EOF
    chmod 0755 "$ir/sbin/vm-lane-modprobe" "$ir/sbin/vm-lane-hotplug"
    : >"$ir/modules.list"
    while read -r kind path _; do
        [ "$kind" = insmod ] || continue
        name=$(basename "$path")
        name=${name%.xz}
        name=${name%.zst}
        grep -qx "$name" "$ir/modules.list" && continue
        case $path in
        *.xz) xz -dc "$path" >"$ir/lib/modules/$name" ;;
        *.zst) zstd -dcq "$path" >"$ir/lib/modules/$name" ;;
        *) cp "$path" "$ir/lib/modules/$name" ;;
        esac
        echo "$name" >>"$ir/modules.list"
    done < <(for m in "${INITRD_MODULES[@]}"; do
        modprobe -d "$kdir/kroot" -S "$KVER" --show-depends "$m"
    done)
    (cd "$ir" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) >"$kdir/initrd.cpio.gz.tmp"
    mv "$kdir/initrd.cpio.gz.tmp" "$kdir/initrd.cpio.gz"
    echo "$initrd_key" >"$kdir/initrd.key"
    rm -rf "$ir"
    trap - EXIT
fi
echo "$KVER" >"$VM_LANE_CACHE/kver.tmp"
mv "$VM_LANE_CACHE/kver.tmp" "$VM_LANE_CACHE/kver"

t1=$(vm_lane_now)
vm_lane_log "setup done in $(vm_lane_elapsed "$t0" "$t1") s: kernel $KVER, cache $kdir"
