//! Moving a host netdev into a pod under a new name, and back.
//!
//! Both directions pass through a temporary netns where the rename happens:
//! no udev rule, NetworkManager or other pod can race us for a name there, and
//! a name taken in the destination shows up as one clean EEXIST on the final
//! move. A failure at any point puts the device back where it came from.
//!
//! Plugins pin that temporary netns at a path of their state dir (the
//! `*_pinned` variants): a crash while the device is in transit leaves it
//! there, and [`recover_from_transit`] (DEL, GC, an ADD cleaning up after an
//! interrupted one) brings it home. Unpinned, the kernel would delete a
//! virtual device with the namespace and drop a physical one into the host
//! under its transient name.

use std::os::fd::AsFd;
use std::path::Path;

use crate::error::Error;
use crate::ids::{IfName, MacAddr};
use crate::netlink::{Link, RouteSocket};
use crate::netns::NetNs;

/// What a netdev looked like on the host, restored when it comes back.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetdevOrigin {
    pub name: IfName,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// The host ifindex; the kernel keeps it across netns moves when it can,
    /// which identifies the device after a dying netns hands it back.
    #[serde(default)]
    pub index: u32,
}

impl NetdevOrigin {
    pub fn of(link: &Link) -> Result<NetdevOrigin, Error> {
        Ok(NetdevOrigin {
            name: IfName::parse(&link.name).map_err(|e| Error::Device {
                device: link.name.clone(),
                reason: format!("host interface name {e}"),
            })?,
            mac: MacAddr::from_slice(&link.mac),
            mtu: link.mtu,
            index: link.index,
        })
    }
}

fn gone(name: &str, netns: &str) -> Error {
    Error::Device {
        device: name.to_string(),
        reason: format!("interface disappeared from the {netns} network namespace"),
    }
}

fn find(sock: &RouteSocket, names: &[&str], netns: &str) -> Result<Link, Error> {
    for name in names {
        if let Some(l) = sock.link_by_name(name)? {
            return Ok(l);
        }
    }
    Err(gone(names.first().copied().unwrap_or_default(), netns))
}

/// Renames `link` to `new`, clearing altnames that would block it or that the
/// old name leaves behind (udev and some kernels add one: sriov-cni #250, #445).
pub fn rename(sock: &RouteSocket, link: &Link, new: &str) -> Result<Link, Error> {
    if link.name == new {
        return Ok(link.clone());
    }
    if link.altnames.iter().any(|a| a == new) {
        sock.del_altname(link, new)?;
    }
    sock.rename(link, new)?;
    let renamed = sock
        .link_by_index(link.index)?
        .ok_or_else(|| gone(new, "temporary"))?;
    if renamed.altnames.contains(&link.name) {
        sock.del_altname(&renamed, &link.name)?;
    }
    Ok(renamed)
}

fn move_named(sock: &RouteSocket, link: &Link, to: &NetNs, what: &str) -> Result<(), Error> {
    sock.move_to_netns(link, to.as_fd()).map_err(|e| {
        if e.is_exists() {
            Error::Device {
                device: link.name.clone(),
                reason: format!(
                    "the {what} network namespace already has an interface named {}",
                    link.name
                ),
            }
        } else {
            e.into()
        }
    })
}

/// The temporary netns of a move: pinned at `pin` when given.
fn transit_ns(pin: Option<&Path>) -> Result<NetNs, Error> {
    Ok(match pin {
        Some(p) => NetNs::temporary_pinned(p)?,
        None => NetNs::temporary()?,
    })
}

/// Removes the pin of a move that is over (the namespace is empty).
fn unpin(pin: Option<&Path>) {
    if let Some(p) = pin
        && let Err(e) = NetNs::unpin(p)
    {
        tracing::warn!(error = %e, pin = %p.display(), "cannot remove the pin of a temporary netns");
    }
}

