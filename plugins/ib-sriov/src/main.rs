//! `ib-sriov`: hands an InfiniBand SR-IOV VF (IPoIB netdev, optionally its
//! RDMA device) to a pod.
//!
//! ADD: resolve and lock the VF; snapshot its GUIDs and link state; set the
//! link state and the node and port GUID on the PF and rebind the VF's driver
//! so the GUID takes effect (the netdev comes back, maybe renamed: found again
//! by PCI address); with `rdmaIsolation` move the RDMA device into the pod
//! first (moving it recreates the IPoIB netdev); move the netdev in; IPAM.
//! Any failure restores GUIDs and link state too (ib-sriov-cni#217).
//! DEL: IPAM; netdev and RDMA device home; original GUIDs (all-F for none)
//! and link state; rebind; the netdev's original name. Idempotent.

mod config;

use std::path::Path;
use std::time::Duration;

use libcni::config::NetConf;
use libcni::ipam::IpamDelegate;
use libcni::netdev::{self, NetdevOrigin};
use libcni::netlink::{Link, RouteSocket};
use libcni::netns::NetNs;
use libcni::rdma::{ConnectBackends, RdmaBackends, RdmaControl, RdmaParent, require_exclusive};
use libcni::result::{CniResult, Interface};
use libcni::skel::{self, AttachRequest, CniPlugin, GcRequest, Request};
use libcni::state::{Lifetime, StateDir};
use libcni::sysfs::{Sysfs, VfRef};
use libcni::undo::Undo;
use libcni::vf::{self, Guid, VfAllocations, VfHwState, VfProgrammer, VfSettings};
use libcni::{Error, failpoint, ipconf};
use serde::{Deserialize, Serialize};

use config::{IbConf, Paths, load_paths};

const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// After a rebind the driver recreates the netdev; udev may rename it.
const NETDEV_RETURN: Duration = Duration::from_secs(10);
const VERSION: u32 = 1;

struct IbSriov {
    /// The kernel in production, simulations in test builds.
    backends: ConnectBackends,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct IbRecord {
    version: u32,
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
    #[serde(rename = "deviceID")]
    device_id: String,
    vfio: bool,
    /// The IPoIB netdev as the host had it (after the GUID rebind).
    host: Option<NetdevOrigin>,
    #[serde(rename = "origVf")]
    orig_vf: VfHwState,
    applied: VfSettings,
    /// The RDMA device moved into the pod (rdmaIsolation).
    rdma: Option<String>,
    /// For ib-kubernetes, which adds the GUID to this partition in the SM.
    pkey: Option<u16>,
    ready: bool,
    /// The network (config `name`) that made the attachment: GC is per network.
    #[serde(default)]
    network: Option<String>,
}

/// The host side of one invocation.
struct Node {
    sysfs: Sysfs,
    records: StateDir,
    /// Where versions before the one-request move parked a netdev in transit
    /// between host and pod: a crash of such a version mid-move left it
    /// there, and DEL after an upgrade still brings it home.
    transit: StateDir,
    allocs: VfAllocations,
    host_ns: NetNs,
    host: RouteSocket,
    pf: Box<dyn VfProgrammer>,
    rdma: Box<dyn RdmaControl>,
}

impl Node {
    fn open(paths: &Paths, backends: ConnectBackends) -> Result<Node, Error> {
        let state = StateDir::open(&paths.state_dir)?;
        // Records and VF owners describe what a reboot undoes: per boot.
        let this_boot = Lifetime::this_boot();
        let sysfs = Sysfs::new(&paths.sysfs_root);
        let RdmaBackends { pf, rdma } = backends(&sysfs)?;
        Ok(Node {
            records: state.subdir_with("attachments", &this_boot)?,
            transit: state.subdir("transit")?,
            allocs: VfAllocations::open(&state, &this_boot)?,
            host_ns: NetNs::current()?,
            host: RouteSocket::new()?,
            sysfs,
            pf,
            rdma,
        })
    }

    fn load(&self, cid: &str, ifname: &str) -> Result<Option<IbRecord>, Error> {
        Ok(self
            .records
            .read_json(&format!("{cid}:{ifname}.json"), VERSION)?)
    }

    fn save(&self, r: &IbRecord) -> Result<(), Error> {
        Ok(self
            .records
            .write_json(&format!("{}:{}.json", r.container_id, r.ifname), r)?)
    }

    /// The pin of an attachment's netdev in transit.
    fn transit_pin(&self, cid: &str, ifname: &str) -> Result<std::path::PathBuf, Error> {
        Ok(self.transit.entry(&format!("{cid}:{ifname}"))?)
    }

