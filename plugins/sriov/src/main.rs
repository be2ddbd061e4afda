//! `sriov`: hands an Ethernet/RoCE SR-IOV virtual function to a pod.
//!
//! ADD: resolve the VF, lock and claim it, snapshot it, record the intent,
//! program the PF side, move the netdev in (renamed in the same request),
//! set MAC/MTU and bring it up, run IPAM, configure addresses and routes,
//! record the result, announce. Every step registers its inverse; any failure
//! undoes them all, IPAM included.
//!
//! DEL: release IPAM, restore the PF side, bring the netdev home with its
//! name, MAC and MTU, drop the records. Idempotent, and works without a netns.

mod config;
mod record;

use std::path::Path;
use std::time::Duration;

use libcni::error::StepExt;
use libcni::failpoint;
use libcni::ids::{ContainerId, IfName, MacAddr};
use libcni::ipam::IpamDelegate;
use libcni::netdev::{self, NetdevOrigin};
use libcni::netlink::{Link, RouteSocket};
use libcni::netns::NetNs;
use libcni::result::{CniResult, Interface};
use libcni::skel::{self, AttachRequest, CniPlugin, GcRequest, Request};
use libcni::state::{Lifetime, StateDir};
use libcni::sysfs::{Sysfs, VfRef};
use libcni::undo::Undo;
use libcni::version::SpecVersion;
use libcni::vf::{self, VfAllocations, VfHwState, VfOp, VfProgrammer};
use libcni::{Error, announce, ipconf};

use config::{Paths, SriovConf};
use record::{Mode, Phase, Records, SriovRecord};

/// sriov-cni waits 60 s for a VF's lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Effective MACs propagate asynchronously on some VF drivers.
const MAC_TRIES: u32 = 20;
const MAC_PAUSE: Duration = Duration::from_millis(100);
const CARRIER_WAIT: Duration = Duration::from_millis(200);

/// How the PF side is reached: rtnetlink in production, a file-backed
/// simulation in test builds (chosen once, in `main`).
type PfBackend = fn(&Sysfs) -> Result<Box<dyn VfProgrammer>, Error>;

struct Sriov {
    pf_backend: PfBackend,
}

/// The host side of one invocation.
struct Node {
    sysfs: Sysfs,
    records: Records,
    /// Where versions before the one-request move parked a VF netdev in
    /// transit between host and pod: a crash of such a version mid-move
    /// left it there, and DEL after an upgrade still brings it home.
    transit: StateDir,
    allocs: VfAllocations,
    host_ns: NetNs,
    host: RouteSocket,
    pf: Box<dyn VfProgrammer>,
}

impl Node {
    fn open(paths: &Paths, backend: PfBackend) -> Result<Node, Error> {
        let state = StateDir::open(&paths.state_dir)?;
        let this_boot = Lifetime::this_boot();
        let sysfs = Sysfs::new(&paths.sysfs_root);
        Ok(Node {
            records: Records::open(&state, &this_boot)?,
            transit: state.subdir("transit")?,
            allocs: VfAllocations::open(&state, &this_boot)?,
            host_ns: NetNs::current()?,
            host: RouteSocket::new()?,
            pf: backend(&sysfs)?,
            sysfs,
        })
    }

    /// The pin of an attachment's netdev in transit.
    fn transit_pin(&self, cid: &str, ifname: &str) -> Result<std::path::PathBuf, Error> {
        Ok(self.transit.entry(&format!("{cid}:{ifname}"))?)
    }
}

/// What ADD works on; everything the undo stack borrows lives here.
struct AddCtx<'r> {
    req: &'r AttachRequest,
    conf: SriovConf,
    node: Node,
    vf: VfRef,
    pod: NetNs,
    pod_sock: RouteSocket,
    ipam: Option<IpamDelegate>,
    /// The VF netdev in the host as ADD found it (None: userspace driver).
    host_link: Option<(Link, NetdevOrigin)>,
    /// The VF's PF-side state before ADD changed anything.
    orig: VfHwState,
}

