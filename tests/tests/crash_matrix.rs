//! Crash consistency: for every failpoint of every plugin, the plugin is
//! SIGKILLed there (`FAILPOINTS=<name>=return(kill)`), then the runtime does
//! what it does after a failed ADD or DEL, and the host must end up exactly
//! as it was.
//!
//! Each row gets a fresh fake node (stand-in VFs, fake sysfs, simulated PF
//! and RDMA subsystem, ippool file store) and pod netns. The node is primed
//! with one ADD/DEL of another container first, so the snapshot holds the
//! documented steady state (pool files, VF lock files). Then:
//! - ADD failpoint: ADD killed there (proved by the exit status: SIGKILL,
//!   not an ordinary failure), DEL (must succeed; host as before), ADD again
//!   (must succeed), DEL, GC with no valid attachments: host as before.
//! - DEL failpoint: ADD, DEL killed there, DEL again (must succeed; host as
//!   before), GC: host as before.
//!
//! The snapshot: each VF's host netdev (by name and by ifindex: name, MAC,
//! MTU, altnames), its PF-side attributes (simulated PF), RDMA device
//! locations, the pod netns's links, addresses, routes (every table) and
//! rules, and every file under the state and data dirs with its content
//! (pools as their usage). The failpoints come from the source, so a new one
//! without a row here fails the test. The matrix is printed and written to
//! `<target>/tmp/crash-matrix.txt`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use common::*;
use integration::crash::{self, Invocation};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Add,
    Del,
}

impl Phase {
    fn of(name: &str) -> Option<Phase> {
        if name.contains(".add.") {
            Some(Phase::Add)
        } else if name.contains(".del.") {
            Some(Phase::Del)
        } else {
            None
        }
    }

    fn word(self) -> &'static str {
        match self {
            Phase::Add => "ADD",
            Phase::Del => "DEL",
        }
    }
}

/// The plugins, each in the chain it runs in, and the libcni failpoints its
/// ADD or DEL reaches (its own `<plugin>.*` ones are found in the source).
const SCENARIOS: [(&str, &[(&str, Phase)]); 5] = [
    (
        "sriov",
        &[
            ("vf.after_vlan", Phase::Add),
            ("vf.after_mac", Phase::Add),
            ("vf.after_rate", Phase::Add),
            ("vf.after_spoofchk", Phase::Add),
            ("vf.after_trust", Phase::Add),
            ("vf.after_link_state", Phase::Add),
            ("netdev.into_pod.after_move", Phase::Add),
            ("state.write.before_rename", Phase::Add),
            ("netdev.to_host.after_move", Phase::Del),
        ],
    ),
    (
        "ib-sriov",
        &[
            ("vf.after_link_state", Phase::Add),
            ("vf.after_node_guid", Phase::Add),
            ("vf.after_port_guid", Phase::Add),
            ("netdev.into_pod.after_move", Phase::Add),
            ("state.write.before_rename", Phase::Add),
            ("netdev.to_host.after_move", Phase::Del),
        ],
    ),
    ("rdma", &[("state.write.before_rename", Phase::Add)]),
    (
        "ippool",
        &[
            ("state.double.torn_write", Phase::Add),
            ("state.double.torn_write", Phase::Del),
        ],
    ),
    ("coordinator", &[("state.write.before_rename", Phase::Add)]),
];

const GUID_ORIG: &str = "0c:42:a1:03:00:11:22:33";
const GUID_NEW: &str = "02:00:00:00:00:00:0a:01";