    fn drop_record(&self, r: &IbRecord) -> Result<(), Error> {
        self.records
            .remove(&format!("{}:{}.json", r.container_id, r.ifname))?;
        Ok(())
    }

    /// The VF's IPoIB netdev in the host, waiting for it after a rebind.
    fn netdev(&self, vf: &VfRef) -> Result<Link, Error> {
        let name = self
            .sysfs
            .wait_for_netdev(&vf.pci, NETDEV_RETURN)?
            .ok_or_else(|| Error::Device {
                device: vf.pci.to_string(),
                reason: format!(
                    "has no network device in the host after {NETDEV_RETURN:?} (driver {:?})",
                    vf.driver
                ),
            })?;
        self.host
            .link_by_name(name.as_str())?
            .ok_or_else(|| Error::Device {
                device: vf.pci.to_string(),
                reason: format!(
                    "sysfs lists netdev {name} but the host network namespace has no such link"
                ),
            })
    }
}

/// The VF's GUID as the PF reports it, else from its IPoIB address (the last
/// 8 of 20 bytes are the port GUID).
fn snapshot(node: &Node, vf: &VfRef) -> Result<VfHwState, Error> {
    let mut orig = node.pf.read(vf)?;
    if orig.port_guid.is_none()
        && let Some(name) = &vf.netdev
        && let Some(link) = node.host.link_by_name(name.as_str())?
        && link.mac.len() == 20
    {
        orig.port_guid = Guid::from_bytes(&link.mac[12..20]);
        orig.node_guid = orig.node_guid.or(orig.port_guid);
    }
    Ok(orig)
}

fn rebind_and_wait(node: &Node, vf: &VfRef) -> Result<(), Error> {
    node.sysfs.rebind(vf)?;
    node.netdev(vf).map(drop)
}

impl CniPlugin for IbSriov {
    fn name(&self) -> &'static str {
        "ib-sriov"
    }