impl CniPlugin for Sriov {
    fn name(&self) -> &'static str {
        "sriov"
    }

    fn args_keys(&self) -> &'static [&'static str] {
        &["MAC"]
    }

    fn add(&self, req: &AttachRequest) -> Result<CniResult, Error> {
        let conf = SriovConf::load(&req.req.raw, &req.args)?;
        let node = Node::open(&conf.paths, self.pf_backend)?;
        let vf = node.sysfs.resolve_vf(&conf.device_id)?;
        check_mtu(&node, &vf, conf.mtu)?;
        let ipam = match req.req.conf.ipam_type() {
            Some(t) => Some(IpamDelegate::find(t, &req.req.cni_path)?),
            None => None,
        };
        let netns = req
            .netns
            .as_deref()
            .ok_or_else(|| Error::Internal("ADD without CNI_NETNS".into()))?;
        let pod = NetNs::open(netns)?;
        let pod_sock = pod.route_socket()?;
        let _lock = node.allocs.lock(&vf.pci, LOCK_TIMEOUT)?;
        let mut ctx = AddCtx {
            req,
            conf,
            node,
            vf,
            pod,
            pod_sock,
            ipam,
            host_link: None,
            orig: VfHwState::default(),
        };
        clear_leftover(&ctx)?;
        ctx.node
            .allocs
            .ensure_available(&ctx.vf.pci, &req.container_id, &req.ifname)?;
        reclaim_from_dead_owner(&ctx.node, &ctx.vf, &req.container_id, &req.ifname)?;
        ctx.host_link = match host_netdev(&ctx.node, &ctx.vf)? {
            Some(link) => {
                let origin = NetdevOrigin::of(&link)?;
                Some((link, origin))
            }
            None => None,
        };
        ctx.orig = ctx
            .node
            .pf
            .read(&ctx.vf)
            .step(|| format!("read VF {} state from PF {}", ctx.vf.index, ctx.vf.pf.name))?;
        let mut undo = Undo::new();
        match add_steps(&ctx, netns, &mut undo) {
            Ok(result) => {
                undo.commit();
                announce_addresses(&ctx, &result);
                Ok(result)
            }
            Err(e) => {
                let e = undo.rollback(e);
                // Undo runs newest first, so the netdev's MAC was put back
                // while the PF's admin MAC still locked it (igb refuses):
                // now that the PF side is restored, put it back again.
                settle_host_netdev(&ctx);
                Err(e)
            }
        }
    }

    fn del(&self, req: &AttachRequest) -> Result<(), Error> {
        let paths = config::load_paths(&req.req.raw)?;
        // IPAM first and whatever else happened: the address must come back
        // even when the netns is gone or ADD never got as far as its record.
        if let Some(t) = req.req.conf.ipam_type() {
            IpamDelegate::find(t, &req.req.cni_path)?.del(&req.req.stdin)?;
        }
        failpoint::hit("sriov.del.after_ipam")?;
        let node = Node::open(&paths, self.pf_backend)?;
        let Some(record) = node.records.load(&req.container_id, &req.ifname)? else {
            return Ok(());
        };
        let pod = match req.netns.as_deref().map(NetNs::open) {
            Some(Ok(ns)) => Some(ns),
            Some(Err(e)) if e.is_gone() => None,
            Some(Err(e)) => return Err(e.into()),
            None => None,
        };
        let _lock = node.allocs.lock(&record.device_id, LOCK_TIMEOUT)?;
        release_attachment(&node, &record, pod.as_ref())
    }

    fn check(&self, req: &AttachRequest) -> Result<(), Error> {
        let conf = SriovConf::load(&req.req.raw, &req.args)?;
        let node = Node::open(&conf.paths, self.pf_backend)?;
        let record = node
            .records
            .load(&req.container_id, &req.ifname)?
            .filter(|r| r.phase == Phase::Ready)
            .ok_or_else(|| {
                Error::Check(format!(
                    "no completed ADD recorded for container {} interface {}",
                    req.container_id, req.ifname
                ))
            })?;
        let vf = node.sysfs.resolve_vf(&record.device_id)?;
        let mut problems = record.applied.mismatches(&node.pf.read(&vf)?);
        if record.mode == Mode::Netdev {
            let netns = req.check_netns()?;
            problems.extend(check_pod_side(
                &record,
                netns,
                &req.ifname,
                req.req.conf.prev_result.as_ref(),
            )?);
        }
        if !problems.is_empty() {
            return Err(Error::Check(format!(
                "VF {} ({}): {}",
                vf.pci,
                req.ifname,
                problems.join("; ")
            )));
        }
        if let Some(t) = req.req.conf.ipam_type() {
            IpamDelegate::find(t, &req.req.cni_path)?.check(&req.req.stdin)?;
        }
        Ok(())
    }

    fn gc(&self, req: &GcRequest) -> Result<(), Error> {
        let paths = config::load_paths(&req.req.raw)?;
        let node = Node::open(&paths, self.pf_backend)?;
        let mut errors = Vec::new();
        for record in node.records.all()? {
            if !req.covers(record.network.as_deref())
                || req
                    .keep
                    .iter()
                    .any(|a| record.belongs_to(&a.container_id, &a.ifname))
            {
                continue;
            }
            tracing::info!(container = %record.container_id, ifname = %record.ifname, vf = %record.device_id, "GC: releasing a VF of a stale attachment");
            // GC may assume the netns of a stale attachment is gone.
            let released = node
                .allocs
                .lock(&record.device_id, LOCK_TIMEOUT)
                .and_then(|_lock| release_attachment(&node, &record, None));
            if let Err(e) = released {
                errors.push(e);
            }
        }
        if let Some(t) = req.req.conf.ipam_type()
            && let Err(e) =
                IpamDelegate::find(t, &req.req.cni_path).and_then(|d| d.gc(&req.req.stdin))
        {
            errors.push(e.into());
        }
        Error::from_many(errors).map_or(Ok(()), Err)
    }

    fn status(&self, req: &Request) -> Result<(), Error> {
        let paths = config::load_paths(&req.raw)?;
        StateDir::open(&paths.state_dir)
            .map_err(|e| Error::NotAvailable(format!("state directory: {e}")))?;
        let devices = paths.sysfs_root.join("bus/pci/devices");
        if !devices.is_dir() {
            return Err(Error::NotAvailable(format!(
                "{} is not readable: no PCI devices to serve",
                devices.display()
            )));
        }
        if let Some(t) = req.conf.ipam_type() {
            IpamDelegate::find(t, &req.cni_path)?.status(&req.stdin)?;
        }
        Ok(())
    }
}