/// One row's world: a fake node, a pod, and the chain the plugin runs in.
struct Rig {
    node: FakeNode,
    pod: Netns,
    /// The node side of the pod's eth0 (coordinator's chain).
    _cluster: Option<Netns>,
    chain: Vec<(&'static str, Value)>,
    /// Index in `chain` of the plugin under test.
    target: usize,
    rdma_devs: Vec<String>,
    /// The stand-in VF's host ifindex, to find it whatever its name.
    vf_index: u64,
}

fn ippool_ipam(node: &FakeNode) -> Value {
    json!({"type": "ippool", "dataDir": node.dir.path().join("ipam"), "poolsDir": "/nonexistent",
           "pools": [
               {"name": "crash-v4", "subnet": "10.77.0.0/24", "ips": ["10.77.0.10-10.77.0.20"], "gateway": "10.77.0.1"},
               {"name": "crash-v6", "subnet": "fd77::/64", "ips": ["fd77::10-fd77::20"], "gateway": "fd77::1"}
           ],
           "default_ipv4_ippool": ["crash-v4"], "default_ipv6_ippool": ["crash-v6"]})
}

fn versioned(mut c: Value) -> Value {
    // 1.1.0 throughout: GC needs it.
    c["cniVersion"] = json!("1.1.0");
    c
}

fn sriov_conf(node: &FakeNode) -> Value {
    versioned(node.conf(
        &node.vfs[0].pci,
        json!({"vlan": 7, "vlanQoS": 1, "mac": "02:00:00:00:77:01", "min_tx_rate": 1, "max_tx_rate": 50,
               "spoofchk": "off", "trust": "on", "link_state": "enable", "mtu": 4000,
               "ipam": ippool_ipam(node)}),
    ))
}

fn add_rdma_dev(node: &FakeNode, dev: &str) {
    let d = node
        .sysfs
        .join("bus/pci/devices")
        .join(&node.vfs[0].pci)
        .join("infiniband")
        .join(dev);
    std::fs::create_dir_all(d).expect("mkdir infiniband");
}

impl Rig {
    fn new(plugin: &str) -> Rig {
        let node = FakeNode::new(1, 9000);
        let pod = Netns::new("crash");
        let vf_index = ip_json(&["link", "show", &node.vfs[0].name])[0]["ifindex"]
            .as_u64()
            .unwrap_or_default();
        let mut cluster = None;
        let mut rdma_devs = Vec::new();
        let (chain, target) = match plugin {
            "sriov" => (vec![("sriov", sriov_conf(&node))], 0),
            "ib-sriov" => {
                let mut s = fresh_vf();
                s["node_guid"] = json!(GUID_ORIG);
                s["port_guid"] = json!(GUID_ORIG);
                node.set_sim_vf(0, &s);
                add_rdma_dev(&node, "mlx5_10");
                rdma_devs.push("mlx5_10".to_string());
                let c = json!({"cniVersion": "1.1.0", "name": "ib-rail", "type": "ib-sriov",
                               "deviceID": node.vfs[0].pci, "stateDir": node.state, "sysfsRoot": node.sysfs,
                               "link_state": "enable", "rdmaIsolation": true, "guid": GUID_NEW,
                               "ipam": ippool_ipam(&node)});
                (vec![("ib-sriov", c)], 0)
            }
            "rdma" => {
                add_rdma_dev(&node, "mlx5_10");
                rdma_devs.push("mlx5_10".to_string());
                let r = json!({"cniVersion": "1.1.0", "name": "rail1", "type": "rdma",
                               "stateDir": node.dir.path().join("rdma-state"), "sysfsRoot": node.sysfs});
                (vec![("sriov", sriov_conf(&node)), ("rdma", r)], 1)
            }
            "ippool" => {
                let c = versioned(
                    json!({"name": "rail1", "type": "sriov", "ipam": ippool_ipam(&node)}),
                );
                (vec![("ippool", c)], 0)
            }
            "coordinator" => {
                let c = Netns::new("crashk8s");
                let peer = format!("ck{}", unique());
                c.ip(&[
                    "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns",
                    &pod.name,
                ]);
                c.ip(&["addr", "add", "169.254.1.1/32", "dev", &peer]);
                c.ip(&["link", "set", &peer, "up"]);
                // No IPv6 link-local address appearing (after DAD) mid-snapshot.
                pod.ip(&["link", "set", "eth0", "addrgenmode", "none"]);
                pod.ip(&["addr", "add", "10.244.7.5/32", "dev", "eth0"]);
                pod.ip(&["link", "set", "eth0", "up"]);
                pod.ip(&[
                    "route",
                    "add",
                    "169.254.1.1",
                    "dev",
                    "eth0",
                    "scope",
                    "link",
                ]);
                pod.ip(&[
                    "route",
                    "add",
                    "default",
                    "via",
                    "169.254.1.1",
                    "dev",
                    "eth0",
                ]);
                cluster = Some(c);
                // The rail takes the main default: eth0's moves to its own table.
                let k = json!({"cniVersion": "1.1.0", "name": "rail1", "type": "coordinator",
                               "stateDir": node.dir.path().join("coord-state"),
                               "detectGateway": false, "detectIPConflict": false,
                               "podDefaultRouteNic": "net1", "podMACPrefix": "0a:1b"});
                (vec![("sriov", sriov_conf(&node)), ("coordinator", k)], 1)
            }
            other => panic!("no crash scenario for plugin {other}"),
        };
        Rig {
            node,
            pod,
            _cluster: cluster,
            chain,
            target,
            rdma_devs,
            vf_index,
        }
    }