    fn args_keys(&self) -> &'static [&'static str] {
        &["GUID"]
    }

    fn add(&self, req: &AttachRequest) -> Result<CniResult, Error> {
        let conf = IbConf::load(&req.req.raw, &req.req.conf, &req.args)?;
        let node = Node::open(&conf.paths, self.backends)?;
        let vf = node.sysfs.resolve_vf(&conf.device_id)?;
        let is_vfio = vf.driver.as_deref() == Some("vfio-pci");
        let vfio = match conf.vfio_pci_mode {
            Some(true) if !is_vfio => {
                return Err(Error::config(
                    "vfioPciMode",
                    format!(
                        "true, but VF {} is bound to {:?}, not vfio-pci",
                        vf.pci, vf.driver
                    ),
                ));
            }
            _ => is_vfio,
        };
        if conf.rdma_isolation && !vfio {
            require_exclusive(node.rdma.netns_mode()?)?;
        }
        let ipam = match req.req.conf.ipam_type() {
            Some(t) if !vfio => Some(IpamDelegate::find(t, &req.req.cni_path)?),
            _ => None,
        };
        let netns = req
            .netns
            .as_deref()
            .ok_or_else(|| Error::Internal("ADD without CNI_NETNS".into()))?;
        let pod = NetNs::open(netns)?;
        let pod_sock = pod.route_socket()?;
        let _lock = node.allocs.lock(&vf.pci, LOCK_TIMEOUT)?;
        if node
            .load(req.container_id.as_str(), req.ifname.as_str())?
            .is_some()
        {
            return Err(Error::Busy {
                what: format!("interface {} of container {}", req.ifname, req.container_id),
                owner: "an earlier ADD (run DEL first)".into(),
            });
        }
        node.allocs
            .ensure_available(&vf.pci, &req.container_id, &req.ifname)?;
        let orig = snapshot(&node, &vf)?;
        if conf.guid.is_none()
            && !vfio
            && !orig
                .port_guid
                .is_some_and(|g| g.0 != 0 && g != Guid::ALL_ONES)
        {
            return Err(Error::Device {
                device: vf.pci.to_string(),
                reason: "has no valid GUID (all zero or all F) and none was given: set guid, runtimeConfig.infinibandGUID or args.cni.guid, or give VFs GUIDs when creating them".into(),
            });
        }
        let step = Step {
            req,
            conf: &conf,
            node: &node,
            vf: &vf,
            vfio,
            pod: &pod,
            pod_sock: &pod_sock,
            ipam: ipam.as_ref(),
            netns,
        };
        let mut undo = Undo::new();
        match add_steps(&step, orig, &mut undo) {
            Ok(r) => {
                undo.commit();
                Ok(r)
            }
            Err(e) => Err(undo.rollback(e)),
        }
    }

    fn del(&self, req: &AttachRequest) -> Result<(), Error> {
        let paths = load_paths(&req.req.raw)?;
        if let Some(t) = req.req.conf.ipam_type().filter(|t| *t != "dhcp") {
            IpamDelegate::find(t, &req.req.cni_path)?.del(&req.req.stdin)?;
        }
        failpoint::hit("ib-sriov.del.after_ipam")?;
        let node = Node::open(&paths, self.backends)?;
        let Some(record) = node.load(req.container_id.as_str(), req.ifname.as_str())? else {
            return Ok(());
        };
        let pod = req.netns.as_deref().and_then(|p| NetNs::open(p).ok());
        let pci = libcni::ids::PciAddr::parse(&record.device_id)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let _lock = node.allocs.lock(&pci, LOCK_TIMEOUT)?;
        release(&node, &record, pod.as_ref())
    }

    fn check(&self, req: &AttachRequest) -> Result<(), Error> {
        let paths = load_paths(&req.req.raw)?;
        let node = Node::open(&paths, self.backends)?;
        let record = node
            .load(req.container_id.as_str(), req.ifname.as_str())?
            .filter(|r| r.ready)
            .ok_or_else(|| req.not_recorded("completed ADD"))?;
        let netns = req.check_netns()?;
        let pod = NetNs::open(netns)?;
        let pci = libcni::ids::PciAddr::parse(&record.device_id)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let vf = node.sysfs.resolve_vf(&pci)?;
        let mut problems = record.applied.mismatches(&node.pf.read(&vf)?);
        if !record.vfio
            && pod
                .route_socket()?
                .link_by_name(req.ifname.as_str())?
                .is_none()
        {
            problems.push(format!("interface {} is not in the pod", req.ifname));
        }
        if let Some(dev) = &record.rdma
            && !node.rdma.is_in(dev, &pod)?
        {
            problems.push(format!("RDMA device {dev} is not in the pod"));
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(Error::Check(format!("VF {pci}: {}", problems.join("; ")))),
        }
    }

    fn gc(&self, req: &GcRequest) -> Result<(), Error> {
        let paths = load_paths(&req.req.raw)?;
        let node = Node::open(&paths, self.backends)?;
        let mut errors = Vec::new();
        for name in node.records.list()? {
            let Ok(Some(r)) = node.records.read_json::<IbRecord>(&name, VERSION) else {
                continue;
            };
            if !req.covers(r.network.as_deref()) || req.keeps(&r.container_id, &r.ifname) {
                continue;
            }
            if let Err(e) = release(&node, &r, None) {
                errors.push(e);
            }
        }
        Error::from_many(errors).map_or(Ok(()), Err)
    }

    fn status(&self, req: &Request) -> Result<(), Error> {
        let paths = load_paths(&req.raw)?;
        StateDir::open(&paths.state_dir)
            .map_err(|e| Error::NotAvailable(format!("state directory: {e}")))?;
        if let Some(t) = req.conf.ipam_type() {
            IpamDelegate::find(t, &req.cni_path)?.status(&req.stdin)?;
        }
        Ok(())
    }

    fn log_settings(
        &self,
        conf: &NetConf,
        _raw: &serde_json::Value,
    ) -> (Option<String>, Option<String>) {
        (conf.log_level.clone(), conf.log_file.clone())
    }
}

/// What the ADD steps work on.
struct Step<'a> {
    req: &'a AttachRequest,
    conf: &'a IbConf,
    node: &'a Node,
    vf: &'a VfRef,
    vfio: bool,
    pod: &'a NetNs,
    pod_sock: &'a RouteSocket,
    ipam: Option<&'a IpamDelegate>,
    netns: &'a Path,
}

