//! Stand-in hardware for the sections that move devices: VFs that are veth
//! ends in the host, listed in fake sysfs trees with the test build's
//! simulated PF and RDMA device, and per-rail "switches" (a bridge in a
//! netns of its own holding the rail's gateway address, which answers the
//! coordinator's gateway probe).

use std::path::PathBuf;

use integration::{Netns, ip, ip_ok};
use libcni::sysfs::fake::FakePf;
use serde_json::json;

/// One stand-in VF: a host veth end, its PCI address in one fake tree.
#[derive(Clone, Debug)]
pub struct Vf {
    pub netdev: String,
    pub pci: String,
    pub sysfs: PathBuf,
}

/// `slots` x `rails` VFs. Slot `s` has a fake sysfs tree of its own with one
/// PF per rail, so concurrent pods (one slot each) never share the
/// simulated PF's or RDMA subsystem's files (the simulation is per tree,
/// where the kernel is per device).
pub struct Rig {
    pub dir: tempfile::TempDir,
    /// Kept for their lifetime: dropping a `Netns` deletes it.
    _switches: Vec<Netns>,
    /// `vfs[slot][rail]`.
    pub vfs: Vec<Vec<Vf>>,
}

pub fn gateway(rail: usize) -> String {
    format!("10.{}.0.1", 100 + rail)
}

pub fn subnet(rail: usize) -> String {
    format!("10.{}.0.0/24", 100 + rail)
}

impl Rig {
    pub fn new(slots: usize, rails: usize) -> Rig {
        Rig::new_in(slots, rails, &std::env::temp_dir())
    }

    /// With its state, IPAM data and fake sysfs under `parent` (a tmpfs
    /// shows what the state files' fsyncs cost).
    pub fn new_in(slots: usize, rails: usize, parent: &std::path::Path) -> Rig {
        let dir = tempfile::tempdir_in(parent).expect("tempdir");
        let mut switches = Vec::new();
        for r in 0..rails {
            let sw = Netns::new("bsw");
            sw.ip(&["link", "add", "br0", "type", "bridge"]);
            sw.ip(&[
                "addr",
                "add",
                &format!("{}/24", gateway(r + 1)),
                "dev",
                "br0",
            ]);
            sw.ip(&["link", "set", "br0", "up"]);
            switches.push(sw);
        }
        let mut vfs = Vec::new();
        for s in 0..slots {
            let sysfs = dir.path().join(format!("sys{s}"));
            let mut row = Vec::new();
            for (r, sw) in switches.iter().enumerate() {
                let (host, peer) = (format!("bv{s}r{r}"), format!("bw{s}r{r}"));
                // Leftovers of an interrupted earlier run.
                if ip_ok(&["link", "show", &host]) {
                    ip(&["link", "del", &host]);
                }
                ip(&[
                    "link", "add", &host, "type", "veth", "peer", "name", &peer, "netns", &sw.name,
                ]);
                sw.ip(&["link", "set", &peer, "master", "br0"]);
                sw.ip(&["link", "set", &peer, "up"]);
                let bus = 0x20 + s;
                let pf_pci = format!("0000:{bus:02x}:{r:02x}.0");
                let vf_pci = format!("0000:{bus:02x}:{r:02x}.1");
                let pf = FakePf::create(&sysfs, &pf_pci, &format!("pf{r}"), 9000).expect("fake PF");
                pf.add_vf(0, &vf_pci, Some(&host), "mlx5_core")
                    .expect("fake VF");
                let pf_dir = sysfs.join("bus/pci/devices").join(&pf_pci);
                let fresh = json!({"mac": "00:00:00:00:00:00", "vlan": {"id": 0, "qos": 0, "proto": "802.1Q"},
                    "spoofchk": true, "trust": false, "link_state": "auto", "rate": {"min": 0, "max": 0}});
                std::fs::write(pf_dir.join("sim-vf0.json"), fresh.to_string()).expect("sim VF");
                let ib = sysfs
                    .join("bus/pci/devices")
                    .join(&vf_pci)
                    .join("infiniband");
                std::fs::create_dir_all(ib.join(format!("mlx5_{r}"))).expect("RDMA device");
                row.push(Vf {
                    netdev: host,
                    pci: vf_pci,
                    sysfs: sysfs.clone(),
                });
            }
            vfs.push(row);
        }
        Rig {
            dir,
            _switches: switches,
            vfs,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for row in &self.vfs {
            for vf in row {
                let _ = ip_ok(&["link", "del", &vf.netdev]);
            }
        }
    }
}