/// Moves `link` from the host into `pod` as `ifname` and returns it as the pod
/// sees it (down; the caller configures and raises it).
pub fn move_into_pod(
    host: &RouteSocket,
    host_ns: &NetNs,
    link: &Link,
    pod: &NetNs,
    pod_sock: &RouteSocket,
    ifname: &IfName,
) -> Result<Link, Error> {
    move_into_pod_pinned(host, host_ns, link, pod, pod_sock, ifname, None)
}

/// [`move_into_pod`] through a temporary netns pinned at `pin` (see the
/// module doc); a crash mid-move leaves the device for [`recover_from_transit`].
pub fn move_into_pod_pinned(
    host: &RouteSocket,
    host_ns: &NetNs,
    link: &Link,
    pod: &NetNs,
    pod_sock: &RouteSocket,
    ifname: &IfName,
    pin: Option<&Path>,
) -> Result<Link, Error> {
    host.set_up(link, false)?;
    let tmp = transit_ns(pin)?;
    let tmp_sock = tmp.route_socket()?;
    host.move_to_netns(link, tmp.as_fd())?;
    let moved = (|| {
        let l = find(&tmp_sock, &[&link.name], "temporary")?;
        let l = rename(&tmp_sock, &l, ifname.as_str())?;
        crate::failpoint::hit("netdev.into_pod.after_rename")?;
        move_named(&tmp_sock, &l, pod, "pod")?;
        pod_sock
            .link_by_name(ifname.as_str())?
            .ok_or_else(|| gone(ifname.as_str(), "pod"))
    })();
    if let Err(e) = &moved {
        // Still in the temporary netns (the final move is the last step):
        // give it back its name and return it to the host.
        let rescue = find(&tmp_sock, &[ifname.as_str(), &link.name], "temporary")
            .and_then(|l| rename(&tmp_sock, &l, &link.name))
            .and_then(|l| move_named(&tmp_sock, &l, host_ns, "host"));
        if let Err(r) = rescue {
            // Left pinned: DEL finds it there.
            tracing::error!(error = %r, device = %link.name, "could not return device to the host after: {e}");
            return moved;
        }
    }
    unpin(pin);
    moved
}

/// Moves the pod's `ifname` back to the host under its original name, MAC and
/// MTU. Ok(false) when the pod has no such interface (already returned, or
/// never moved). On failure the device is put back in the pod, so a retried
/// DEL finds it again.
pub fn return_to_host(
    pod_sock: &RouteSocket,
    pod: &NetNs,
    ifname: &IfName,
    host_ns: &NetNs,
    origin: &NetdevOrigin,
) -> Result<bool, Error> {
    return_to_host_pinned(pod_sock, pod, ifname, host_ns, origin, None)
}

/// [`return_to_host`] through a temporary netns pinned at `pin` (see the
/// module doc); a crash mid-move leaves the device for [`recover_from_transit`].
pub fn return_to_host_pinned(
    pod_sock: &RouteSocket,
    pod: &NetNs,
    ifname: &IfName,
    host_ns: &NetNs,
    origin: &NetdevOrigin,
    pin: Option<&Path>,
) -> Result<bool, Error> {
    let Some(link) = pod_sock.link_by_name(ifname.as_str())? else {
        return Ok(false);
    };
    pod_sock.set_up(&link, false)?;
    let tmp = transit_ns(pin)?;
    let tmp_sock = tmp.route_socket()?;
    pod_sock.move_to_netns(&link, tmp.as_fd())?;
    let returned = (|| {
        let l = find(&tmp_sock, &[&link.name], "temporary")?;
        restore_mac_mtu(&tmp_sock, &l, origin);
        let l = rename(&tmp_sock, &l, origin.name.as_str())?;
        crate::failpoint::hit("netdev.to_host.after_rename")?;
        move_named(&tmp_sock, &l, host_ns, "host")
    })();
    if let Err(e) = &returned {
        let rescue = find(&tmp_sock, &[origin.name.as_str(), &link.name], "temporary")
            .and_then(|l| rename(&tmp_sock, &l, ifname.as_str()))
            .and_then(|l| move_named(&tmp_sock, &l, pod, "pod"));
        if let Err(r) = rescue {
            // Left pinned: a retried DEL finds it there.
            tracing::error!(error = %r, device = %link.name, "could not put device back into the pod after: {e}");
            return returned.map(|()| true);
        }
    }
    unpin(pin);
    returned.map(|()| true)
}