fn add_steps<'a>(s: &Step<'a>, orig: VfHwState, undo: &mut Undo<'a>) -> Result<CniResult, Error> {
    let (node, vf, req, pod, pod_sock) = (s.node, s.vf, s.req, s.pod, s.pod_sock);
    let mut record = IbRecord {
        version: VERSION,
        container_id: req.container_id.to_string(),
        ifname: req.ifname.to_string(),
        device_id: vf.pci.to_string(),
        vfio: s.vfio,
        host: None,
        orig_vf: orig.clone(),
        applied: VfSettings {
            link_state: s.conf.link_state,
            guid: s.conf.guid,
            ..Default::default()
        },
        rdma: None,
        pkey: s.conf.pkey,
        ready: false,
        network: req.req.conf.name.clone(),
    };
    node.save(&record)?;
    let saved = record.clone();
    undo.push("remove record", move || node.drop_record(&saved));
    failpoint::hit("ib-sriov.add.after_record")?;
    // Claimed after the record: a crash in between leaves a record DEL acts
    // on, never a claim no DEL knows about (it would hold the VF forever).
    node.allocs
        .claim(&vf.pci, s.netns, &req.container_id, &req.ifname)?;
    undo.push("release VF claim", move || {
        node.allocs.release(&vf.pci, &req.container_id, &req.ifname)
    });
    failpoint::hit("ib-sriov.add.after_claim")?;

    let rebinds = s.conf.guid.is_some() && !s.vfio;
    if rebinds {
        // Runs after the GUID restores below (undo is newest first), so the
        // restored GUID takes effect.
        undo.push(
            format!("rebind {} after restoring its GUID", vf.pci),
            move || rebind_and_wait(node, vf),
        );
    }
    let restore_to = orig;
    vf::program(&*node.pf, vf, &record.applied, &restore_to, undo)?;
    if rebinds {
        rebind_and_wait(node, vf)?;
    }
    failpoint::hit("ib-sriov.add.after_guid")?;
    if s.vfio {
        return finish(s, &mut record, None, CniResult::default());
    }

    if s.conf.rdma_isolation {
        let dev = node
            .sysfs
            .the_rdma_device(&RdmaParent::Pci(vf.pci.clone()))?;
        // Recorded before the move: a crash right after it must leave DEL
        // the device's name (DEL moves it back only if it is in the pod).
        record.rdma = Some(dev.clone());
        node.save(&record)?;
        node.rdma
            .move_device(&dev, &node.host_ns, pod)
            .map_err(|e| e.step(format!("move RDMA device {dev} into the pod")))?;
        let back = dev.clone();
        undo.push(format!("return RDMA device {dev}"), move || {
            node.rdma.move_device(&back, pod, &node.host_ns)
        });
        failpoint::hit("ib-sriov.add.after_rdma")?;
    }
    // Found only now: a rebind or an RDMA move recreates the IPoIB netdev.
    let link = node.netdev(vf)?;
    let origin = NetdevOrigin::of(&link)?;
    record.host = Some(origin.clone());
    node.save(&record)?;
    failpoint::hit("ib-sriov.add.after_netdev_record")?;
    let moved =
        netdev::move_into_pod(&node.host, &node.host_ns, &link, pod, pod_sock, &req.ifname)?;
    undo.push(format!("return {} to the host", req.ifname), move || {
        netdev::return_to_host(
            pod_sock,
            pod,
            &req.ifname,
            &node.host_ns,
            &node.host,
            &origin,
        )
        .map(drop)
    });
    pod_sock.set_up(&moved, true)?;
    failpoint::hit("ib-sriov.add.after_move")?;

    let result = match s.ipam {
        Some(d) => {
            let r = d.add(&req.req.stdin)?;
            undo.push(format!("release IPAM ({})", d.name()), move || {
                Ok(d.del(&req.req.stdin)?)
            });
            let has_v6 = r.ips.iter().any(|ip| ip.address.addr().is_ipv6());
            pod.run(|| ipconf::prepare_sysctls(&req.ifname, has_v6))?;
            ipconf::configure(pod_sock, &moved, &r)?;
            r
        }
        None => CniResult::default(),
    };
    failpoint::hit("ib-sriov.add.after_ipam")?;
    finish(s, &mut record, Some(&moved), result)
}

fn finish(
    s: &Step<'_>,
    record: &mut IbRecord,
    link: Option<&Link>,
    mut result: CniResult,
) -> Result<CniResult, Error> {
    result.interfaces = vec![Interface {
        name: s.req.ifname.to_string(),
        mac: None,
        mtu: link.map(|l| l.mtu),
        sandbox: Some(s.netns.display().to_string()),
        socket_path: None,
        pci_id: Some(s.vf.pci.to_string()),
    }];
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    record.ready = true;
    s.node.save(record)?;
    failpoint::hit("ib-sriov.add.after_commit")?;
    Ok(result)
}

