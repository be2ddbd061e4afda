//! Which pod holds which VF, and the per-VF lock.
//!
//! Paths match sriov-cni's (`<dir>/pci/<pci>` and `<dir>/pci/vf_lock/<pci>.lock`)
//! so a node running both binaries during an upgrade still serialises on the
//! same lock and sees the same owners. sriov-cni writes the owner's netns path
//! as plain text; we write versioned JSON and read both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::ids::{ContainerId, IfName, PciAddr};
use crate::netns::NetNs;
use crate::state::{FileLock, Lifetime, StateDir};

const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfOwner {
    pub version: u32,
    pub netns: PathBuf,
    #[serde(rename = "containerID", default)]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

impl VfOwner {
    fn describe(&self) -> String {
        if self.container_id.is_empty() {
            format!("the pod in network namespace {}", self.netns.display())
        } else {
            format!(
                "container {} (interface {}, network namespace {})",
                self.container_id,
                self.ifname,
                self.netns.display()
            )
        }
    }
}

pub struct VfAllocations {
    dir: StateDir,
    locks: StateDir,
}

impl VfAllocations {
    /// `<state>/pci` and `<state>/pci/vf_lock`. Owners last `lifetime`:
    /// per boot in the plugins, since a reboot frees every VF.
    pub fn open(state: &StateDir, lifetime: &Lifetime) -> Result<VfAllocations, Error> {
        let dir = state.subdir_with("pci", lifetime)?;
        // Lock files hold no data: nothing there to sync or sweep.
        let locks = dir.subdir_with("vf_lock", &Lifetime::Durable)?;
        Ok(VfAllocations { dir, locks })
    }

    /// Serialises every operation on one VF across processes.
    pub fn lock(&self, pci: &PciAddr, timeout: Duration) -> Result<FileLock, Error> {
        Ok(FileLock::acquire(
            &self.locks,
            &format!("{pci}.lock"),
            timeout,
        )?)
    }

    /// The recorded owner, from our JSON or sriov-cni's plain netns path.
    pub fn owner(&self, pci: &PciAddr) -> Result<Option<VfOwner>, Error> {
        let Some(bytes) = self.dir.read(pci.as_str())? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        if text.starts_with('{') {
            return Ok(self.dir.read_json(pci.as_str(), VERSION)?);
        }
        Ok(Some(VfOwner {
            version: VERSION,
            netns: PathBuf::from(text),
            container_id: String::new(),
            ifname: String::new(),
        }))
    }

    /// Busy when another attachment holds the VF and its netns is alive.
    pub fn ensure_available(
        &self,
        pci: &PciAddr,
        container_id: &ContainerId,
        ifname: &IfName,
    ) -> Result<(), Error> {
        if let Some(owner) = self.owner(pci)? {
            let same =
                owner.container_id == container_id.as_str() && owner.ifname == ifname.as_str();
            if !same && NetNs::open(&owner.netns).is_ok() {
                return Err(Error::Busy {
                    what: format!("VF {pci}"),
                    owner: owner.describe(),
                });
            }
            if !same {
                tracing::info!(vf = %pci, stale = %owner.describe(), "reclaiming VF from a pod whose netns is gone");
            }
        }
        Ok(())
    }

    /// Records `netns` as the VF's owner. Refuses when another attachment
    /// holds it and its netns is still alive; takes it over when that netns is
    /// gone (the pod died without a DEL).
    pub fn claim(
        &self,
        pci: &PciAddr,
        netns: &Path,
        container_id: &ContainerId,
        ifname: &IfName,
    ) -> Result<(), Error> {
        self.ensure_available(pci, container_id, ifname)?;
        self.dir.write_json(
            pci.as_str(),
            &VfOwner {
                version: VERSION,
                netns: netns.to_path_buf(),
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            },
        )?;
        Ok(())
    }

    /// Forgets the owner if it is this attachment (or unknown, as in
    /// sriov-cni's format); another attachment's record is left alone.
    pub fn release(
        &self,
        pci: &PciAddr,
        container_id: &ContainerId,
        ifname: &IfName,
    ) -> Result<(), Error> {
        match self.owner(pci)? {
            Some(o)
                if !o.container_id.is_empty()
                    && (o.container_id != container_id.as_str() || o.ifname != ifname.as_str()) =>
            {
                tracing::warn!(vf = %pci, owner = %o.describe(), "not releasing a VF held by another attachment");
                Ok(())
            }
            Some(_) => {
                self.dir.remove(pci.as_str())?;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (PciAddr, ContainerId, IfName) {
        (
            PciAddr::parse("0000:af:06.0").expect("pci"),
            ContainerId::parse("c1").expect("cid"),
            IfName::parse("net1").expect("ifname"),
        )
    }

    #[test]
    fn live_owner_blocks_dead_owner_is_reclaimed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let allocs = VfAllocations::open(
            &StateDir::open(tmp.path()).expect("dir"),
            &Lifetime::this_boot(),
        )
        .expect("open");
        let (pci, cid, ifname) = ids();
        // Our own netns is alive: another container claiming the VF is refused.
        allocs
            .claim(&pci, Path::new("/proc/self/ns/net"), &cid, &ifname)
            .expect("first claim");
        let other = ContainerId::parse("c2").expect("cid");
        let err = allocs
            .claim(&pci, Path::new("/proc/self/ns/net"), &other, &ifname)
            .expect_err("busy");
        assert_eq!(err.code(), crate::error::code::DEVICE_BUSY);
        assert!(err.to_string().contains("container c1"), "{err}");
        // Releasing for the wrong attachment keeps the record.
        allocs.release(&pci, &other, &ifname).expect("no-op");
        assert!(allocs.owner(&pci).expect("owner").is_some());
        allocs.release(&pci, &cid, &ifname).expect("release");
        assert!(allocs.owner(&pci).expect("owner").is_none());
        // A record whose netns is gone is taken over.
        allocs
            .claim(&pci, Path::new("/nonexistent/netns"), &cid, &ifname)
            .expect("claim");
        allocs
            .claim(&pci, Path::new("/proc/self/ns/net"), &other, &ifname)
            .expect("reclaimed");
    }

    #[test]
    fn reads_sriov_cni_plain_text_records() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("dir");
        let allocs = VfAllocations::open(&state, &Lifetime::Durable).expect("open");
        let (pci, cid, ifname) = ids();
        state
            .subdir("pci")
            .expect("pci")
            .write(pci.as_str(), b"/proc/self/ns/net")
            .expect("legacy");
        let owner = allocs.owner(&pci).expect("owner").expect("some");
        assert_eq!(owner.netns, PathBuf::from("/proc/self/ns/net"));
        let err = allocs
            .claim(&pci, Path::new("/x"), &cid, &ifname)
            .expect_err("held by a live netns");
        assert!(err.to_string().contains("/proc/self/ns/net"), "{err}");
        allocs.release(&pci, &cid, &ifname).expect("legacy release");
        assert!(allocs.owner(&pci).expect("owner").is_none());
    }
}
