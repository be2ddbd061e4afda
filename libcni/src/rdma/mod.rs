//! RDMA devices: which belong to a PCI or auxiliary function (sysfs), the
//! RDMA subsystem's netns mode, and moving a device into a network namespace
//! (RDMA netlink, `netlink.rs`; no Rust crate speaks it).
//!
//! `RdmaControl` is the seam: production uses `NetlinkRdma`, host-lane tests
//! inject the file-backed `sim::SimRdma` (feature `sim-pf`) through the
//! plugin's constructor, since the CI kernel has no RDMA devices.

pub mod netlink;
#[cfg(feature = "sim-pf")]
pub mod sim;
mod wire;

use std::fs;
use std::io;
use std::path::Path;

pub use netlink::RdmaSocket;
pub use wire::{
    DecodedReply, NETLINK_RDMA, NetnsMode, RdmaDevice, RdmaError, RdmaPort, decode_replies,
};

use crate::error::Error;
use crate::ids::PciAddr;
use crate::netlink::RouteSocket;
use crate::netns::NetNs;
use crate::sysfs::Sysfs;
use crate::vf::{NetlinkVfs, VfProgrammer};

impl std::fmt::Display for NetnsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetnsMode::Exclusive => "exclusive",
            NetnsMode::Shared => "shared",
        })
    }
}

/// What the `rdma` and `ib-sriov` plugins need from the RDMA subsystem.
pub trait RdmaControl {
    fn netns_mode(&self) -> Result<NetnsMode, Error>;
    /// Moves the device named `name` out of `from` (where it is) into `to`.
    fn move_device(&self, name: &str, from: &NetNs, to: &NetNs) -> Result<(), Error>;
    /// Is the device named `name` in `ns`?
    fn is_in(&self, name: &str, ns: &NetNs) -> Result<bool, Error>;
}

/// The kernel interfaces the RDMA plugins use (PF VF table, RDMA
/// subsystem), chosen once in the plugin's `main`: the kernel in
/// production, the simulations in test builds.
pub struct RdmaBackends {
    pub pf: Box<dyn VfProgrammer>,
    pub rdma: Box<dyn RdmaControl>,
}

/// How a plugin reaches its backends (a constructor argument).
pub type ConnectBackends = fn(&Sysfs) -> Result<RdmaBackends, Error>;

impl RdmaBackends {
    pub fn kernel(_: &Sysfs) -> Result<RdmaBackends, Error> {
        Ok(RdmaBackends {
            pf: Box::new(NetlinkVfs::new(RouteSocket::new()?)),
            rdma: Box::new(NetlinkRdma),
        })
    }

    /// The simulated PF and RDMA subsystem under a fake sysfs root.
    #[cfg(feature = "sim-pf")]
    pub fn simulated(sysfs: &Sysfs) -> Result<RdmaBackends, Error> {
        Ok(RdmaBackends {
            pf: Box::new(crate::vf::sim::SimVfs::new(sysfs.clone())),
            rdma: Box::new(sim::SimRdma::new(sysfs.root())),
        })
    }
}

/// The kernel's RDMA subsystem over RDMA netlink.
pub struct NetlinkRdma;

fn socket_in(ns: &NetNs) -> Result<RdmaSocket, Error> {
    ns.run(RdmaSocket::new)?.map_err(Error::from)
}

impl RdmaControl for NetlinkRdma {
    fn netns_mode(&self) -> Result<NetnsMode, Error> {
        Ok(RdmaSocket::new()?.netns_mode()?)
    }

    fn move_device(&self, name: &str, from: &NetNs, to: &NetNs) -> Result<(), Error> {
        let sock = socket_in(from)?;
        let dev = sock.device_by_name(name)?.ok_or_else(|| Error::Device {
            device: name.to_string(),
            reason: format!(
                "no such RDMA device in the {} network namespace",
                from.name()
            ),
        })?;
        sock.move_to_netns(&dev, std::os::fd::AsFd::as_fd(to))?;
        Ok(())
    }

    fn is_in(&self, name: &str, ns: &NetNs) -> Result<bool, Error> {
        Ok(socket_in(ns)?.device_by_name(name)?.is_some())
    }
}

/// Names under `<dir>/infiniband/`, sorted.
fn infiniband_entries(dir: &Path) -> Result<Vec<String>, Error> {
    let ib = dir.join("infiniband");
    let entries = match fs::read_dir(&ib) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Device {
                device: dir.display().to_string(),
                reason: format!("cannot read {}: {e}", ib.display()),
            });
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| valid_device_name(n))
        .collect();
    names.sort();
    Ok(names)
}

/// RDMA device names as the kernel makes them (mlx5_0, rxe0, irdma1...);
/// anything else read from a (possibly hostile) tree is ignored.
pub fn valid_device_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() < 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && n != "."
        && n != ".."
}

