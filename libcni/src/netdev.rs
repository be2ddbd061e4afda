//! Moving a host netdev into a pod under a new name, and back.
//!
//! Each direction is one RTM_NEWLINK that moves the device and names it in
//! its destination: the kernel does both before it releases the RTNL, so no
//! udev rule, NetworkManager or other pod can race us for the name, and the
//! device crosses namespaces once (a crossing waits for an RCU barrier under
//! the global RTNL: 13-40 ms each, the largest cost of a pod's ADD; see
//! BENCHMARKS.md). A crash can only land before or after that request, so
//! the device is always in the namespace it left or the one it went to,
//! under its old or its new name; [`return_to_host`] looks for both.
//!
//! When the destination already uses the new name the kernel has moved the
//! device under its old name and failed the rename (EEXIST); we then send it
//! back the same way, so a failed move leaves the device where it was.
//!
//! Older versions passed through a temporary netns pinned in the plugin's
//! state dir; [`recover_from_transit`] still empties such a pin after an
//! upgrade.

use std::os::fd::AsFd;
use std::path::Path;

use crate::error::Error;
use crate::ids::{IfName, MacAddr};
use crate::netlink::{Link, NetlinkError, RouteSocket};
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

/// Renames `link` to `new` in its namespace, clearing altnames that would
/// block it or that the old name leaves behind (udev and some kernels add
/// one: sriov-cni #250, #445).
pub fn rename(sock: &RouteSocket, link: &Link, new: &str) -> Result<Link, Error> {
    if link.name == new {
        return Ok(link.clone());
    }
    clear_altname(sock, link, new)?;
    sock.rename(link, new)?;
    let renamed = sock
        .link_by_index(link.index)?
        .ok_or_else(|| gone(new, "current"))?;
    drop_old_name(sock, &renamed, &link.name);
    Ok(renamed)
}

/// A device's own altname `name` blocks naming it `name` (EEXIST).
fn clear_altname(sock: &RouteSocket, link: &Link, name: &str) -> Result<(), Error> {
    if link.altnames.iter().any(|a| a == name) {
        sock.del_altname(link, name)?;
    }
    Ok(())
}

/// Removes an altname the previous name left behind; best effort: it only
/// matters to the next rename back, which clears it itself.
fn drop_old_name(sock: &RouteSocket, link: &Link, old: &str) {
    if link.altnames.iter().any(|a| a == old)
        && let Err(e) = sock.del_altname(link, old)
    {
        tracing::warn!(error = %e, device = %link.name, "cannot remove altname {old}");
    }
}

/// One crossing: moves `link` (seen through `from`) into `to` as `name`.
/// On failure the device is sent back to `back` under its name; if even that
/// fails it is logged, and DEL (which looks for both names) finds it later.
fn cross(
    from: &RouteSocket,
    link: &Link,
    to: &NetNs,
    to_sock: &RouteSocket,
    name: &str,
    back: &NetNs,
    what: Direction,
) -> Result<Link, Error> {
    // Refused here, nothing moves: a name taken over there would make the
    // kernel move the device and then fail the rename.
    if to_sock.link_by_name(name)?.is_some() {
        return Err(taken(link, name, what));
    }
    clear_altname(from, link, name)?;
    // If it moved at all, the name it has over there: the kernel moves and
    // renames in one go, but a refused rename (EEXIST) leaves it moved under
    // its old name; a step of ours failing after the request finds it renamed.
    let (err, moved_as) = match from.move_to_netns_as(link, to.as_fd(), name) {
        Err(e) => (refused(e, link, name, what), link.name.as_str()),
        Ok(()) => {
            let arrived = crate::failpoint::hit(what.failpoint()).and_then(|()| {
                to_sock
                    .link_by_name(name)?
                    .ok_or_else(|| gone(name, what.destination()))
            });
            match arrived {
                Ok(l) => {
                    drop_old_name(to_sock, &l, &link.name);
                    return Ok(l);
                }
                Err(e) => (e, name),
            }
        }
    };
    let stayed = from
        .link_by_index(link.index)
        .ok()
        .flatten()
        .is_some_and(|l| l.name == link.name);
    if !stayed {
        match to_sock.link_by_name(moved_as) {
            Ok(Some(l)) => {
                if let Err(r) = to_sock.move_to_netns_as(&l, back.as_fd(), &link.name) {
                    tracing::error!(error = %r, device = %l.name, "could not move device back after: {err}");
                }
            }
            Ok(None) => {
                tracing::error!(device = %link.name, "device is in neither namespace after: {err}");
            }
            Err(e) => {
                tracing::error!(error = %e, device = %link.name, "cannot tell where device went after: {err}");
            }
        }
    }
    Err(err)
}