/// The steps of ADD; each registers its inverse on `undo`.
fn add_steps<'a>(
    ctx: &'a AddCtx<'_>,
    netns: &Path,
    undo: &mut Undo<'a>,
) -> Result<CniResult, Error> {
    let (req, node, vf) = (ctx.req, &ctx.node, &ctx.vf);
    let (cid, ifname) = (&req.container_id, &req.ifname);

    let orig = ctx.orig.clone();
    let host_link = ctx.host_link.as_ref();
    let mode = if host_link.is_some() {
        Mode::Netdev
    } else {
        Mode::Userspace
    };
    let mut record = SriovRecord::new(
        cid,
        ifname,
        Some(netns.to_path_buf()),
        vf.pci.clone(),
        mode,
        orig.clone(),
    );
    record.applied = ctx.conf.vf.clone();
    record.host = host_link.map(|(_, origin)| origin.clone());
    record.network = req.req.conf.name.clone();
    node.records.save(&record)?;
    let saved = record.clone();
    undo.push("remove attachment record", move || {
        node.records.remove(&saved)
    });
    failpoint::hit("sriov.add.after_record")?;

    // Claimed after the record: a crash in between leaves a record DEL acts
    // on, never a claim no DEL knows about (it would hold the VF forever).
    node.allocs.claim(&vf.pci, netns, cid, ifname)?;
    undo.push(format!("release claim on VF {}", vf.pci), move || {
        node.allocs.release(&vf.pci, cid, ifname)
    });
    failpoint::hit("sriov.add.after_claim")?;

    let restore_to = record.restore_target();
    vf::program(&*node.pf, vf, &ctx.conf.vf, &restore_to, undo)?;
    failpoint::hit("sriov.add.after_pf")?;

    let pod_link = match host_link {
        Some((link, origin)) => Some(move_in(ctx, link, origin, undo)?),
        None => None,
    };

    let mut result = match &ctx.ipam {
        Some(d) => {
            let r = d.add(&req.req.stdin)?;
            undo.push(format!("release IPAM ({})", d.name()), move || {
                Ok(d.del(&req.req.stdin)?)
            });
            r
        }
        None => CniResult::default(),
    };
    failpoint::hit("sriov.add.after_ipam")?;

    if let Some(link) = &pod_link {
        let has_v6 = result.ips.iter().any(|ip| ip.address.addr().is_ipv6());
        ctx.pod.run(|| ipconf::prepare_sysctls(ifname, has_v6))?;
        ipconf::configure(&ctx.pod_sock, link, &result)?;
        failpoint::hit("sriov.add.after_addresses")?;
    }

    let (mac, mtu) = match &pod_link {
        Some(l) => (MacAddr::from_slice(&l.mac), Some(l.mtu)),
        // Userspace VF: the PF-side MAC is what the application will use.
        None => (
            ctx.conf
                .vf
                .mac
                .or((!orig.mac.is_zero()).then_some(orig.mac)),
            Some(ctx.conf.mtu.map_or_else(|| node.sysfs.pf_mtu(&vf.pf), Ok)?),
        ),
    };
    result.interfaces = vec![Interface {
        name: ifname.to_string(),
        mac: mac.map(|m| m.to_string()),
        mtu,
        sandbox: Some(netns.display().to_string()),
        socket_path: None,
        pci_id: Some(vf.pci.to_string()),
    }];
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }

    record.phase = Phase::Ready;
    record.pod_mac = mac;
    record.pod_mtu = mtu;
    record.result = Some(result.to_json(SpecVersion::LATEST));
    node.records.save(&record)?;
    failpoint::hit("sriov.add.after_commit")?;
    Ok(result)
}

