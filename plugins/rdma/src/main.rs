//! `rdma`: chained after `sriov`, moves the VF's RDMA device into the pod
//! (the kernel's RDMA subsystem in exclusive netns mode), so the job sees its
//! own RDMA device and nothing of other pods.
//!
//! ADD: prevResult required; the subsystem must be exclusive; the device
//! comes from `deviceID` (config or runtimeConfig), else from prevResult's
//! interface (its pciID, or its MAC found in a PF's VF table); exactly one
//! RDMA device; record, move, pass prevResult through. DEL: move it back if
//! the pod's netns still exists; drop the record in every case.

use std::path::PathBuf;

use libcni::config;
use libcni::ids::MacAddr;
use libcni::netns::NetNs;
use libcni::rdma::{ConnectBackends, RdmaBackends, RdmaParent, require_exclusive};
use libcni::result::CniResult;
use libcni::skel::{self, AttachRequest, CniPlugin, GcRequest, Request};
use libcni::state::{Lifetime, StateDir};
use libcni::sysfs::Sysfs;
use libcni::undo::Undo;
use libcni::vf::VfProgrammer;
use libcni::{Error, failpoint};
use serde::{Deserialize, Serialize};

const DEFAULT_STATE_DIR: &str = "/var/lib/cni/rdma";
const VERSION: u32 = 1;

/// Where attachments are recorded. An RDMA device's namespace does not
/// outlive the boot, and neither do the records: per boot, no fsync.
fn records_dir(conf: &RdmaConf) -> Result<StateDir, Error> {
    Ok(StateDir::open_with(
        &conf.state_dir,
        &Lifetime::this_boot(),
    )?)
}

struct Rdma {
    /// The kernel in production, simulations in test builds.
    backends: ConnectBackends,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(rename = "deviceID")]
    device_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawConf {
    #[serde(rename = "deviceID")]
    device_id: Option<String>,
    #[serde(rename = "runtimeConfig")]
    runtime_config: Option<RuntimeConfig>,
    #[serde(rename = "stateDir")]
    state_dir: Option<String>,
    #[serde(rename = "sysfsRoot")]
    sysfs_root: Option<String>,
}

struct RdmaConf {
    parent: Option<RdmaParent>,
    state_dir: PathBuf,
    sysfs: Sysfs,
}

impl RdmaConf {
    fn load(raw: &serde_json::Value) -> Result<RdmaConf, Error> {
        let mut c: RawConf = config::decode(raw)?;
        let rc = c.runtime_config.take().unwrap_or_default();
        let parent = match (rc.device_id, c.device_id.take()) {
            (Some(d), _) if !d.is_empty() => Some(("runtimeConfig.deviceID", d)),
            (_, Some(d)) if !d.is_empty() => Some(("deviceID", d)),
            _ => None,
        };
        let parent = parent
            .map(|(key, d)| {
                RdmaParent::parse(&d).ok_or_else(|| {
                    Error::config(key, format!("{d:?} is neither a PCI address (0000:af:06.0) nor an auxiliary device id (mlx5_core.sf.4)"))
                })
            })
            .transpose()?;
        Ok(RdmaConf {
            parent,
            state_dir: config::abs_path("stateDir", c.state_dir, DEFAULT_STATE_DIR)?,
            sysfs: Sysfs::new(config::abs_path("sysfsRoot", c.sysfs_root, "/sys")?),
        })
    }
}

/// What ADD did, so DEL can undo it without rediscovering anything.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RdmaRecord {
    version: u32,
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
    /// The PCI function or auxiliary device the RDMA device belongs to.
    parent: String,
    /// The RDMA device's name (kept across netns moves).
    device: String,
    netns: Option<PathBuf>,
    /// The network (config `name`) that made the attachment: GC is per network.
    #[serde(default)]
    network: Option<String>,
}

fn record_name(cid: &str, ifname: &str) -> String {
    format!("{cid}:{ifname}.json")
}

