//! What a node shows: its state for before/after comparisons, where the
//! simulated RDMA subsystem has each device (`rdma link`'s view), the
//! simulated PF's view of a VF; and an etcd reachable from a node.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::cluster::Node;
use super::{Result, canonical, files_under, ip_in, ip_json_in, read_json, run, setup};

/// One RDMA device as `rdma link` in the pod would list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaLink {
    pub device: String,
    /// The VF it belongs to.
    pub pci: String,
}

impl Node {
    /// Everything a pod's attachments may change on this node, for a
    /// before/after comparison: its links (name, MAC, MTU, flags,
    /// addresses, altnames), routes and rules, the simulated PF and RDMA
    /// state, the plugins' state files, the result cache and host-local's
    /// leases. Lock files are apart ([`Node::lock_files`]): sriov keeps one
    /// per VF once used, as sriov-cni does.
    pub fn snapshot(&self) -> Result<BTreeMap<String, String>> {
        let mut s = BTreeMap::new();
        let links = ip_json_in(&self.ns.name, &["-d", "addr", "show"])?;
        for l in links.as_array().cloned().unwrap_or_default() {
            let addrs: Vec<String> = l["addr_info"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|i| {
                            format!(
                                "{}/{}",
                                i["local"].as_str().unwrap_or_default(),
                                i["prefixlen"]
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            s.insert(
                format!("link {}", l["ifname"].as_str().unwrap_or_default()),
                format!(
                    "mac={} mtu={} flags={} altnames={} addrs={addrs:?}",
                    l["address"], l["mtu"], l["flags"], l["altnames"]
                ),
            );
        }
        for fam in ["-4", "-6"] {
            let routes = ip_in(&self.ns.name, &[fam, "route", "show", "table", "all"])?;
            s.insert(format!("routes {fam}"), routes);
            let rules = ip_in(&self.ns.name, &[fam, "rule", "show"])?;
            s.insert(format!("rules {fam}"), rules);
        }
        for vf in &self.vfs {
            s.insert(
                format!("pf-side {}", vf.pci),
                canonical(&self.pf_side_of(vf)?),
            );
        }
        let rdma = read_json(&self.sysfs.join("sim-rdma.json"))?;
        s.insert("rdma devices moved".into(), canonical(&rdma["devices"]));
        let files = super::state_files(&self.dir.join("state"));
        s.insert("state files".into(), files.join(","));
        s.insert(
            "result cache".into(),
            files_under(&self.dir.join("cache")).join(","),
        );
        let leases: Vec<String> = files_under(&self.dir.join("host-local"))
            .into_iter()
            .filter(|f| !f.ends_with("/lock") && !f.contains("last_reserved_ip"))
            .collect();
        s.insert("host-local leases".into(), leases.join(","));
        Ok(s)
    }

    /// The lock files in the plugins' state dirs, relative, sorted (the
    /// per-boot markers' locks aside).
    pub fn lock_files(&self) -> Vec<String> {
        files_under(&self.dir.join("state"))
            .into_iter()
            .filter(|f| f.ends_with(".lock") && !super::is_boot_marker(f))
            .collect()
    }

    /// The RDMA devices the simulated subsystem has in the netns at
    /// `netns_path` (a device whose netns is gone is back in the host, as
    /// with the kernel in exclusive mode), in rail order.
    pub fn rdma_links(&self, netns_path: &str) -> Result<Vec<RdmaLink>> {
        let v = read_json(&self.sysfs.join("sim-rdma.json"))?;
        Ok(self
            .vfs
            .iter()
            .filter(|vf| {
                v["devices"][&vf.rdma]["path"].as_str() == Some(netns_path)
                    && Path::new(netns_path).exists()
            })
            .map(|vf| RdmaLink {
                device: vf.rdma.clone(),
                pci: vf.pci.clone(),
            })
            .collect())
    }

    fn pf_side_of(&self, vf: &super::cluster::Vf) -> Result<Value> {
        read_json(
            &self
                .sysfs
                .join("bus/pci/devices")
                .join(&vf.pf_pci)
                .join("sim-vf0.json"),
        )
    }

    /// The simulated PF's view of the VF of rail `rail`.
    pub fn pf_side(&self, rail: usize) -> Result<Value> {
        let vf = self
            .vfs
            .get(rail)
            .ok_or_else(|| setup(format!("{}: no rail {rail}", self.name)))?;
        self.pf_side_of(vf)
    }
}

/// An etcd serving `127.0.0.1:<port>` inside a node's netns (what an
/// `etcd gateway` on each node gives the plugins), stopped on drop.
pub struct NodeEtcd {
    child: std::process::Child,
    netns: String,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl NodeEtcd {
    pub fn start(netns_path: &str, client_port: u16) -> Result<NodeEtcd> {
        let dir = tempfile::tempdir().map_err(|e| setup(format!("tempdir: {e}")))?;
        let endpoint = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{}", client_port + 1);
        let log = std::fs::File::create(dir.path().join("etcd.log"))
            .map_err(|e| setup(format!("etcd log: {e}")))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={netns_path}"))
            .args(["--", "etcd", "--name", "n", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| setup(format!("start etcd (Debian package etcd-server): {e}")))?;
        let etcd = NodeEtcd {
            child,
            netns: netns_path.to_string(),
            endpoint,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while etcd.etcdctl(&["endpoint", "health"]).is_err() {
            if std::time::Instant::now() > deadline {
                return Err(setup(format!(
                    "etcd at {} did not become healthy",
                    etcd.endpoint
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(etcd)
    }

    fn etcdctl(&self, args: &[&str]) -> Result<String> {
        run(Command::new("nsenter")
            .arg(format!("--net={}", self.netns))
            .args(["--", "etcdctl", "--endpoints", &self.endpoint])
            .args(args)
            .env("ETCDCTL_API", "3"))
    }

    /// Keys under `prefix`.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .etcdctl(&["get", "--prefix", prefix, "--keys-only"])?
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }
}

impl Drop for NodeEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