#[derive(Clone, Copy)]
enum Direction {
    IntoPod,
    ToHost,
}

impl Direction {
    fn destination(self) -> &'static str {
        match self {
            Direction::IntoPod => "pod",
            Direction::ToHost => "host",
        }
    }

    fn failpoint(self) -> &'static str {
        match self {
            Direction::IntoPod => "netdev.into_pod.after_move",
            Direction::ToHost => "netdev.to_host.after_move",
        }
    }
}

fn refused(e: NetlinkError, link: &Link, name: &str, what: Direction) -> Error {
    if e.is_exists() {
        taken(link, name, what)
    } else {
        e.into()
    }
}

fn taken(link: &Link, name: &str, what: Direction) -> Error {
    Error::Device {
        device: link.name.clone(),
        reason: format!(
            "the {} network namespace already has an interface named {name}",
            what.destination()
        ),
    }
}

/// Moves `link` from the host into `pod` as `ifname` and returns it as the pod
/// sees it (down; the caller configures and raises it). On failure the
/// device is back in the host under its name.
pub fn move_into_pod(
    host: &RouteSocket,
    host_ns: &NetNs,
    link: &Link,
    pod: &NetNs,
    pod_sock: &RouteSocket,
    ifname: &IfName,
) -> Result<Link, Error> {
    host.set_up(link, false)?;
    cross(
        host,
        link,
        pod,
        pod_sock,
        ifname.as_str(),
        host_ns,
        Direction::IntoPod,
    )
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
    host: &RouteSocket,
    origin: &NetdevOrigin,
) -> Result<bool, Error> {
    let Some(link) = in_pod(pod_sock, ifname, origin)? else {
        return Ok(false);
    };
    pod_sock.set_up(&link, false)?;
    restore_mac_mtu(pod_sock, &link, origin);
    cross(
        pod_sock,
        &link,
        host_ns,
        host,
        origin.name.as_str(),
        pod,
        Direction::ToHost,
    )?;
    Ok(true)
}

/// The device in the pod: under `ifname`, or under its host name when a move
/// was cut short after the kernel moved it but before it could rename it (the
/// same ifindex proves it is ours, not the pod's own interface of that name).
fn in_pod(
    pod_sock: &RouteSocket,
    ifname: &IfName,
    origin: &NetdevOrigin,
) -> Result<Option<Link>, Error> {
    if let Some(l) = pod_sock.link_by_name(ifname.as_str())? {
        return Ok(Some(l));
    }
    Ok(pod_sock
        .link_by_name(origin.name.as_str())?
        .filter(|l| origin.index != 0 && l.index == origin.index))
}