/// The VF's netdev in the host, or None for a userspace-driver VF.
fn host_netdev(node: &Node, vf: &VfRef) -> Result<Option<Link>, Error> {
    match &vf.netdev {
        Some(name) => node
            .host
            .link_by_name(name.as_str())?
            .map(Some)
            .ok_or_else(|| Error::Device {
                device: vf.pci.to_string(),
                reason: format!(
                    "sysfs lists netdev {name} but the host network namespace has no such link"
                ),
            }),
        None if vf.is_userspace() => Ok(None),
        None => Err(Error::Device {
            device: vf.pci.to_string(),
            reason: format!(
                "VF has no network device and is not bound to a userspace driver (driver: {}); is it still held by another pod?",
                vf.driver.as_deref().unwrap_or("none")
            ),
        }),
    }
}

/// Moves the VF netdev into the pod and sets MAC, MTU and link up there.
fn move_in<'a>(
    ctx: &'a AddCtx<'_>,
    link: &Link,
    origin: &NetdevOrigin,
    undo: &mut Undo<'a>,
) -> Result<Link, Error> {
    let ifname = &ctx.req.ifname;
    let moved = netdev::move_into_pod(
        &ctx.node.host,
        &ctx.node.host_ns,
        link,
        &ctx.pod,
        &ctx.pod_sock,
        ifname,
    )
    .step(|| format!("move VF netdev {} into the pod as {ifname}", link.name))?;
    let origin = origin.clone();
    undo.push(
        format!("return {ifname} to the host as {}", origin.name),
        move || {
            netdev::return_to_host(
                &ctx.pod_sock,
                &ctx.pod,
                ifname,
                &ctx.node.host_ns,
                &ctx.node.host,
                &origin,
            )
            .map(drop)
        },
    );
    failpoint::hit("sriov.add.after_move")?;
    let moved = match ctx.conf.vf.mac {
        Some(mac) => give_mac(&ctx.pod_sock, &moved, mac)?,
        None => moved,
    };
    if let Some(mtu) = ctx.conf.mtu {
        ctx.pod_sock.set_mtu(&moved, mtu)?;
    }
    ctx.pod_sock.set_up(&moved, true)?;
    failpoint::hit("sriov.add.after_link_up")?;
    ctx.pod_sock
        .link_by_index(moved.index)?
        .ok_or_else(|| Error::Device {
            device: ifname.to_string(),
            reason: "vanished from the pod".into(),
        })
}

/// Gives the VF netdev `mac`, which the PF side was just told. Some VF
/// drivers (igbvf) take a PF-assigned MAC only when they reset, which a
/// down after an up triggers, and refuse to set it themselves when the VF is
/// untrusted; others (and the host-lane stand-ins) need it set on the netdev.
fn give_mac(sock: &RouteSocket, link: &Link, mac: MacAddr) -> Result<Link, Error> {
    let reread = |l: &Link| {
        sock.link_by_index(l.index)?.ok_or_else(|| Error::Device {
            device: l.name.clone(),
            reason: "vanished from the pod".into(),
        })
    };
    if link.mac == mac.0 {
        return Ok(link.clone());
    }
    sock.set_up(link, true)?;
    sock.set_up(link, false)?;
    let link = reread(link)?;
    if link.mac != mac.0 {
        set_mac_verified(sock, &link, mac)?;
    }
    reread(&link)
}