    fn invocation(&self, command: &str, cid: &str) -> Invocation {
        let mut i = Invocation::new(command, cid, &self.pod.path(), "net1");
        i.cni_path = bin_dir().display().to_string();
        i
    }

    /// ADD through the chain, each plugin given the previous result; the
    /// plugin under test killed at `kill_at`. Err says what went wrong.
    fn add(&self, cid: &str, kill_at: Option<&str>) -> Result<Value, String> {
        let mut prev: Option<Value> = None;
        for (i, (plugin, conf)) in self.chain.iter().enumerate() {
            let mut c = conf.clone();
            if let Some(p) = &prev {
                c["prevResult"] = p.clone();
            }
            let inv = self.invocation("ADD", cid);
            let run = match kill_at.filter(|_| i == self.target) {
                Some(fp) => {
                    let run = inv.killed_at(fp).run(&bin(plugin), &c);
                    if run.killed() {
                        return Err("killed".into());
                    }
                    return Err(format!(
                        "{plugin} ADD was not killed at {fp}: {}",
                        run.describe()
                    ));
                }
                None => inv.run(&bin(plugin), &c),
            };
            if !run.succeeded() {
                return Err(format!("{plugin} ADD failed: {}", run.describe()));
            }
            prev = Some(run.result());
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL through the chain in reverse (with the cached result when the
    /// runtime has one); the plugin under test killed at `kill_at`.
    fn del(&self, cid: &str, cached: Option<&Value>, kill_at: Option<&str>) -> Result<(), String> {
        for (i, (plugin, conf)) in self.chain.iter().enumerate().rev() {
            let mut c = conf.clone();
            if let Some(r) = cached {
                c["prevResult"] = r.clone();
            }
            let inv = self.invocation("DEL", cid);
            if let Some(fp) = kill_at.filter(|_| i == self.target) {
                let run = inv.killed_at(fp).run(&bin(plugin), &c);
                return if run.killed() {
                    Ok(())
                } else {
                    Err(format!(
                        "{plugin} DEL was not killed at {fp}: {}",
                        run.describe()
                    ))
                };
            }
            let run = inv.run(&bin(plugin), &c);
            if !run.succeeded() {
                return Err(format!("{plugin} DEL failed: {}", run.describe()));
            }
        }
        Ok(())
    }

    /// GC with an empty list of valid attachments, to every plugin of the chain.
    fn gc(&self) -> Result<(), String> {
        for (plugin, conf) in &self.chain {
            let mut c = conf.clone();
            c["cni.dev/valid-attachments"] = json!([]);
            let run = self.invocation("GC", "gc").run(&bin(plugin), &c);
            if !run.succeeded() {
                return Err(format!("{plugin} GC failed: {}", run.describe()));
            }
        }
        Ok(())
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        let mut s = self.node.snapshot();
        let by_index = ip_json(&["link", "show"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|l| l["ifindex"].as_u64() == Some(self.vf_index))
            .map(|l| format!("name={} mac={} mtu={}", l["ifname"], l["address"], l["mtu"]))
            .unwrap_or_else(|| "not in the host".into());
        s.insert("vf0 by ifindex".into(), by_index);
        for dev in &self.rdma_devs {
            let at = sim_rdma_location(&self.node.sysfs, dev);
            let at = if at == self.pod.path() {
                "pod".into()
            } else {
                at
            };
            s.insert(format!("rdma {dev}"), at);
        }
        for sub in ["state", "ipam", "rdma-state", "coord-state"] {
            for (k, v) in crash::files_with_content(&self.node.dir.path().join(sub)) {
                s.insert(format!("file {sub}/{k}"), v);
            }
        }
        for (k, v) in crash::netns_view(&self.pod.name) {
            // The pod's name is per row; keys name it "pod".
            s.insert(k.replacen(&self.pod.name, "pod", 1), v);
        }
        s
    }
}

/// One row: the plugin killed at `fp` during `phase`, then the runtime's
/// recovery; "ok" or what went wrong.
fn row(plugin: &str, fp: &str, phase: Phase) -> String {
    let rig = Rig::new(plugin);
    // Steady state first: pool files, VF lock files.
    if let Err(e) = rig
        .add("prime", None)
        .and_then(|r| rig.del("prime", Some(&r), None))
    {
        return format!("FAIL priming: {e}");
    }
    let before = rig.snapshot();
    let cid = "crash";
    let compare = |when: &str| -> Result<(), String> {
        let d = crash::diff(&before, &rig.snapshot());
        if d.is_empty() {
            Ok(())
        } else {
            Err(format!("host differs {when}: {}", d.join("; ")))
        }
    };
    let outcome = (|| -> Result<(), String> {
        match phase {
            Phase::Add => {
                match rig.add(cid, Some(fp)) {
                    Err(e) if e == "killed" => {}
                    Err(e) => return Err(e),
                    Ok(_) => return Err(format!("ADD succeeded: {fp} never reached")),
                }
                // A failed ADD: the runtime DELs (no cached result).
                rig.del(cid, None, None)
                    .map_err(|e| format!("DEL after the kill: {e}"))?;
                compare("after DEL")?;
                let r = rig.add(cid, None).map_err(|e| format!("ADD again: {e}"))?;
                rig.del(cid, Some(&r), None)
                    .map_err(|e| format!("DEL after ADD again: {e}"))?;
            }
            Phase::Del => {
                let r = rig.add(cid, None)?;
                rig.del(cid, Some(&r), Some(fp))?;
                rig.del(cid, Some(&r), None)
                    .map_err(|e| format!("DEL retried: {e}"))?;
                compare("after the retried DEL")?;
            }
        }
        rig.gc()?;
        compare("after GC")
    })();
    match outcome {
        Ok(()) => "ok".into(),
        Err(e) => format!("FAIL {e}"),
    }
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn every_failpoint_killed_then_retried_and_collected_leaves_the_host_as_before() {
    require_root();
    let defined = crash::failpoints_in_source(&crash::workspace_root());
    let mut rows: BTreeSet<(String, Phase, String)> = BTreeSet::new();
    let mut uncovered = Vec::new();
    for name in &defined {
        let prefix = name.split('.').next().unwrap_or_default();
        match SCENARIOS.iter().find(|(p, _)| *p == prefix) {
            Some((plugin, _)) => match Phase::of(name) {
                Some(phase) => {
                    rows.insert((plugin.to_string(), phase, name.clone()));
                }
                None => uncovered.push(format!(
                    "{name}: a plugin's failpoint must be <plugin>.<add|del>.after_<step>"
                )),
            },
            None => {
                if !SCENARIOS
                    .iter()
                    .any(|(_, shared)| shared.iter().any(|(n, _)| n == name))
                {
                    uncovered.push(format!("{name}: reached by no scenario of the matrix"));
                }
            }
        }
    }
    for (plugin, shared) in SCENARIOS {
        for (name, phase) in shared {
            assert!(
                defined.contains(*name),
                "the matrix lists {name}, which the source no longer defines"
            );
            rows.insert((plugin.to_string(), *phase, name.to_string()));
        }
    }
    assert!(
        uncovered.is_empty(),
        "failpoints without matrix coverage:\n{}",
        uncovered.join("\n")
    );

    // Rows are independent (a node each): run them on a few threads.
    let jobs: usize = std::env::var("CRASH_MATRIX_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2)
        .max(1);
    let queue = Mutex::new(rows.iter().cloned().collect::<Vec<_>>());
    let results: Mutex<BTreeMap<(String, Phase, String), String>> = Mutex::new(BTreeMap::new());
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let Some((plugin, phase, fp)) = queue.lock().expect("queue").pop() else {
                        break;
                    };
                    let cell = row(&plugin, &fp, phase);
                    results
                        .lock()
                        .expect("results")
                        .insert((plugin, phase, fp), cell);
                }
            });
        }
    });
    let results = results.into_inner().expect("results");

    let mut table = format!(
        "crash matrix: {} rows, {:.0?}\n{:<12} {:<4} {:<34} result\n",
        results.len(),
        started.elapsed(),
        "plugin",
        "cmd",
        "killed at"
    );
    for ((plugin, phase, fp), cell) in &results {
        table.push_str(&format!(
            "{plugin:<12} {:<4} {fp:<34} {cell}\n",
            phase.word()
        ));
    }
    println!("{table}");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("crash-matrix.txt");
    if std::fs::write(&out, &table).is_ok() {
        println!("(written to {})", out.display());
    }
    let failed: Vec<_> = results.values().filter(|c| *c != "ok").collect();
    assert!(
        failed.is_empty(),
        "{} of {} rows failed:\n{table}",
        failed.len(),
        results.len()
    );
}
