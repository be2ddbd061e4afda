//! The emulated cluster: nodes (network namespaces with a fake sysfs and a
//! runtime each), rails (a switch namespace per network) and pods attached
//! as kubelet and Multus attach them. See the module docs of `harness`.

use std::path::{Path, PathBuf};

use libcni::sysfs::fake::FakePf;
use serde_json::{Map, Value, json};

use super::manifests::{Nad, PoolFile, read_pools};
use super::pod::Pod;
use super::runtime::{Attachment, Conflist, Runtime};
use super::{Result, ip_in, plugin_dir, setup};
use crate::{Netns, unique};

/// The node-specific keys a node's installer would template into the
/// configs (paths of this node), added when a list is loaded on a node.
#[derive(Clone, Debug)]
pub struct NodeLocal {
    pub state_root: PathBuf,
    pub sysfs: PathBuf,
    pub ipam_data: PathBuf,
    pub pools_dir: PathBuf,
}

/// Plugin keys [`NodeLocal`] fills in; an example must not set them.
const NODE_KEYS: [&str; 2] = ["stateDir", "sysfsRoot"];
const NODE_IPAM_KEYS: [&str; 2] = ["dataDir", "poolsDir"];

impl NodeLocal {
    /// The list with `stateDir`/`sysfsRoot` on our plugins and `dataDir`/
    /// `poolsDir` on ippool IPAM sections; nothing else changes. A list
    /// that sets one of them itself is refused (it would not run as-is).
    pub fn apply(&self, list: &Conflist) -> Result<Conflist> {
        let mut out = list.clone();
        let plugins = out.json["plugins"]
            .as_array_mut()
            .map_or(&mut [][..], Vec::as_mut_slice);
        for p in plugins {
            let t = p["type"].as_str().unwrap_or_default().to_string();
            let ours = matches!(t.as_str(), "sriov" | "ib-sriov" | "rdma" | "coordinator");
            let clash = NODE_KEYS.iter().find(|k| ours && p.get(**k).is_some());
            let ipam_clash = NODE_IPAM_KEYS
                .iter()
                .find(|k| p["ipam"]["type"] == "ippool" && p["ipam"].get(**k).is_some());
            if let Some(k) = clash.or(ipam_clash) {
                return Err(setup(format!(
                    "{}: plugin {t} sets the node-local key {k}",
                    list.name
                )));
            }
            if ours {
                p["stateDir"] = json!(self.state_root.join(&t));
            }
            if matches!(t.as_str(), "sriov" | "ib-sriov" | "rdma") {
                p["sysfsRoot"] = json!(self.sysfs);
            }
            if p["ipam"]["type"] == "ippool" {
                p["ipam"]["dataDir"] = json!(self.ipam_data);
                p["ipam"]["poolsDir"] = json!(self.pools_dir);
            }
        }
        Ok(out)
    }
}

/// What a rail's VFs are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfKind {
    /// Ethernet/RoCE VF (`sriov`).
    Ethernet,
    /// InfiniBand VF, IPoIB netdev (`ib-sriov`): it has node and port GUIDs.
    Infiniband,
}

/// The original GUID of every IB VF stand-in (as the operator assigns them).
pub const IB_VF_GUID: &str = "0c:42:a1:03:00:11:22:33";

/// MTU of the PFs and of the switch ports: room for `mtu: 8000` examples.
pub const FABRIC_MTU: u32 = 9000;

/// One rail: a network (config list) and its switch.
pub struct Rail {
    pub list: Conflist,
    pub kind: VfKind,
    pub pools: Vec<PoolFile>,
    pub switch: Netns,
}

/// A node's stand-in VF for one rail.
#[derive(Clone, Debug)]
pub struct Vf {
    pub pf_pci: String,
    pub pci: String,
    pub netdev: String,
    pub rdma: String,
    /// Its port on the rail's switch bridge.
    pub switch_port: String,
}

pub struct Node {
    pub name: String,
    pub ns: Netns,
    pub dir: PathBuf,
    pub sysfs: PathBuf,
    /// One per rail, in the cluster's rail order.
    pub vfs: Vec<Vf>,
    pub runtime: Runtime,
    pub local: NodeLocal,
    /// The pod network (eth0) stand-in: Debian's ptp + host-local.
    pub eth0: Conflist,
}