/// An auxiliary device id (a Scalable Function, e.g. `mlx5_core.sf.4`).
pub fn valid_aux_id(id: &str) -> bool {
    valid_device_name(id) && id.contains('.')
}

/// Where an RDMA device hangs: a PCI function or an auxiliary device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RdmaParent {
    Pci(PciAddr),
    Aux(String),
}

impl RdmaParent {
    /// A PCI address (`0000:af:06.0`), else an auxiliary id (`mlx5_core.sf.4`).
    pub fn parse(s: &str) -> Option<RdmaParent> {
        match PciAddr::parse(s) {
            Ok(p) => Some(RdmaParent::Pci(p)),
            Err(_) if valid_aux_id(s) => Some(RdmaParent::Aux(s.to_string())),
            Err(_) => None,
        }
    }
}

impl std::fmt::Display for RdmaParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RdmaParent::Pci(p) => write!(f, "{p}"),
            RdmaParent::Aux(a) => f.write_str(a),
        }
    }
}

impl Sysfs {
    /// RDMA devices of a PCI function (`bus/pci/devices/<pci>/infiniband/*`)
    /// or an auxiliary device (`bus/auxiliary/devices/<id>/infiniband/*`).
    pub fn rdma_devices(&self, parent: &RdmaParent) -> Result<Vec<String>, Error> {
        match parent {
            RdmaParent::Pci(pci) => infiniband_entries(&self.pci_device(pci)),
            RdmaParent::Aux(id) => {
                infiniband_entries(&self.root().join("bus/auxiliary/devices").join(id))
            }
        }
    }

    /// Exactly one RDMA device, else an error listing what was found.
    pub fn the_rdma_device(&self, parent: &RdmaParent) -> Result<String, Error> {
        let mut found = self.rdma_devices(parent)?;
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::Device {
                device: parent.to_string(),
                reason: "has no RDMA device (nothing under infiniband/ in sysfs): is its RDMA driver loaded?".into(),
            }),
            _ => Err(Error::Device {
                device: parent.to_string(),
                reason: format!("has several RDMA devices ({}); expected exactly one", found.join(", ")),
            }),
        }
    }
}

/// Error for a subsystem not in exclusive mode, with the remedy.
pub fn require_exclusive(mode: NetnsMode) -> Result<(), Error> {
    match mode {
        NetnsMode::Exclusive => Ok(()),
        NetnsMode::Shared => Err(Error::RdmaMode(
            "the RDMA subsystem's netns mode is shared, so RDMA devices cannot be given to pods; \
             set it to exclusive with `rdma system set netns exclusive` (before any pod netns \
             exists, e.g. at boot) or persistently with `options ib_core netns_mode=0` in \
             /etc/modprobe.d/ib_core.conf"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_of_pci_and_aux_functions() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sysfs = Sysfs::new(tmp.path());
        let pci = PciAddr::parse("0000:af:06.0").expect("pci");
        let one = tmp
            .path()
            .join("bus/pci/devices/0000:af:06.0/infiniband/mlx5_3");
        fs::create_dir_all(&one).expect("mkdir");
        assert_eq!(
            sysfs
                .the_rdma_device(&RdmaParent::Pci(pci.clone()))
                .expect("one"),
            "mlx5_3"
        );
        fs::create_dir_all(
            tmp.path()
                .join("bus/pci/devices/0000:af:06.0/infiniband/mlx5_9"),
        )
        .expect("mkdir");
        let e = sysfs
            .the_rdma_device(&RdmaParent::Pci(pci))
            .expect_err("two")
            .to_string();
        assert!(e.contains("mlx5_3, mlx5_9"), "{e}");
        let aux = RdmaParent::parse("mlx5_core.sf.4").expect("aux");
        fs::create_dir_all(
            tmp.path()
                .join("bus/auxiliary/devices/mlx5_core.sf.4/infiniband/mlx5_12"),
        )
        .expect("mkdir");
        assert_eq!(sysfs.the_rdma_device(&aux).expect("sf"), "mlx5_12");
        let none = RdmaParent::parse("0000:01:00.0").expect("pci");
        assert!(
            sysfs
                .the_rdma_device(&none)
                .expect_err("none")
                .to_string()
                .contains("no RDMA device")
        );
    }

    #[test]
    fn parents_and_names_are_validated() {
        assert!(matches!(
            RdmaParent::parse("0000:AF:06.1"),
            Some(RdmaParent::Pci(_))
        ));
        assert!(RdmaParent::parse("../../etc").is_none());
        assert!(RdmaParent::parse("mlx5_core.sf.4/../x").is_none());
        assert!(!valid_device_name(".."));
        assert!(valid_device_name("mlx5_0"));
        assert!(require_exclusive(NetnsMode::Exclusive).is_ok());
        let e = require_exclusive(NetnsMode::Shared)
            .expect_err("shared")
            .to_string();
        assert!(
            e.contains("shared")
                && e.contains("rdma system set netns exclusive")
                && e.contains("netns_mode=0")
        );
    }
}