fn set_mac_verified(sock: &RouteSocket, link: &Link, mac: MacAddr) -> Result<(), Error> {
    sock.set_mac(link, &mac.0)?;
    for _ in 0..MAC_TRIES {
        if sock
            .link_by_index(link.index)?
            .is_some_and(|l| l.mac == mac.0)
        {
            return Ok(());
        }
        std::thread::sleep(MAC_PAUSE);
    }
    Err(Error::Device {
        device: link.name.clone(),
        reason: format!("MAC {mac} was accepted but never took effect"),
    })
}

/// After a rolled-back ADD: the VF netdev is back in the host under its
/// name; make sure it also has its MAC and MTU again. Best effort.
fn settle_host_netdev(ctx: &AddCtx<'_>) {
    let Some((_, origin)) = &ctx.host_link else {
        return;
    };
    if let Ok(Some(link)) = ctx.node.host.link_by_name(origin.name.as_str()) {
        netdev::restore_mac_mtu(&ctx.node.host, &link, origin);
        reregister_own_mac(&ctx.node, &ctx.vf, &ctx.orig, origin);
    }
}

/// When the PF reported the VF's own MAC before ADD and, its admin MAC now
/// cleared, reports none (the VF never reset to tell it, as igbvf does on
/// a reset), the netdev tells it again: the kernel skips setting an
/// unchanged MAC, so it sets a neighbouring address and then its own.
fn reregister_own_mac(node: &Node, vf: &VfRef, orig: &VfHwState, origin: &NetdevOrigin) {
    let Some(own) = origin.mac.filter(|m| !m.is_zero() && *m == orig.mac) else {
        return;
    };
    if !node.pf.read(vf).is_ok_and(|now| now.mac.is_zero()) {
        return;
    }
    let Ok(Some(link)) = node.host.link_by_name(origin.name.as_str()) else {
        return;
    };
    let mut neighbour = own;
    neighbour.0[5] ^= 1;
    if let Err(e) = node
        .host
        .set_mac(&link, &neighbour.0)
        .and_then(|()| node.host.set_mac(&link, &own.0))
    {
        tracing::warn!(error = %e, device = %link.name, "could not re-register the VF's own MAC with its PF");
    }
}

fn check_mtu(node: &Node, vf: &VfRef, mtu: Option<u32>) -> Result<(), Error> {
    let Some(mtu) = mtu else { return Ok(()) };
    let pf_mtu = node.sysfs.pf_mtu(&vf.pf)?;
    if mtu > pf_mtu {
        return Err(Error::config(
            "mtu",
            format!("{mtu} exceeds the MTU {pf_mtu} of PF {}", vf.pf.name),
        ));
    }
    Ok(())
}

/// A record for this attachment before ADD: Ready means a second ADD without
/// DEL (refused); Adding means an earlier ADD died mid-way, so undo it first.
fn clear_leftover(ctx: &AddCtx<'_>) -> Result<(), Error> {
    let Some(old) = ctx
        .node
        .records
        .load(&ctx.req.container_id, &ctx.req.ifname)?
    else {
        return Ok(());
    };
    if old.phase == Phase::Ready {
        return Err(Error::Busy {
            what: format!(
                "interface {} of container {}",
                ctx.req.ifname, ctx.req.container_id
            ),
            owner: "an earlier ADD (run DEL first)".into(),
        });
    }
    tracing::warn!(vf = %old.device_id, "undoing an interrupted ADD of this attachment");
    if let Some(d) = &ctx.ipam {
        d.del(&ctx.req.req.stdin)?;
    }
    release_attachment(&ctx.node, &old, Some(&ctx.pod))
}