/// Nodes, rails and their switches.
pub struct Cluster {
    pub rails: Vec<Rail>,
    pub nodes: Vec<Node>,
    pub pools_dir: PathBuf,
    pub ipam_data: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// A cluster of `nodes` nodes with one rail per config list. The lists
    /// are taken as written; each node loads them with its own [`NodeLocal`].
    pub fn new(lists: &[Conflist], nodes: usize, pools_dir: &Path) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("cni-cluster.")
            .tempdir()
            .map_err(|e| setup(format!("tempdir: {e}")))?;
        let pools = read_pools(pools_dir)?;
        let mut rails = Vec::new();
        for list in lists {
            rails.push(Cluster::rail(list, &pools)?);
        }
        let ipam_data = dir.path().join("ippool");
        let mut cluster = Cluster {
            rails,
            nodes: Vec::new(),
            pools_dir: pools_dir.to_path_buf(),
            ipam_data,
            dir,
        };
        for n in 1..=nodes {
            let node = cluster.new_node(n)?;
            cluster.nodes.push(node);
        }
        Ok(cluster)
    }

    /// A cluster whose rails are these NADs' config lists.
    pub fn from_nads(nads: &[&Nad], nodes: usize, pools_dir: &Path) -> Result<Cluster> {
        let lists: Vec<Conflist> = nads.iter().map(|n| n.config.clone()).collect();
        Cluster::new(&lists, nodes, pools_dir)
    }

    fn rail(list: &Conflist, pools: &[PoolFile]) -> Result<Rail> {
        let kind = if list.types().iter().any(|t| t == "ib-sriov") {
            VfKind::Infiniband
        } else {
            VfKind::Ethernet
        };
        let mut mine = Vec::new();
        for name in list.pool_names() {
            let p = pools
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| setup(format!("{}: pool {name} is in no pool file", list.name)))?;
            mine.push(p.clone());
        }
        let switch = Netns::new("sw");
        let sw = switch.name.as_str();
        let mtu = FABRIC_MTU.to_string();
        ip_in(
            sw,
            &[
                "link",
                "add",
                "br0",
                "mtu",
                &mtu,
                "type",
                "bridge",
                "forward_delay",
                "0",
            ],
        )?;
        for p in mine.iter().filter(|p| !p.gateway.is_empty()) {
            let cidr = p.gateway_cidr();
            let mut args = vec!["addr", "add", cidr.as_str(), "dev", "br0"];
            if p.is_v6() {
                args.push("nodad");
            }
            ip_in(sw, &args)?;
        }
        ip_in(sw, &["link", "set", "br0", "up"])?;
        Ok(Rail {
            list: list.clone(),
            kind,
            pools: mine,
            switch,
        })
    }

    /// Node `n` (1-based): netns, fake sysfs with a PF and VF per rail, its
    /// runtime and its local settings.
    fn new_node(&self, n: usize) -> Result<Node> {
        let name = format!("node{n}");
        let dir = self.dir.path().join(&name);
        let sysfs = dir.join("sys");
        let ns = Netns::new(&name);
        let mut vfs = Vec::new();
        for (i, rail) in self.rails.iter().enumerate() {
            vfs.push(Cluster::vf(&ns, &sysfs, i + 1, rail, &name)?);
        }
        // Host preparation: the RDMA subsystem in exclusive netns mode.
        std::fs::create_dir_all(&sysfs)
            .and_then(|()| {
                std::fs::write(
                    sysfs.join("sim-rdma.json"),
                    json!({"mode": "exclusive", "devices": {}}).to_string(),
                )
            })
            .map_err(|e| setup(format!("{}: {e}", sysfs.display())))?;
        let mut runtime = Runtime::new(
            vec![plugin_dir(), PathBuf::from("/usr/lib/cni")],
            dir.join("cache"),
        );
        runtime.node_netns = Some(ns.path());
        // The node's identity for ippool: every emulated node has the host's
        // hostname, so each runtime passes its node name in the plugins'
        // environment, as a node's container runtime can.
        runtime.env.push(("K8S_NODE_NAME".into(), name.clone()));
        let local = NodeLocal {
            state_root: dir.join("state"),
            sysfs: sysfs.clone(),
            ipam_data: self.ipam_data.clone(),
            pools_dir: self.pools_dir.clone(),
        };
        let eth0 = Conflist::from_json(
            json!({
                "cniVersion": "1.0.0", "name": "cluster-eth0",
                "plugins": [{"type": "ptp", "ipMasq": false, "mtu": 1500,
                    "ipam": {"type": "host-local", "dataDir": dir.join("host-local"),
                             "ranges": [[{"subnet": format!("10.244.{n}.0/24")}]],
                             "routes": [{"dst": "0.0.0.0/0"}]}}]
            }),
            "eth0 network",
        )?;
        Ok(Node {
            name,
            ns,
            dir,
            sysfs,
            vfs,
            runtime,
            local,
            eth0,
        })
    }

    /// Rail `r`'s VF on a node: PF `0000:<0x10+r>:00.0` with VF 0 at
    /// `0000:<0x10+r>:00.2`, netdev `ens<r>f0v0` (a veth end in the node
    /// whose peer is port `<node>` of the rail's bridge), RDMA device
    /// `mlx5_<7+r>`, a fresh PF-side state (IB VFs with [`IB_VF_GUID`]).
    fn vf(ns: &Netns, sysfs: &Path, r: usize, rail: &Rail, node: &str) -> Result<Vf> {
        let pf_pci = format!("0000:{:02x}:00.0", 0x10 + r);
        let pci = format!("0000:{:02x}:00.2", 0x10 + r);
        let netdev = format!("ens{r}f0v0");
        let sw = &rail.switch.name;
        ip_in(
            &ns.name,
            &[
                "link", "add", &netdev, "type", "veth", "peer", "name", node, "netns", sw,
            ],
        )?;
        let mtu = FABRIC_MTU.to_string();
        ip_in(
            sw,
            &["link", "set", node, "mtu", &mtu, "master", "br0", "up"],
        )?;
        let io = |e: std::io::Error| setup(format!("fake sysfs for {pci}: {e}"));
        let pf = FakePf::create(sysfs, &pf_pci, &format!("ens{r}f0np0"), FABRIC_MTU).map_err(io)?;
        pf.add_vf(0, &pci, Some(&netdev), "mlx5_core").map_err(io)?;
        let rdma = format!("mlx5_{}", 7 + r);
        let pci_dir = sysfs.join("bus/pci/devices").join(&pci);
        std::fs::create_dir_all(pci_dir.join("infiniband").join(&rdma)).map_err(io)?;
        let mut hw = json!({"mac": "00:00:00:00:00:00", "vlan": {"id": 0, "qos": 0, "proto": "802.1Q"},
                            "spoofchk": true, "trust": false, "link_state": "auto",
                            "rate": {"min": 0, "max": 0}});
        if rail.kind == VfKind::Infiniband {
            hw["node_guid"] = json!(IB_VF_GUID);
            hw["port_guid"] = json!(IB_VF_GUID);
        }
        let pf_dir = sysfs.join("bus/pci/devices").join(&pf_pci);
        std::fs::write(pf_dir.join("sim-vf0.json"), hw.to_string()).map_err(io)?;
        Ok(Vf {
            pf_pci,
            pci,
            netdev,
            rdma,
            switch_port: node.to_string(),
        })
    }

    /// The rail whose network is `name`.
    pub fn rail_index(&self, name: &str) -> Result<usize> {
        self.rails
            .iter()
            .position(|r| r.list.name == name)
            .ok_or_else(|| setup(format!("no rail for network {name}")))
    }

    pub fn node(&self, node: usize) -> Result<&Node> {
        self.nodes
            .get(node)
            .ok_or_else(|| setup(format!("no node {node}")))
    }

    /// A pod on node `node` (0-based) with eth0 from the node's pod network.
    pub fn create_pod(&self, node: usize, name: &str, namespace: &str) -> Result<Pod> {
        let n = self.node(node)?;
        let pod = Pod {
            name: name.to_string(),
            namespace: namespace.to_string(),
            node,
            container_id: format!("{name}-{}", unique()),
            ns: Netns::new("pod"),
            rails: Vec::new(),
        };
        let att = self.attachment(&pod, "eth0", None);
        n.runtime.add(&n.eth0, &att)?;
        Ok(pod)
    }

    /// The runtime's description of `ifname` of `pod`: Kubernetes CNI_ARGS
    /// as Multus passes them, and for a rail the VF the device plugin
    /// allocated as capability `deviceID`.
    pub fn attachment(&self, pod: &Pod, ifname: &str, rail: Option<usize>) -> Attachment {
        let mut caps = Map::new();
        if let Some(vf) = rail.and_then(|r| self.nodes.get(pod.node)?.vfs.get(r)) {
            caps.insert("deviceID".into(), json!(vf.pci));
        }
        Attachment {
            container_id: pod.container_id.clone(),
            netns: pod.path(),
            ifname: ifname.to_string(),
            args: vec![
                ("IgnoreUnknown".into(), "true".into()),
                ("K8S_POD_NAMESPACE".into(), pod.namespace.clone()),
                ("K8S_POD_NAME".into(), pod.name.clone()),
                (
                    "K8S_POD_INFRA_CONTAINER_ID".into(),
                    pod.container_id.clone(),
                ),
            ],
            capability_args: caps,
        }
    }

    /// The rail's list as `node` loads it (node-local keys added).
    pub fn list_on(&self, node: usize, rail: usize) -> Result<Conflist> {
        let r = self
            .rails
            .get(rail)
            .ok_or_else(|| setup(format!("no rail {rail}")))?;
        self.node(node)?.local.apply(&r.list)
    }

    /// ADD of rail `rail` as `ifname`, with extra capability args. A failed
    /// ADD is followed by DEL, as kubelet does.
    pub fn attach_with(
        &self,
        pod: &mut Pod,
        rail: usize,
        ifname: &str,
        caps: &Value,
    ) -> Result<Value> {
        let list = self.list_on(pod.node, rail)?;
        let mut att = self.attachment(pod, ifname, Some(rail));
        if let Some(extra) = caps.as_object() {
            att.capability_args.extend(extra.clone());
        }
        let runtime = &self.node(pod.node)?.runtime;
        match runtime.add(&list, &att) {
            Ok(r) => {
                pod.rails.push((rail, ifname.to_string(), r.clone()));
                Ok(r)
            }
            Err(e) => {
                let _ = runtime.del(&list, &att);
                Err(e)
            }
        }
    }

    pub fn attach(&self, pod: &mut Pod, rail: usize, ifname: &str) -> Result<Value> {
        self.attach_with(pod, rail, ifname, &json!({}))
    }

    fn rail_att(&self, pod: &Pod, rail: usize, ifname: &str) -> Result<(Conflist, Attachment)> {
        Ok((
            self.list_on(pod.node, rail)?,
            self.attachment(pod, ifname, Some(rail)),
        ))
    }

    /// CHECK of every attachment of the pod, eth0 included.
    pub fn check_pod(&self, pod: &Pod) -> Result<()> {
        let n = self.node(pod.node)?;
        n.runtime
            .check(&n.eth0, &self.attachment(pod, "eth0", None))?;
        for (rail, ifname, _) in &pod.rails {
            let (list, att) = self.rail_att(pod, *rail, ifname)?;
            n.runtime.check(&list, &att)?;
        }
        Ok(())
    }

    /// CHECK of one rail attachment.
    pub fn check_rail(&self, pod: &Pod, rail: usize, ifname: &str) -> Result<()> {
        let (list, att) = self.rail_att(pod, rail, ifname)?;
        self.node(pod.node)?.runtime.check(&list, &att)
    }

    /// DEL of the pod's rails (last attached first), then eth0, then its
    /// netns goes, as kubelet tears a pod down.
    pub fn delete_pod(&self, pod: &mut Pod) -> Result<()> {
        let n = self.node(pod.node)?;
        while let Some((rail, ifname, _)) = pod.rails.pop() {
            let (list, att) = self.rail_att(pod, rail, &ifname)?;
            n.runtime.del(&list, &att)?;
        }
        n.runtime
            .del(&n.eth0, &self.attachment(pod, "eth0", None))?;
        pod.ns.delete();
        Ok(())
    }

    /// STATUS of every rail's list on every node.
    pub fn status_all(&self) -> Result<()> {
        for node in 0..self.nodes.len() {
            for rail in 0..self.rails.len() {
                self.node(node)?
                    .runtime
                    .status(&self.list_on(node, rail)?)?;
            }
        }
        Ok(())
    }

    /// GC of every rail's list on `node`, the runtime knowing the
    /// attachments `valid` (containerID, ifname); returns how many cached
    /// attachments it DELeted.
    pub fn gc_node(&self, node: usize, valid: &[(String, String)]) -> Result<usize> {
        let mut deleted = 0;
        for rail in 0..self.rails.len() {
            let list = self.list_on(node, rail)?;
            deleted += self.node(node)?.runtime.gc(&list, valid)?.len();
        }
        Ok(deleted)
    }

    /// Allocation state of every pool the rails use in the shared file
    /// store: (pool, allocated addresses).
    pub fn pool_usage(&self) -> Result<Vec<(String, Vec<String>)>> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for rail in &self.rails {
            for p in &rail.pools {
                if seen.contains(&p.name) {
                    continue;
                }
                seen.push(p.name.clone());
                let report = self.pool_report(&p.name)?;
                let addrs = report["addresses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((p.name.clone(), addrs));
            }
        }
        Ok(out)
    }

    /// The raw report of one pool (`FileStore::inspect`), Null without state.
    pub fn pool_report(&self, pool: &str) -> Result<Value> {
        if !self.ipam_data.exists() {
            return Ok(Value::Null);
        }
        let store = libcni::pool::FileStore::open(&self.ipam_data)
            .map_err(|e| setup(format!("file store {}: {e}", self.ipam_data.display())))?;
        Ok(store
            .inspect(pool)
            .map_err(|e| setup(format!("pool {pool}: {e}")))?
            .unwrap_or(Value::Null))
    }
}