/// After a crash of an older version mid-move: every device in the temporary
/// netns pinned at `pin` goes home as `origin` (name, MAC, MTU), and the pin
/// is removed. Ok(false) when nothing was pinned there (the usual case).
pub fn recover_from_transit(
    host_ns: &NetNs,
    pin: &Path,
    origin: &NetdevOrigin,
) -> Result<bool, Error> {
    // A symlink is not a pin of ours: opening it could reach someone
    // else's netns and take their devices.
    if std::fs::symlink_metadata(pin).is_ok_and(|m| m.file_type().is_symlink()) {
        tracing::warn!(pin = %pin.display(), "a symlink where a transit pin would be: removed, not followed");
        NetNs::unpin(pin)?;
        return Ok(false);
    }
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
        clear_altname(&sock, &link, origin.name.as_str())?;
        sock.move_to_netns_as(&link, host_ns.as_fd(), origin.name.as_str())
            .map_err(|e| refused(e, &link, origin.name.as_str(), Direction::ToHost))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testnet::{NetnsGuard, ip};

    /// A "host" and a "pod" netns; the host holds veth `<tag>v` (the VF
    /// stand-in, MTU 1400, a fixed MAC) whose peer stays in the host.
    struct Rig {
        // One at a time: a failpoint armed by one test would fire in another.
        _serial: std::sync::MutexGuard<'static, ()>,
        _guard: NetnsGuard,
        host_name: String,
        pod_name: String,
        host_ns: NetNs,
        host: RouteSocket,
        pod: NetNs,
        pod_sock: RouteSocket,
        vf: String,
        origin: NetdevOrigin,
    }

    impl Rig {
        fn new(tag: &str) -> Rig {
            static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
            let id = std::process::id();
            let (host_name, pod_name) = (format!("nd-{id}-{tag}-h"), format!("nd-{id}-{tag}-p"));
            let guard = NetnsGuard(vec![host_name.clone(), pod_name.clone()]);
            let vf = format!("nd{id}{tag}v");
            ip(&format!("netns add {host_name}"));
            ip(&format!("netns add {pod_name}"));
            ip(&format!(
                "-n {host_name} link add {vf} mtu 1400 address 02:4e:44:00:00:01 type veth peer {vf}p"
            ));
            let open = |n: &str| NetNs::open(Path::new(&format!("/run/netns/{n}"))).unwrap();
            let (host_ns, pod) = (open(&host_name), open(&pod_name));
            let (host, pod_sock) = (host_ns.route_socket().unwrap(), pod.route_socket().unwrap());
            let origin = NetdevOrigin::of(&host.link_by_name(&vf).unwrap().unwrap()).unwrap();
            Rig {
                _serial: serial,
                _guard: guard,
                host_name,
                pod_name,
                host_ns,
                host,
                pod,
                pod_sock,
                vf,
                origin,
            }
        }

        fn move_in(&self, ifname: &str) -> Result<Link, Error> {
            let link = self.host.link_by_name(&self.vf).unwrap().unwrap();
            let ifname = IfName::parse(ifname).unwrap();
            move_into_pod(
                &self.host,
                &self.host_ns,
                &link,
                &self.pod,
                &self.pod_sock,
                &ifname,
            )
        }

        fn home(&self, ifname: &str) -> Result<bool, Error> {
            let ifname = IfName::parse(ifname).unwrap();
            return_to_host(
                &self.pod_sock,
                &self.pod,
                &ifname,
                &self.host_ns,
                &self.host,
                &self.origin,
            )
        }

        /// `ip -br link` names in `ns`, sorted.
        fn names(&self, ns: &str) -> Vec<String> {
            let out = ip(&format!("-n {ns} -br link"));
            let mut v: Vec<String> = out
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
                .collect();
            v.sort();
            v
        }
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn a_device_moves_in_renamed_and_comes_home_as_it_was() {
        let rig = Rig::new("a");
        let moved = rig.move_in("net1").unwrap();
        assert_eq!(
            (moved.name.as_str(), moved.index),
            ("net1", rig.origin.index)
        );
        assert_eq!(rig.names(&rig.pod_name), ["lo", "net1"]);
        assert!(!rig.names(&rig.host_name).contains(&rig.vf));
        // The pod changes MTU and MAC; DEL puts them back.
        ip(&format!(
            "-n {} link set net1 mtu 9000 address 02:4e:44:00:00:99",
            rig.pod_name
        ));
        assert!(rig.home("net1").unwrap());
        let back = rig.host.link_by_name(&rig.vf).unwrap().unwrap();
        assert_eq!(NetdevOrigin::of(&back).unwrap(), rig.origin);
        assert_eq!(rig.names(&rig.pod_name), ["lo"]);
        // A second DEL finds nothing to do.
        assert!(!rig.home("net1").unwrap());
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn a_name_taken_in_the_pod_leaves_the_device_in_the_host() {
        let rig = Rig::new("b");
        ip(&format!(
            "-n {} link add net1 type veth peer net1p",
            rig.pod_name
        ));
        let theirs = rig.pod_sock.link_by_name("net1").unwrap().unwrap();
        let err = rig.move_in("net1").unwrap_err().to_string();
        assert!(
            err.contains("the pod network namespace already has an interface named net1"),
            "{err}"
        );
        let home = rig.host.link_by_name(&rig.vf).unwrap().unwrap();
        assert_eq!(NetdevOrigin::of(&home).unwrap(), rig.origin);
        assert_eq!(rig.names(&rig.pod_name), ["lo", "net1", "net1p"]);
        let still = rig.pod_sock.link_by_name("net1").unwrap().unwrap();
        assert_eq!(still.index, theirs.index, "the pod's own net1 was touched");
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn a_name_taken_in_the_host_keeps_the_device_in_the_pod_until_it_is_free() {
        let rig = Rig::new("c");
        rig.move_in("net1").unwrap();
        // Something else took the VF's name in the host meanwhile.
        ip(&format!(
            "-n {} link add {} type veth peer {}q",
            rig.host_name, rig.vf, rig.vf
        ));
        let err = rig.home("net1").unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "the host network namespace already has an interface named {}",
                rig.vf
            )),
            "{err}"
        );
        assert_eq!(rig.names(&rig.pod_name), ["lo", "net1"]);
        assert!(!rig.names(&rig.host_name).contains(&"net1".to_string()));
        // Once the name is free a retried DEL succeeds.
        ip(&format!("-n {} link del {}", rig.host_name, rig.vf));
        assert!(rig.home("net1").unwrap());
        let back = rig.host.link_by_name(&rig.vf).unwrap().unwrap();
        assert_eq!(back.index, rig.origin.index);
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn a_device_left_in_the_pod_under_its_host_name_is_found_by_its_index() {
        let rig = Rig::new("d");
        // What a kill between the kernel's move and its rename would leave.
        ip(&format!(
            "-n {} link set {} netns {}",
            rig.host_name, rig.vf, rig.pod_name
        ));
        assert!(rig.home("net1").unwrap());
        assert!(rig.names(&rig.host_name).contains(&rig.vf));
        // The pod's own interface of that name (another index) is not taken.
        ip(&format!(
            "-n {} link add {} index 77 type veth peer x{}",
            rig.pod_name, rig.vf, rig.vf
        ));
        assert!(!rig.home("net1").unwrap());
        assert!(rig.names(&rig.pod_name).contains(&rig.vf));
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn altnames_that_would_block_a_rename_are_cleared() {
        let rig = Rig::new("e");
        // udev or an operator gave the VF the pod's name as an altname, and
        // in the pod it gets its host name as one (sriov-cni #250, #445).
        ip(&format!(
            "-n {} link property add dev {} altname net1",
            rig.host_name, rig.vf
        ));
        let moved = rig.move_in("net1").unwrap();
        assert_eq!(moved.name, "net1");
        ip(&format!(
            "-n {} link property add dev net1 altname {}",
            rig.pod_name, rig.vf
        ));
        assert!(rig.home("net1").unwrap());
        let back = rig.host.link_by_name(&rig.vf).unwrap().unwrap();
        assert_eq!(back.index, rig.origin.index);
        assert!(!back.altnames.contains(&rig.vf), "{:?}", back.altnames);
    }

    #[test]
    #[cfg(feature = "failpoints")]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn a_failure_after_the_kernel_moved_it_sends_the_device_back() {
        let rig = Rig::new("f");
        let scenario = fail::FailScenario::setup();
        for (point, step) in [
            ("netdev.into_pod.after_move", "in"),
            ("netdev.to_host.after_move", "home"),
        ] {
            fail::cfg(point, "return").unwrap();
            let err = match step {
                "in" => rig.move_in("net1").map(drop).unwrap_err(),
                _ => {
                    fail::remove("netdev.into_pod.after_move");
                    rig.move_in("net1").unwrap();
                    fail::cfg(point, "return").unwrap();
                    rig.home("net1").map(drop).unwrap_err()
                }
            };
            fail::remove(point);
            assert!(err.to_string().contains("failpoint"), "{err}");
            // Where it started, under the name it had there.
            let (ns, name) = match step {
                "in" => (&rig.host_name, &rig.vf),
                _ => (&rig.pod_name, &"net1".to_string()),
            };
            assert!(rig.names(ns).contains(name), "{step}: {:?}", rig.names(ns));
        }
        scenario.teardown();
        assert!(rig.home("net1").unwrap());
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn a_device_an_older_build_left_in_transit_comes_home_and_the_pin_goes() {
        let rig = Rig::new("g");
        let dir = std::env::temp_dir().join(format!("nd-{}-g", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pin = dir.join("cid:net1");
        // What a crash of such a build left: the device, renamed, in a pinned netns.
        let transit = NetNs::temporary_pinned(&pin).unwrap();
        let link = rig.host.link_by_name(&rig.vf).unwrap().unwrap();
        rig.host
            .move_to_netns_as(&link, transit.as_fd(), "net1")
            .unwrap();
        drop(transit);
        assert!(recover_from_transit(&rig.host_ns, &pin, &rig.origin).unwrap());
        let back = rig.host.link_by_name(&rig.vf).unwrap().unwrap();
        assert_eq!(NetdevOrigin::of(&back).unwrap(), rig.origin);
        assert!(!pin.exists());
        // Nothing pinned (the usual case), or a symlink someone put there:
        // nothing to do, and neither the link's target nor its mount is touched.
        assert!(!recover_from_transit(&rig.host_ns, &pin, &rig.origin).unwrap());
        let decoy = dir.join("decoy");
        std::fs::write(&decoy, "x").unwrap();
        std::os::unix::fs::symlink(&decoy, &pin).unwrap();
        assert!(!recover_from_transit(&rig.host_ns, &pin, &rig.origin).unwrap());
        assert_eq!(std::fs::read_to_string(&decoy).unwrap(), "x");
        assert!(std::fs::symlink_metadata(&pin).is_err());
        // A symlink to a live netns (the pod's, holding a device) is not followed.
        rig.move_in("net1").unwrap();
        let pod_path = format!("/run/netns/{}", rig.pod_name);
        std::os::unix::fs::symlink(&pod_path, &pin).unwrap();
        assert!(!recover_from_transit(&rig.host_ns, &pin, &rig.origin).unwrap());
        assert_eq!(rig.names(&rig.pod_name), ["lo", "net1"]);
        assert!(Path::new(&pod_path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