/// Finds which function the chained interface is: prevResult's pciID
/// (CNI 1.1), else the PF whose VF table holds the interface's MAC.
fn parent_from_prev(
    prev: &CniResult,
    ifname: &str,
    sysfs: &Sysfs,
    pf: &dyn VfProgrammer,
) -> Result<RdmaParent, Error> {
    let iface = prev
        .interfaces
        .iter()
        .find(|i| i.name == ifname)
        .or_else(|| (prev.interfaces.len() == 1).then(|| &prev.interfaces[0]))
        .ok_or_else(|| {
            Error::config(
                "deviceID",
                format!(
                    "not set, and prevResult has no interface {ifname} to find the device from"
                ),
            )
        })?;
    if let Some(pci) = iface.pci_id.as_deref().and_then(RdmaParent::parse) {
        return Ok(pci);
    }
    let mac = iface
        .mac
        .as_deref()
        .and_then(|m| MacAddr::parse(m).ok())
        .ok_or_else(|| {
            Error::config(
                "deviceID",
                format!("not set, and prevResult's {ifname} has neither pciID nor MAC"),
            )
        })?;
    let matches: Vec<_> = sysfs
        .all_vfs()
        .into_iter()
        .filter(|vf| pf.read(vf).is_ok_and(|s| s.mac == mac))
        .collect();
    match matches.as_slice() {
        [one] => Ok(RdmaParent::Pci(one.pci.clone())),
        [] => Err(Error::Device {
            device: ifname.to_string(),
            reason: format!("no VF of this node has administrative MAC {mac} (set deviceID)"),
        }),
        many => Err(Error::Device {
            device: ifname.to_string(),
            reason: format!(
                "several VFs have administrative MAC {mac}: {} (set deviceID)",
                many.iter()
                    .map(|v| v.pci.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

impl CniPlugin for Rdma {
    fn name(&self) -> &'static str {
        "rdma"
    }

    fn add(&self, req: &AttachRequest) -> Result<CniResult, Error> {
        let prev = req.req.conf.prev_result.as_ref().ok_or_else(|| {
            Error::config(
                "prevResult",
                "missing: rdma runs chained after the plugin that creates the interface (sriov)",
            )
        })?;
        let prev = CniResult::parse(prev)?;
        let conf = RdmaConf::load(&req.req.raw)?;
        let RdmaBackends { rdma, pf } = (self.backends)(&conf.sysfs)?;
        require_exclusive(rdma.netns_mode()?)?;
        let parent = match &conf.parent {
            Some(p) => p.clone(),
            None => parent_from_prev(&prev, req.ifname.as_str(), &conf.sysfs, &*pf)?,
        };
        let device = conf.sysfs.the_rdma_device(&parent)?;
        let netns = req
            .netns
            .as_deref()
            .ok_or_else(|| Error::Internal("ADD without CNI_NETNS".into()))?;
        let (pod, host) = (NetNs::open(netns)?, NetNs::current()?);
        let dir = records_dir(&conf)?;
        let name = record_name(req.container_id.as_str(), req.ifname.as_str());
        if let Some(held) = dir.read_json::<RdmaRecord>(&name, VERSION)? {
            // Overwriting it would lose the only note of where that device is.
            return Err(Error::Busy {
                what: format!("interface {} of container {}", req.ifname, req.container_id),
                owner: format!(
                    "an earlier ADD that moved RDMA device {} (run DEL first)",
                    held.device
                ),
            });
        }
        let record = RdmaRecord {
            version: VERSION,
            container_id: req.container_id.to_string(),
            ifname: req.ifname.to_string(),
            parent: parent.to_string(),
            device: device.clone(),
            netns: Some(netns.to_path_buf()),
            network: req.req.conf.name.clone(),
        };
        let mut undo = Undo::new();
        let moved = (|| {
            // Recorded before the move: a crash after it leaves DEL enough to act on.
            dir.write_json(&name, &record)?;
            undo.push("remove record", || Ok(dir.remove(&name).map(drop)?));
            failpoint::hit("rdma.add.after_record")?;
            rdma.move_device(&device, &host, &pod).map_err(|e| {
                e.step(format!(
                    "move RDMA device {device} of {parent} into the pod"
                ))
            })?;
            undo.push(format!("return {device} to the host"), || {
                rdma.move_device(&device, &pod, &host)
            });
            failpoint::hit("rdma.add.after_move")
        })();
        match moved {
            Ok(()) => {
                undo.commit();
                Ok(prev)
            }
            Err(e) => Err(undo.rollback(e)),
        }
    }

    fn del(&self, req: &AttachRequest) -> Result<(), Error> {
        let conf = RdmaConf::load(&req.req.raw)?;
        let dir = records_dir(&conf)?;
        let name = record_name(req.container_id.as_str(), req.ifname.as_str());
        let Some(record) = dir.read_json::<RdmaRecord>(&name, VERSION)? else {
            return Ok(());
        };
        // A gone netns already handed the device back (exclusive mode).
        if let Some(pod) = req.netns.as_deref().and_then(|p| NetNs::open(p).ok()) {
            let rdma = (self.backends)(&conf.sysfs)?.rdma;
            if rdma.is_in(&record.device, &pod)? {
                rdma.move_device(&record.device, &pod, &NetNs::current()?)
                    .map_err(|e| {
                        e.step(format!("return RDMA device {} to the host", record.device))
                    })?;
            }
        }
        failpoint::hit("rdma.del.after_move")?;
        dir.remove(&name)?;
        failpoint::hit("rdma.del.after_record")
    }

    fn check(&self, req: &AttachRequest) -> Result<(), Error> {
        let conf = RdmaConf::load(&req.req.raw)?;
        let dir = records_dir(&conf)?;
        let record = dir
            .read_json::<RdmaRecord>(
                &record_name(req.container_id.as_str(), req.ifname.as_str()),
                VERSION,
            )?
            .ok_or_else(|| req.not_recorded("RDMA device"))?;
        let netns = req.check_netns()?;
        let rdma = (self.backends)(&conf.sysfs)?.rdma;
        if rdma.is_in(&record.device, &NetNs::open(netns)?)? {
            Ok(())
        } else {
            Err(Error::Check(format!(
                "RDMA device {} is not in the pod's network namespace",
                record.device
            )))
        }
    }

    fn gc(&self, req: &GcRequest) -> Result<(), Error> {
        let conf = RdmaConf::load(&req.req.raw)?;
        let dir = records_dir(&conf)?;
        for name in dir.list()? {
            if let Ok(Some(r)) = dir.read_json::<RdmaRecord>(&name, VERSION)
                && req.covers(r.network.as_deref())
                && !req.keeps(&r.container_id, &r.ifname)
            {
                // Its netns is gone, and with it the device went back to the host.
                dir.remove(&name)?;
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), Error> {
        let conf = RdmaConf::load(&req.raw)?;
        StateDir::open(&conf.state_dir)
            .map_err(|e| Error::NotAvailable(format!("state directory: {e}")))?;
        let rdma = (self.backends)(&conf.sysfs)?.rdma;
        rdma.netns_mode()
            .and_then(require_exclusive)
            .map_err(|e| Error::NotAvailable(e.to_string()))
    }
}

#[cfg(not(feature = "test-build"))]
const BACKENDS: ConnectBackends = RdmaBackends::kernel;
/// Test build: simulated PF and RDMA subsystem under the fake sysfs root.
#[cfg(feature = "test-build")]
const BACKENDS: ConnectBackends = RdmaBackends::simulated;

fn main() {
    skel::run(
        Rdma { backends: BACKENDS },
        concat!(
            "rdma CNI plugin ",
            env!("CARGO_PKG_VERSION"),
            " (rdma-cni-rs)"
        ),
    )
}
