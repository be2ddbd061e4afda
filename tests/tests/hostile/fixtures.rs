//! One node per plugin for the hostile-input runs: a live attachment of a
//! victim container (B) that no hostile run may touch, a valid base config
//! for the attacking container (A) that the cases corrupt, decoy files
//! outside every state directory, and the placeholders cases use.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::snapshot::Watch;
use crate::common::*;

pub const VICTIM: &str = "ctr-victim";
pub const ATTACKER: &str = "ctr-a";
pub const DECOY: &str = "decoy: must stay untouched\n";

pub struct Fixture {
    pub plugin: &'static str,
    pub node: FakeNode,
    pub victim_ns: Netns,
    pub attacker_ns: Netns,
    /// Switches and the like, kept alive for the fixture's lifetime.
    pub extra_ns: Vec<Netns>,
    /// The attacker's valid config (cniVersion 1.1.0, keep list naming B).
    pub base: Value,
    pub vars: BTreeMap<String, String>,
    pub cni_path: String,
    pub watch: Watch,
    /// The plugin's state directory (`{state}`).
    pub state: PathBuf,
    /// B's DEL, in runtime order: (binary, config with the cached result).
    victim_del: Vec<(&'static str, Value)>,
}

fn with(mut base: Value, extra: Value) -> Value {
    super::corpus::merge(&mut base, &extra);
    base
}

fn keep_victim() -> Value {
    json!({"cni.dev/valid-attachments": [{"containerID": VICTIM, "ifname": "net1"}]})
}

/// A veth end named `net1` in `pod` with `addr`, its peer in `switch`.
fn pod_link(pod: &Netns, switch: &Netns, addr: &str) {
    let peer = format!("hx{}", unique());
    switch.ip(&[
        "link", "add", &peer, "type", "veth", "peer", "name", "net1", "netns", &pod.name,
    ]);
    switch.ip(&["link", "set", &peer, "up"]);
    pod.ip(&["addr", "add", addr, "dev", "net1"]);
    pod.ip(&["link", "set", "net1", "up"]);
}

impl Fixture {
    pub fn new(plugin: &'static str) -> Fixture {
        let vfs = match plugin {
            "sriov" | "ib-sriov" | "rdma" => 2,
            _ => 0,
        };
        let node = FakeNode::new(vfs, 9000);
        let root = node.dir.path().to_path_buf();
        let outside = root.join("outside");
        std::fs::create_dir_all(outside.join("decoy-dir")).expect("mkdir outside");
        std::fs::write(outside.join("decoy"), DECOY).expect("decoy");
        let victim_ns = Netns::new("hv");
        let attacker_ns = Netns::new("ha");
        let mut fx = Fixture {
            plugin,
            state: node.state.clone(),
            base: Value::Null,
            vars: BTreeMap::new(),
            cni_path: bin_dir().display().to_string(),
            watch: Watch {
                dirs: vec![root.clone()],
                netns: vec![victim_ns.name.clone(), attacker_ns.name.clone()],
                host_links: node.vfs.iter().map(|v| v.name.clone()).collect(),
            },
            victim_ns,
            attacker_ns,
            extra_ns: Vec::new(),
            victim_del: Vec::new(),
            node,
        };
        match plugin {
            "sriov" => fx.sriov(),
            "ib-sriov" => fx.ib_sriov(),
            "rdma" => fx.rdma(),
            "ippool" => fx.ippool(),
            "coordinator" => fx.coordinator(),
            other => panic!("no fixture for {other}"),
        }
        fx.base = with(fx.base.clone(), keep_victim());
        let vars = [
            ("state", fx.state.display().to_string()),
            ("tmp", root.display().to_string()),
            ("outside", outside.display().to_string()),
            ("sysfs", fx.node.sysfs.display().to_string()),
            ("victim", VICTIM.to_string()),
            ("attacker", ATTACKER.to_string()),
            ("netns", fx.attacker_ns.path()),
            ("victim_netns", fx.victim_ns.path()),
            ("pools", root.join("pools").display().to_string()),
        ];
        fx.vars = vars.into_iter().map(|(k, v)| (k.into(), v)).collect();
        for (i, vf) in fx.node.vfs.iter().enumerate() {
            fx.vars.insert(format!("vf{i}"), vf.pci.clone());
        }
        fx
    }

    fn victim_call(&self) -> Call {
        let mut c = Call::new("ADD", VICTIM, &self.victim_ns.path(), "net1");
        c.cni_path = self.cni_path.clone();
        c
    }