/// When the VF's recorded owner is another attachment whose pod died without
/// a DEL, undo that attachment first, so this ADD snapshots the VF's true
/// original state and the dead pod's late DEL has nothing left to clobber
/// (sriov-cni #219). A live owner is refused later by `claim`.
fn reclaim_from_dead_owner(
    node: &Node,
    vf: &VfRef,
    cid: &ContainerId,
    ifname: &IfName,
) -> Result<(), Error> {
    let Some(owner) = node.allocs.owner(&vf.pci)? else {
        return Ok(());
    };
    let ours = owner.container_id == cid.as_str() && owner.ifname == ifname.as_str();
    if ours || NetNs::open(&owner.netns).is_ok() {
        return Ok(());
    }
    let (Ok(old_cid), Ok(old_ifname)) = (
        ContainerId::parse(&owner.container_id),
        IfName::parse(&owner.ifname),
    ) else {
        return Ok(()); // sriov-cni's claim names no attachment: nothing of ours to undo
    };
    if let Some(old) = node.records.load(&old_cid, &old_ifname)? {
        tracing::warn!(vf = %vf.pci, previous = %owner.container_id, "VF's previous pod is gone without DEL: undoing its attachment first");
        release_attachment(node, &old, None)?;
    }
    Ok(())
}

/// Undoes an attachment (DEL, GC, interrupted ADD): PF side, netdev, claim,
/// record. Keeps going past failures; the record stays if anything failed, so
/// a retried DEL tries again. The caller holds the VF's lock.
fn release_attachment(node: &Node, record: &SriovRecord, pod: Option<&NetNs>) -> Result<(), Error> {
    let vf = match node.sysfs.resolve_vf(&record.device_id) {
        Ok(vf) => vf,
        Err(libcni::sysfs::SysfsError::NoDevice { .. }) => {
            tracing::warn!(vf = %record.device_id, "VF no longer exists (SR-IOV disabled?): dropping its records");
            return drop_records(node, record);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(owner) = node.allocs.owner(&vf.pci)?
        && !owner.container_id.is_empty()
        && (owner.container_id != record.container_id || owner.ifname != record.ifname)
    {
        tracing::warn!(vf = %vf.pci, owner = %owner.container_id, "VF now belongs to another attachment: leaving it alone");
        return node.records.remove(record);
    }
    let mut errors = vf::restore(&*node.pf, &vf, &record.applied, &record.restore_target());
    failpoint::hit("sriov.del.after_pf")?;
    if record.mode == Mode::Userspace && record.applied.mac.is_none() {
        // A DPDK application may have changed the admin MAC (sriov-cni #214).
        match node.pf.read(&vf) {
            Ok(now) if now.mac != record.orig_vf.mac => {
                if let Err(e) = node.pf.write(&vf, VfOp::Mac(record.orig_vf.mac)) {
                    errors.push(e);
                }
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    if let (Mode::Netdev, Some(origin)) = (record.mode, &record.host) {
        match bring_home(node, &vf, record, origin, pod) {
            Ok(()) => reregister_own_mac(node, &vf, &record.orig_vf, origin),
            Err(e) => errors.push(e),
        }
        failpoint::hit("sriov.del.after_netdev")?;
    }
    match Error::from_many(errors) {
        Some(e) => Err(e),
        None => drop_records(node, record),
    }
}

fn drop_records(node: &Node, record: &SriovRecord) -> Result<(), Error> {
    let cid = ContainerId::parse(&record.container_id).ok();
    let ifname = IfName::parse(&record.ifname).ok();
    if let (Some(cid), Some(ifname)) = (&cid, &ifname) {
        node.allocs.release(&record.device_id, cid, ifname)?;
    }
    failpoint::hit("sriov.del.after_claim")?;
    node.records.remove(record)?;
    failpoint::hit("sriov.del.after_record")
}

/// Returns the VF netdev to the host under its original name, MAC and MTU:
/// from the temporary netns of an older version's interrupted move, from the pod when
/// its netns is alive, else from wherever the kernel put it when the netns
/// died (the host, under the pod's name or `devN`).
fn bring_home(
    node: &Node,
    vf: &VfRef,
    record: &SriovRecord,
    origin: &NetdevOrigin,
    pod: Option<&NetNs>,
) -> Result<(), Error> {
    let pin = node.transit_pin(&record.container_id, &record.ifname)?;
    if netdev::recover_from_transit(&node.host_ns, &pin, origin).step(|| {
        format!(
            "return VF netdev {} to the host from an interrupted move",
            origin.name
        )
    })? {
        return Ok(());
    }
    if let (Some(pod), Ok(ifname)) = (pod, IfName::parse(&record.ifname)) {
        let sock = pod.route_socket()?;
        if netdev::return_to_host(&sock, pod, &ifname, &node.host_ns, &node.host, origin)
            .step(|| format!("return VF netdev {ifname} to the host as {}", origin.name))?
        {
            return Ok(());
        }
    }
    netdev::bring_back(
        &node.host,
        &node.sysfs.netdevs(&vf.pci)?,
        &record.ifname,
        origin,
    )?;
    Ok(())
}

/// CHECK inside the pod: the interface, its MAC, MTU, state and addresses.
fn check_pod_side(
    record: &SriovRecord,
    netns: &Path,
    ifname: &IfName,
    prev: Option<&serde_json::Value>,
) -> Result<Vec<String>, Error> {
    let pod = NetNs::open(netns)?;
    let sock = pod.route_socket()?;
    let Some(link) = sock.link_by_name(ifname.as_str())? else {
        return Ok(vec![format!(
            "interface {ifname} not found in network namespace {}",
            netns.display()
        )]);
    };
    // Later plugins in the chain may change MAC or MTU (coordinator's
    // podMACPrefix, say) and say so in the final result: expect that first.
    let expected = prev
        .or(record.result.as_ref())
        .map(CniResult::parse)
        .transpose()?;
    let iface = expected.as_ref().and_then(|r| {
        r.interfaces
            .iter()
            .position(|i| i.name == ifname.as_str())
            .map(|n| (r, n))
    });
    let want_mac = iface
        .and_then(|(r, n)| r.interfaces[n].mac.as_deref())
        .and_then(|m| MacAddr::parse(m).ok())
        .or(record.pod_mac);
    let want_mtu = iface
        .and_then(|(r, n)| r.interfaces[n].mtu)
        .or(record.pod_mtu);
    let mut problems = Vec::new();
    if let Some(mac) = want_mac
        && link.mac != mac.0
    {
        problems.push(format!(
            "MAC is {} (expected {mac})",
            libcni::netlink::format_hw(&link.mac)
        ));
    }
    if let Some(mtu) = want_mtu
        && link.mtu != mtu
    {
        problems.push(format!("MTU is {} (expected {mtu})", link.mtu));
    }
    if !link.up {
        problems.push("link is down".into());
    }
    let expected = prev
        .or(record.result.as_ref())
        .map(CniResult::parse)
        .transpose()?;
    let have = sock.addresses(&link)?;
    if let Some(expected) = expected {
        let index = expected
            .interfaces
            .iter()
            .position(|i| i.name == ifname.as_str());
        for ip in expected
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == index)
        {
            if !have.contains(&ip.address) {
                problems.push(format!("address {} is missing", ip.address));
            }
        }
    }
    Ok(problems)
}

/// Gratuitous ARP / unsolicited NA for the new addresses, sent by the kernel
/// (arp_notify/ndisc_notify were set with the addresses); frames of our own
/// only if the link cannot take its MAC again. Best effort.
fn announce_addresses(ctx: &AddCtx<'_>, result: &CniResult) {
    let Ok(Some(link)) = ctx.pod_sock.link_by_name(ctx.req.ifname.as_str()) else {
        return;
    };
    match announce::via_kernel(&ctx.pod_sock, &link) {
        Ok(()) => {}
        Err(e) => {
            tracing::debug!(error = %e, "kernel announcement unavailable: sending frames ourselves");
            let Some(mac) = MacAddr::from_slice(&link.mac) else {
                return;
            };
            let addrs: Vec<_> = result.ips.iter().map(|ip| ip.address.addr()).collect();
            let ifname = ctx.req.ifname.as_str();
            if let Ok(errors) = ctx
                .pod
                .run(|| announce::announce(ifname, link.index, mac.0, &addrs, CARRIER_WAIT))
            {
                for e in errors {
                    tracing::info!(error = %e, "address announcement failed (best effort)");
                }
            }
        }
    }
}

#[cfg(not(feature = "test-build"))]
fn pf_backend(_: &Sysfs) -> Result<Box<dyn VfProgrammer>, Error> {
    Ok(Box::new(vf::NetlinkVfs::new(RouteSocket::new()?)))
}

/// Test build: the simulated PF under the fake sysfs root (see libcni::vf::sim).
#[cfg(feature = "test-build")]
fn pf_backend(sysfs: &Sysfs) -> Result<Box<dyn VfProgrammer>, Error> {
    Ok(Box::new(vf::sim::SimVfs::new(sysfs.clone())))
}

fn main() {
    skel::run(
        Sriov { pf_backend },
        concat!(
            "sriov CNI plugin ",
            env!("CARGO_PKG_VERSION"),
            " (rdma-cni-rs)"
        ),
    )
}