/// Gives the VF's netdev its host name back: a rebind or a dead pod netns
/// returns it under another name (the kernel's, or the pod's `net1`). A
/// netdev that does not come back is logged, not an error: the PF side and
/// the records still have to be released.
fn restore_host_name(
    node: &Node,
    vf: &VfRef,
    r: &IbRecord,
    origin: &NetdevOrigin,
) -> Result<(), Error> {
    // After a rebind the driver needs a moment to register the netdev again.
    node.sysfs.wait_for_netdev(&vf.pci, NETDEV_RETURN)?;
    if netdev::bring_back(&node.host, &node.sysfs.netdevs(&vf.pci)?, &r.ifname, origin)?.is_none() {
        tracing::warn!(vf = %vf.pci, "VF's netdev is not in the host after DEL");
    }
    Ok(())
}

/// Undoes an attachment (DEL, GC): netdev and RDMA device home, PF side
/// restored (all-F for a VF that had no GUID), rebind, original name.
fn release(node: &Node, r: &IbRecord, pod: Option<&NetNs>) -> Result<(), Error> {
    let pci =
        libcni::ids::PciAddr::parse(&r.device_id).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(owner) = node.allocs.owner(&pci)?
        && !owner.container_id.is_empty()
        && (owner.container_id != r.container_id || owner.ifname != r.ifname)
    {
        // A crash between our record and our claim, and another pod has
        // the VF now: nothing of ours is on it.
        tracing::warn!(vf = %pci, owner = %owner.container_id, "VF now belongs to another attachment: leaving it alone");
        return node.drop_record(r);
    }
    let mut errors = Vec::new();
    let pin = node.transit_pin(&r.container_id, &r.ifname)?;
    if let Some(origin) = &r.host
        && let Err(e) = netdev::recover_from_transit(&node.host_ns, &pin, origin)
    {
        errors.push(e);
    }
    if let Some(pod) = pod {
        if let Some(origin) = &r.host {
            let ifname = libcni::ids::IfName::parse(&r.ifname)
                .map_err(|e| Error::Internal(e.to_string()))?;
            if let Err(e) = pod.route_socket().map_err(Error::from).and_then(|sock| {
                netdev::return_to_host(&sock, pod, &ifname, &node.host_ns, &node.host, origin)
                    .map(drop)
            }) {
                errors.push(e);
            }
        }
        failpoint::hit("ib-sriov.del.after_netdev")?;
        // Even without a netdev recorded: a crash after the RDMA move but
        // before the netdev was found leaves only the device's name.
        if let Some(dev) = &r.rdma
            && node.rdma.is_in(dev, pod).unwrap_or(false)
            && let Err(e) = node.rdma.move_device(dev, pod, &node.host_ns)
        {
            errors.push(e);
        }
        failpoint::hit("ib-sriov.del.after_rdma")?;
    }
    match node.sysfs.resolve_vf(&pci) {
        Ok(vf) => {
            errors.extend(vf::restore(&*node.pf, &vf, &r.applied, &r.orig_vf));
            failpoint::hit("ib-sriov.del.after_pf")?;
            if r.applied.guid.is_some() && !r.vfio {
                // The restored GUID takes effect only after a rebind.
                if let Err(e) = node.sysfs.rebind(&vf) {
                    errors.push(e.into());
                }
                failpoint::hit("ib-sriov.del.after_rebind")?;
            }
            if let Some(origin) = r.host.as_ref().filter(|_| !r.vfio)
                && let Err(e) = restore_host_name(node, &vf, r, origin)
            {
                errors.push(e);
            }
            failpoint::hit("ib-sriov.del.after_host_name")?;
        }
        Err(e) => tracing::warn!(error = %e, "VF is gone: nothing to restore on its PF"),
    }
    if let Some(e) = Error::from_many(errors) {
        return Err(e);
    }
    let cid = libcni::ids::ContainerId::parse(&r.container_id)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let ifname =
        libcni::ids::IfName::parse(&r.ifname).map_err(|e| Error::Internal(e.to_string()))?;
    node.allocs.release(&pci, &cid, &ifname)?;
    failpoint::hit("ib-sriov.del.after_claim")?;
    node.drop_record(r)?;
    failpoint::hit("ib-sriov.del.after_record")
}

#[cfg(not(feature = "test-build"))]
const BACKENDS: ConnectBackends = RdmaBackends::kernel;
/// Test build: simulated PF and RDMA subsystem under the fake sysfs root.
#[cfg(feature = "test-build")]
const BACKENDS: ConnectBackends = RdmaBackends::simulated;

fn main() {
    skel::run(
        IbSriov { backends: BACKENDS },
        concat!(
            "ib-sriov CNI plugin ",
            env!("CARGO_PKG_VERSION"),
            " (rdma-cni-rs)"
        ),
    )
}
