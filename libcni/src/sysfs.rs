//! sysfs lookups for SR-IOV functions, under a configurable root so tests can
//! build a fake tree (the same layout as /sys, with relative symlinks).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::ids::{IfName, PciAddr};

/// Drivers that leave a VF without a kernel netdev (DPDK and friends).
pub const USERSPACE_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    #[error(
        "PCI device {pci} does not exist on this node ({path} not found): check deviceID, or what the device plugin allocated (`lspci -D`)"
    )]
    NoDevice { pci: PciAddr, path: PathBuf },
    #[error(
        "PCI device {pci} is not an SR-IOV virtual function ({path} not found): give a VF's address, not the PF's (its VFs are the PF's virtfnN links)"
    )]
    NotVf { pci: PciAddr, path: PathBuf },
    #[error(
        "the PF of VF {pci} has no network device ({path} is empty): the PF's driver must be bound, with its netdev up, to program VFs"
    )]
    NoPfNetdev { pci: PciAddr, path: PathBuf },
    #[error(
        "VF {pci} is not among the {numvfs} virtfnN links of PF {pf}: sriov_numvfs changed since the VF was allocated; restart the device plugin"
    )]
    NoVfIndex {
        pci: PciAddr,
        pf: String,
        numvfs: u32,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds {content:?}, expected {expected}")]
    Parse {
        path: PathBuf,
        content: String,
        expected: &'static str,
    },
}

/// A physical function and its netdev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PfPort {
    pub name: IfName,
    pub pci: PciAddr,
}

/// An SR-IOV virtual function as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfRef {
    pub pci: PciAddr,
    pub pf: PfPort,
    pub index: u32,
    /// The VF's netdev in the host netns; None when bound to a userspace driver
    /// or when the netdev currently lives in another netns.
    pub netdev: Option<IfName>,
    pub driver: Option<String>,
}

impl VfRef {
    /// Bound to vfio-pci / uio: no netdev to move, PF-side programming only.
    pub fn is_userspace(&self) -> bool {
        self.driver
            .as_deref()
            .is_some_and(|d| USERSPACE_DRIVERS.contains(&d))
    }
}

#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SysfsError + '_ {
    move |source| SysfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The last component of a symlink's target, e.g. `../0000:af:06.0` → `0000:af:06.0`.