    /// Runs B's ADD chain and remembers its DEL.
    fn add_victim(&mut self, chain: Vec<(&'static str, Value)>) {
        let result = chain_add(&self.victim_call(), &chain);
        self.victim_del = chain
            .into_iter()
            .rev()
            .map(|(bin, conf)| (bin, with_prev(&conf, &result)))
            .collect();
    }

    fn sriov(&mut self) {
        let conf = |pci: &str| self.node.conf(pci, json!({"cniVersion": "1.1.0"}));
        let victim = conf(&self.node.vfs[0].pci);
        self.base = conf(&self.node.vfs[1].pci);
        self.add_victim(vec![("sriov", victim)]);
    }

    fn ib_sriov(&mut self) {
        for (i, vf) in self.node.vfs.iter().enumerate() {
            let mut s = fresh_vf();
            s["node_guid"] = json!("0c:42:a1:03:00:11:22:33");
            s["port_guid"] = json!("0c:42:a1:03:00:11:22:33");
            self.node.set_sim_vf(i as u32, &s);
            let dev = self.node.sysfs.join("bus/pci/devices").join(&vf.pci);
            std::fs::create_dir_all(dev.join(format!("infiniband/mlx5_{}", 10 + i)))
                .expect("mkdir infiniband");
        }
        let conf = |pci: &str, guid: &str| {
            json!({"cniVersion": "1.1.0", "name": "ib-rail1", "type": "ib-sriov", "deviceID": pci,
                   "guid": guid, "stateDir": self.node.state, "sysfsRoot": self.node.sysfs})
        };
        let victim = conf(&self.node.vfs[0].pci, "02:00:00:00:00:00:0b:01");
        self.base = conf(&self.node.vfs[1].pci, "02:00:00:00:00:00:0a:01");
        self.add_victim(vec![("ib-sriov", victim)]);
    }

    fn rdma(&mut self) {
        for (i, vf) in self.node.vfs.iter().enumerate() {
            let dev = self.node.sysfs.join("bus/pci/devices").join(&vf.pci);
            std::fs::create_dir_all(dev.join(format!("infiniband/mlx5_{}", 10 + i)))
                .expect("mkdir infiniband");
        }
        self.state = self.node.state.join("rdma");
        let rdma = |extra: Value| {
            with(
                json!({"cniVersion": "1.1.0", "name": "rail1", "type": "rdma",
                       "stateDir": self.state, "sysfsRoot": self.node.sysfs}),
                extra,
            )
        };
        let sriov = self
            .node
            .conf(&self.node.vfs[0].pci, json!({"cniVersion": "1.1.0"}));
        self.base = rdma(json!({
            "deviceID": self.node.vfs[1].pci,
            "prevResult": {"cniVersion": "1.1.0",
                           "interfaces": [{"name": "net1", "sandbox": self.attacker_ns.path()}]}
        }));
        let victim = rdma(json!({}));
        self.add_victim(vec![("sriov", sriov), ("rdma", victim)]);
    }

    fn ippool(&mut self) {
        let root = self.node.dir.path().to_path_buf();
        let pools = root.join("pools");
        std::fs::create_dir_all(&pools).expect("mkdir pools");
        for (name, net) in [("p", "10.77.0"), ("q", "10.78.0")] {
            let pool = json!({"name": name, "subnet": format!("{net}.0/24"),
                              "ips": [format!("{net}.1-{net}.50")], "gateway": format!("{net}.254")});
            std::fs::write(pools.join(format!("{name}.json")), pool.to_string()).expect("pool");
        }
        self.state = root.join("ipam");
        self.base = json!({"cniVersion": "1.1.0", "name": "rail1",
                           "ipam": {"type": "ippool", "dataDir": self.state, "poolsDir": pools,
                                    "default_ipv4_ippool": ["p"]}});
        let victim = self.base.clone();
        self.add_victim(vec![("ippool", victim)]);
    }

    fn coordinator(&mut self) {
        let switch = Netns::new("hs");
        pod_link(&self.victim_ns, &switch, "172.16.11.6/24");
        pod_link(&self.attacker_ns, &switch, "172.16.11.5/24");
        self.extra_ns.push(switch);
        self.state = self.node.dir.path().join("coordinator");
        let conf = |ns: &Netns, addr: &str| {
            json!({"cniVersion": "1.1.0", "name": "rail1", "type": "coordinator",
                   "stateDir": self.state, "detectGateway": false,
                   "prevResult": {"cniVersion": "1.1.0",
                                  "interfaces": [{"name": "net1", "sandbox": ns.path()}],
                                  "ips": [{"address": addr, "gateway": "172.16.11.254", "interface": 0}]}})
        };
        let victim = conf(&self.victim_ns, "172.16.11.6/24");
        self.base = conf(&self.attacker_ns, "172.16.11.5/24");
        self.add_victim(vec![("coordinator", victim)]);
    }

    /// The attacker's base config works: ADD, CHECK and DEL succeed (so a
    /// case's failure comes from what the case changed).
    pub fn control(&self) {
        let mut call = Call::new("ADD", ATTACKER, &self.attacker_ns.path(), "net1");
        call.cni_path = self.cni_path.clone();
        let result = call.run(self.plugin, &self.base).ok();
        let cached = with_prev(&self.base, &result);
        call.with("CHECK").run(self.plugin, &cached).ok();
        call.with("DEL").run(self.plugin, &cached).ok();
        for cmd in ["GC", "STATUS"] {
            call.with(cmd).run(self.plugin, &self.base).ok();
        }
    }

    /// B's DEL works after everything the cases did, and removes B's state.
    pub fn finish(&self) {
        if self.plugin == "ippool" {
            let held = &pool_state(&self.state, "p")["addresses"];
            assert_eq!(held, &json!(["10.77.0.1"]), "B's address is not B's alone");
        }
        let call = self.victim_call();
        for (bin, conf) in &self.victim_del {
            call.with("DEL").run(bin, conf).ok();
        }
        let left: Vec<String> = list_files(&self.state)
            .into_iter()
            .filter(|f| f.contains(VICTIM))
            .collect();
        assert!(left.is_empty(), "B's state survived its DEL: {left:?}");
        if self.plugin == "ippool" {
            let held = &pool_state(&self.state, "p")["addresses"];
            assert_eq!(held, &json!([]), "B's DEL left an address");
        }
    }
}