/// After a crash mid-move: every device in the temporary netns pinned at
/// `pin` goes home as `origin` (name, MAC, MTU), and the pin is removed.
/// Ok(false) when nothing was pinned there (the usual case).
pub fn recover_from_transit(
    host_ns: &NetNs,
    pin: &Path,
    origin: &NetdevOrigin,
) -> Result<bool, Error> {
    let ns = match NetNs::open(pin) {
        Ok(ns) => ns,
        // Missing, or the plain file of a crash before the mount.
        Err(e) if e.is_gone() => {
            NetNs::unpin(pin)?;
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    let sock = ns.route_socket()?;
    let mut recovered = false;
    for link in sock.links()?.into_iter().filter(|l| l.name != "lo") {
        tracing::warn!(device = %link.name, host_name = %origin.name, pin = %pin.display(), "returning a device an interrupted move left in transit");
        sock.set_up(&link, false)?;
        restore_mac_mtu(&sock, &link, origin);
        let l = rename(&sock, &link, origin.name.as_str())?;
        move_named(&sock, &l, host_ns, "host")?;
        recovered = true;
    }
    drop(sock);
    drop(ns);
    NetNs::unpin(pin)?;
    Ok(recovered)
}

/// Finds a netdev the kernel handed back to the host on its own (a dying pod
/// netns returns it under its pod name; a driver rebind recreates it under
/// the kernel's) and gives it its original name, MAC and MTU. Candidates are
/// the VF's netdevs as sysfs lists them, then `pod_ifname`, accepted only if
/// it is the same device (same ifindex as when ADD took it): a fake tree or a
/// stale view may not list it. Ok(None) when it is not in the host.
pub fn bring_back(
    host: &RouteSocket,
    sysfs_names: &[IfName],
    pod_ifname: &str,
    origin: &NetdevOrigin,
) -> Result<Option<Link>, Error> {
    let mut found = None;
    let candidates = sysfs_names
        .iter()
        .map(|n| (n.as_str(), true))
        .chain([(pod_ifname, false)]);
    for (name, from_sysfs) in candidates {
        if let Some(l) = host.link_by_name(name)?
            && (from_sysfs || (origin.index != 0 && l.index == origin.index))
        {
            found = Some(l);
            break;
        }
    }
    let Some(link) = found else { return Ok(None) };
    let link = if link.name == origin.name.as_str() {
        link
    } else if host.link_by_name(origin.name.as_str())?.is_some() {
        tracing::warn!(current = %link.name, wanted = %origin.name, "cannot rename netdev back: name taken");
        link
    } else {
        host.set_up(&link, false)?;
        rename(host, &link, origin.name.as_str())?
    };
    restore_mac_mtu(host, &link, origin);
    Ok(Some(link))
}

/// Puts back MAC and MTU; a refusal is logged, never fatal: returning the
/// device to the host matters more than its MAC.
pub fn restore_mac_mtu(sock: &RouteSocket, link: &Link, origin: &NetdevOrigin) {
    if let Some(mac) = origin.mac
        && !mac.is_zero()
        && link.mac != mac.0
        && let Err(e) = sock.set_mac(link, &mac.0)
    {
        tracing::warn!(error = %e, device = %link.name, "cannot restore MAC {mac}");
    }
    if origin.mtu != 0
        && link.mtu != origin.mtu
        && let Err(e) = sock.set_mtu(link, origin.mtu)
    {
        tracing::warn!(error = %e, device = %link.name, "cannot restore MTU {}", origin.mtu);
    }
}