fn link_basename(path: &Path) -> Result<Option<String>, SysfsError> {
    match fs::read_link(path) {
        Ok(target) => Ok(target
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn read_u32(path: &Path) -> Result<u32, SysfsError> {
    let content = fs::read_to_string(path).map_err(io_err(path))?;
    content.trim().parse().map_err(|_| SysfsError::Parse {
        path: path.to_path_buf(),
        content: content.trim().chars().take(40).collect(),
        expected: "an unsigned integer",
    })
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/bus/pci/devices/<pci>`; the PCI address is validated by type.
    pub fn pci_device(&self, pci: &PciAddr) -> PathBuf {
        self.root.join("bus/pci/devices").join(pci.as_str())
    }

    /// Interface names under `<dir>/net`, sorted; names that are not valid
    /// interface names (a hostile or broken tree) are skipped.
    fn netdevs_in(&self, dir: &Path) -> Result<Vec<IfName>, SysfsError> {
        let net = dir.join("net");
        let entries = match fs::read_dir(&net) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&net)(e)),
        };
        let mut names: Vec<IfName> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| IfName::parse(&n).ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Netdevs of a PCI function visible in this (host) netns.
    pub fn netdevs(&self, pci: &PciAddr) -> Result<Vec<IfName>, SysfsError> {
        self.netdevs_in(&self.pci_device(pci))
    }

    /// The bound driver's name, if any.
    pub fn driver(&self, pci: &PciAddr) -> Result<Option<String>, SysfsError> {
        link_basename(&self.pci_device(pci).join("driver"))
    }

    /// Resolves a VF: its PF (first netdev of physfn, as sriov-cni does), its
    /// index among the PF's virtfnN links, its netdev and its driver.
    pub fn resolve_vf(&self, pci: &PciAddr) -> Result<VfRef, SysfsError> {
        let dev = self.pci_device(pci);
        if fs::symlink_metadata(&dev).is_err() {
            return Err(SysfsError::NoDevice {
                pci: pci.clone(),
                path: dev,
            });
        }
        let physfn = dev.join("physfn");
        let pf_pci = link_basename(&physfn)?
            .and_then(|n| PciAddr::parse(&n).ok())
            .ok_or_else(|| SysfsError::NotVf {
                pci: pci.clone(),
                path: physfn.clone(),
            })?;
        let pf_name = self
            .netdevs_in(&physfn)?
            .into_iter()
            .next()
            .ok_or_else(|| SysfsError::NoPfNetdev {
                pci: pci.clone(),
                path: physfn.join("net"),
            })?;
        let numvfs = read_u32(&physfn.join("sriov_numvfs"))?;
        let index = (0..numvfs)
            .find(|i| {
                link_basename(&physfn.join(format!("virtfn{i}")))
                    .ok()
                    .flatten()
                    .is_some_and(|n| n.eq_ignore_ascii_case(pci.as_str()))
            })
            .ok_or_else(|| SysfsError::NoVfIndex {
                pci: pci.clone(),
                pf: pf_name.to_string(),
                numvfs,
            })?;
        Ok(VfRef {
            pci: pci.clone(),
            pf: PfPort {
                name: pf_name,
                pci: pf_pci,
            },
            index,
            netdev: self.netdevs_in(&dev)?.into_iter().next(),
            driver: self.driver(pci)?,
        })
    }

    /// Every SR-IOV VF under `bus/pci/devices` (those with a `physfn`),
    /// resolved; unresolvable ones are skipped.
    pub fn all_vfs(&self) -> Vec<VfRef> {
        let Ok(entries) = fs::read_dir(self.root.join("bus/pci/devices")) else {
            return Vec::new();
        };
        let mut vfs: Vec<VfRef> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| PciAddr::parse(&n).ok())
            .filter(|p| self.pci_device(p).join("physfn").exists())
            .filter_map(|p| self.resolve_vf(&p).ok())
            .collect();
        vfs.sort_by(|a, b| a.pci.cmp(&b.pci));
        vfs
    }

    /// Unbinds and rebinds the VF's driver: how an InfiniBand VF takes a new
    /// GUID (mlx5). The netdev and RDMA device are destroyed and recreated,
    /// possibly under other names: find them again with `wait_for_netdev`.
    pub fn rebind(&self, vf: &VfRef) -> Result<(), SysfsError> {
        let Some(driver) = vf
            .driver
            .as_deref()
            .filter(|d| crate::rdma::valid_device_name(d))
        else {
            return Ok(());
        };
        let dir = self.root.join("bus/pci/drivers").join(driver);
        for op in ["unbind", "bind"] {
            let path = dir.join(op);
            fs::write(&path, vf.pci.as_str()).map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Waits (polling sysfs) for the VF's netdev to be back after a rebind.
    pub fn wait_for_netdev(
        &self,
        pci: &PciAddr,
        timeout: std::time::Duration,
    ) -> Result<Option<IfName>, SysfsError> {
        let start = std::time::Instant::now();
        loop {
            if let Some(n) = self.netdevs(pci)?.into_iter().next() {
                return Ok(Some(n));
            }
            if start.elapsed() >= timeout {
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The PF netdev's MTU, from `<pf>/net/<name>/mtu`.
    pub fn pf_mtu(&self, pf: &PfPort) -> Result<u32, SysfsError> {
        read_u32(
            &self
                .pci_device(&pf.pci)
                .join("net")
                .join(pf.name.as_str())
                .join("mtu"),
        )
    }
}

/// Builds fake sysfs trees for tests (here and in the integration tests).
pub mod fake {
    use std::fs;
    use std::io;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};

    /// A PF with VFs in a fake tree rooted at `root`.
    pub struct FakePf {
        pub root: PathBuf,
        pub pci: String,
    }

    impl FakePf {
        /// Creates `bus/pci/devices/<pci>` with `net/<name>/mtu` and `sriov_numvfs`.
        pub fn create(root: &Path, pci: &str, name: &str, mtu: u32) -> io::Result<FakePf> {
            let dev = root.join("bus/pci/devices").join(pci);
            fs::create_dir_all(dev.join("net").join(name))?;
            fs::write(dev.join("net").join(name).join("mtu"), format!("{mtu}\n"))?;
            fs::write(dev.join("sriov_numvfs"), "0\n")?;
            Ok(FakePf {
                root: root.to_path_buf(),
                pci: pci.to_string(),
            })
        }

        /// Adds VF `index` at `vf_pci`, with a netdev (or none) and a driver.
        pub fn add_vf(
            &self,
            index: u32,
            vf_pci: &str,
            netdev: Option<&str>,
            driver: &str,
        ) -> io::Result<()> {
            let devices = self.root.join("bus/pci/devices");
            let vf = devices.join(vf_pci);
            fs::create_dir_all(&vf)?;
            symlink(format!("../{}", self.pci), vf.join("physfn"))?;
            symlink(
                format!("../{vf_pci}"),
                devices.join(&self.pci).join(format!("virtfn{index}")),
            )?;
            let drivers = self.root.join("bus/pci/drivers").join(driver);
            fs::create_dir_all(&drivers)?;
            symlink(format!("../../drivers/{driver}"), vf.join("driver"))?;
            if let Some(n) = netdev {
                fs::create_dir_all(vf.join("net").join(n))?;
            }
            let numvfs_path = devices.join(&self.pci).join("sriov_numvfs");
            let numvfs: u32 = fs::read_to_string(&numvfs_path)?
                .trim()
                .parse()
                .unwrap_or(0);
            fs::write(numvfs_path, format!("{}\n", numvfs.max(index + 1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakePf;
    use super::*;

    fn pci(s: &str) -> PciAddr {
        PciAddr::parse(s).expect("pci")
    }

    #[test]
    fn resolves_vfs_in_a_fake_tree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pf = FakePf::create(tmp.path(), "0000:af:00.1", "enp175s0f1", 9000).expect("pf");
        pf.add_vf(0, "0000:af:06.0", Some("enp175s6"), "iavf")
            .expect("vf0");
        pf.add_vf(1, "0000:af:06.1", None, "vfio-pci").expect("vf1");
        let sysfs = Sysfs::new(tmp.path());

        let vf0 = sysfs.resolve_vf(&pci("0000:af:06.0")).expect("vf0");
        assert_eq!(vf0.pf.name.as_str(), "enp175s0f1");
        assert_eq!(vf0.pf.pci.as_str(), "0000:af:00.1");
        assert_eq!(vf0.index, 0);
        assert_eq!(vf0.netdev.as_ref().map(IfName::as_str), Some("enp175s6"));
        assert_eq!(vf0.driver.as_deref(), Some("iavf"));
        assert!(!vf0.is_userspace());
        assert_eq!(sysfs.pf_mtu(&vf0.pf).expect("mtu"), 9000);

        let vf1 = sysfs.resolve_vf(&pci("0000:AF:06.1")).expect("vf1");
        assert_eq!(vf1.index, 1);
        assert!(vf1.netdev.is_none());
        assert!(vf1.is_userspace());
    }

    #[test]
    fn lists_every_vf() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pf = FakePf::create(tmp.path(), "0000:af:00.1", "pf0", 1500).expect("pf");
        pf.add_vf(1, "0000:af:06.1", Some("vf1"), "iavf")
            .expect("vf1");
        pf.add_vf(0, "0000:af:06.0", None, "vfio-pci").expect("vf0");
        let all = Sysfs::new(tmp.path()).all_vfs();
        assert_eq!(
            all.iter()
                .map(|v| (v.pci.as_str(), v.index))
                .collect::<Vec<_>>(),
            [("0000:af:06.0", 0), ("0000:af:06.1", 1)]
        );
    }

    #[test]
    fn names_missing_and_non_vf_devices() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pf = FakePf::create(tmp.path(), "0000:af:00.1", "pf0", 1500).expect("pf");
        pf.add_vf(0, "0000:af:06.0", Some("vf0"), "iavf")
            .expect("vf0");
        let sysfs = Sysfs::new(tmp.path());
        let err = sysfs.resolve_vf(&pci("0000:01:00.0")).expect_err("missing");
        assert!(matches!(err, SysfsError::NoDevice { .. }), "{err}");
        let err = sysfs
            .resolve_vf(&pci("0000:af:00.1"))
            .expect_err("pf is no vf");
        assert!(matches!(err, SysfsError::NotVf { .. }), "{err}");
        assert!(err.to_string().contains("0000:af:00.1"));
    }

    #[test]
    fn vf_missing_from_virtfn_links_is_reported() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pf = FakePf::create(tmp.path(), "0000:af:00.1", "pf0", 1500).expect("pf");
        pf.add_vf(0, "0000:af:06.0", Some("vf0"), "iavf")
            .expect("vf0");
        fs::write(
            tmp.path().join("bus/pci/devices/0000:af:00.1/sriov_numvfs"),
            "0\n",
        )
        .expect("numvfs");
        let err = Sysfs::new(tmp.path())
            .resolve_vf(&pci("0000:af:06.0"))
            .expect_err("no index");
        assert!(
            matches!(err, SysfsError::NoVfIndex { numvfs: 0, .. }),
            "{err}"
        );
    }
}
