//! ippool's node scoping, the real binary on a store two nodes share (a
//! file store dataDir, a real etcd on loopback): each allocation records its
//! node, a node's GC judges only its own, records of the layout before node
//! scoping are still found and never collected blindly, and a bad node name
//! is an invalid config.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

const NS: &str = "/proc/self/ns/net";

fn rail_pool() -> Value {
    json!({"name": "gpu1-net11", "subnet": "172.16.11.0/24", "ips": ["172.16.11.1-172.16.11.200"],
           "gateway": "172.16.11.254"})
}

fn file_conf(dir: &Path, ipam: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "rail1", "type": "sriov",
                       "ipam": {"type": "ippool", "dataDir": dir.join("data"), "poolsDir": "/nonexistent",
                                "pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"]}});
    for (k, v) in ipam.as_object().cloned().unwrap_or_default() {
        c["ipam"][k] = v;
    }
    c
}

fn etcd_conf(etcd: &Etcd, ipam: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "rail1", "type": "sriov",
                       "ipam": {"type": "ippool", "store": "etcd", "poolsDir": "/nonexistent",
                                "pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"],
                                "etcd": {"endpoints": [etcd.endpoint], "timeout": "5s"}}});
    for (k, v) in ipam.as_object().cloned().unwrap_or_default() {
        c["ipam"][k] = v;
    }
    c
}

/// What one node's runtime runs ippool with: its config and environment.
#[derive(Clone)]
struct OnNode {
    conf: Value,
    env: Vec<(String, String)>,
}

impl OnNode {
    fn run(&self, cmd: &str, cid: &str, prev: Option<&Value>) -> Outcome {
        let mut call = Call::new(cmd, cid, NS, "net1");
        if cmd == "GC" {
            call.netns = None;
        }
        call.extra_env = self.env.clone();
        let conf = prev.map_or_else(|| self.conf.clone(), |p| with_prev(&self.conf, p));
        call.run("ippool", &conf)
    }

    /// CHECK that `cid` holds `address` (as its cached result says).
    fn check(&self, cid: &str, address: &str) -> Outcome {
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": address}]});
        self.run("CHECK", cid, Some(&prev))
    }

    /// GC as a runtime sends it: the node's live attachments of the network.
    fn gc(&self, live: &[&str]) -> Outcome {
        let valid: Vec<Value> = live
            .iter()
            .map(|c| json!({"containerID": c, "ifname": "net1"}))
            .collect();
        let mut gc = self.clone();
        gc.conf["cniVersion"] = json!("1.1.0");
        gc.conf["cni.dev/valid-attachments"] = json!(valid);
        gc.run("GC", "", None)
    }
}

/// Two nodes share a store: each node's runtime lists only its own pods,
/// and its GC must leave the other node's alone. `held` counts allocations.
fn gc_is_node_scoped(a: &OnNode, b: &OnNode, held: impl Fn() -> usize) {
    let first = |r: Outcome| addresses(&r.ok())[0].clone();
    let pod_a = first(a.run("ADD", "pod-a", None));
    a.run("ADD", "stale-a", None).ok();
    let pod_b = first(b.run("ADD", "pod-b", None));
    // The same container ID on another node is another attachment.
    let twin = first(b.run("ADD", "pod-a", None));
    assert_ne!(twin, pod_a, "node-b got node-a's address for pod-a");
    assert_eq!(held(), 4);

    a.gc(&["pod-a"]).ok();
    assert_eq!(
        held(),
        3,
        "node-a's GC released other than its stale address"
    );
    b.check("pod-b", &pod_b).ok();
    b.check("pod-a", &twin).ok();
    a.check("pod-a", &pod_a).ok();
    assert_eq!(a.check("stale-a", &pod_a).err_code(), 105);
    // node-b's DEL of its pod-a leaves node-a's pod-a.
    b.run("DEL", "pod-a", None).ok();
    a.check("pod-a", &pod_a).ok();
    assert_eq!(held(), 2);
}

#[test]
fn gc_on_one_node_keeps_the_other_nodes_allocations_file_store() {
    // A dataDir shared by two nodes; the node comes from K8S_NODE_NAME.
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = file_conf(tmp.path(), json!({}));
    let data = tmp.path().join("data");
    let on = |node: &str| OnNode {
        conf: conf.clone(),
        env: vec![("K8S_NODE_NAME".into(), node.into())],
    };
    gc_is_node_scoped(&on("node-a"), &on("node-b"), || {
        pool_state(&data, "gpu1-net11")["allocated"]
            .as_u64()
            .unwrap_or_default() as usize
    });
    assert_eq!(
        pool_state(&data, "gpu1-net11")["nodes"],
        json!(["node-a", "node-b"])
    );
}

#[test]
fn gc_on_one_node_keeps_the_other_nodes_allocations_etcd_store() {
    // The node comes from ipam.nodeName (any key case).
    let etcd = Etcd::start();
    let on = |node: &str| OnNode {
        conf: etcd_conf(&etcd, json!({"NodeName": node})),
        env: Vec::new(),
    };
    gc_is_node_scoped(&on("node-a"), &on("node-b"), || {
        etcd.keys("/rdma-cni/ippool/pools/gpu1-net11/owner/").len()
    });
    let mut owners = etcd.keys("/rdma-cni/ippool/pools/gpu1-net11/owner/");
    owners.sort();
    assert_eq!(
        owners,
        [
            "/rdma-cni/ippool/pools/gpu1-net11/owner/rail1/node-a/pod-a/net1",
            "/rdma-cni/ippool/pools/gpu1-net11/owner/rail1/node-b/pod-b/net1"
        ]
    );
}

/// `etcdctl put` (Debian package etcd-client).
fn etcd_put(etcd: &Etcd, key: &str, value: &str) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoint, "put", key, value])
        .output()
        .expect("etcdctl");
    assert!(out.status.success(), "etcdctl put {key}: {out:?}");
}

#[test]
fn allocations_of_the_old_etcd_layout_are_found_by_del_and_kept_by_gc() {
    // As ippool wrote them before node scoping: owner/<network>/<cid>/<ifname>.
    let etcd = Etcd::start();
    let conf = etcd_conf(&etcd, json!({"nodeName": "node-a"}));
    let node_a = OnNode {
        conf: conf.clone(),
        env: Vec::new(),
    };
    let root = "/rdma-cni/ippool";
    for (host, cid) in [(1, "old-live"), (2, "old-other"), (3, "old-gone")] {
        let ip = format!("172.16.11.{host}");
        let record = json!({"ip": ip, "network": "rail1", "containerID": cid, "ifname": "net1", "pod": null});
        etcd_put(
            &etcd,
            &format!("{root}/pools/gpu1-net11/owner/rail1/{cid}/net1"),
            &ip,
        );
        etcd_put(
            &etcd,
            &format!("{root}/pools/gpu1-net11/ip/{:032x}", 0xac10_0b00u128 + host),
            &record.to_string(),
        );
    }
    etcd_put(&etcd, &format!("{root}/index/gpu1-net11"), "");
    let owners = || {
        let mut k = etcd.keys(&format!("{root}/pools/gpu1-net11/owner/"));
        k.sort();
        k
    };
    // A repeated ADD and CHECK find the old record.
    let r = node_a.run("ADD", "old-live", None).ok();
    assert_eq!(addresses(&r), ["172.16.11.1/24"]);
    node_a.run("CHECK", "old-live", Some(&r)).ok();
    // node-a's GC: old-live is listed, so node-a's (recorded so now); the
    // other two may be another node's: left for their DEL.
    node_a.gc(&["old-live"]).ok();
    let prefix = format!("{root}/pools/gpu1-net11/owner/rail1");
    assert_eq!(
        owners(),
        [
            format!("{prefix}/node-a/old-live/net1"),
            format!("{prefix}/old-gone/net1"),
            format!("{prefix}/old-other/net1"),
        ]
    );
    // DEL (from any node) releases an old record.
    node_a.run("DEL", "old-gone", None).ok();
    node_a.run("DEL", "old-gone", None).ok();
    assert_eq!(
        etcd.keys(&format!("{root}/pools/gpu1-net11/ip/")).len(),
        2,
        "old-gone's address record stayed"
    );
    // The adopted one is collected once node-a's runtime no longer lists it.
    node_a.gc(&[]).ok();
    assert_eq!(owners(), [format!("{prefix}/old-other/net1")]);
}

#[test]
fn an_invalid_node_name_is_invalid_config_naming_key_and_value() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = file_conf(tmp.path(), json!({}));
    Call::new("ADD", "c1", NS, "net1").run("ippool", &conf).ok();
    let before = pool_state(&tmp.path().join("data"), "gpu1-net11");
    let bad = file_conf(tmp.path(), json!({"nodeName": "Node_A/.."}));
    for cmd in ["ADD", "DEL", "CHECK"] {
        let e = Call::new(cmd, "c1", NS, "net1").run("ippool", &bad).err();
        let msg = e["msg"].as_str().unwrap_or_default();
        assert_eq!(e["code"], 7, "{cmd}: {e}");
        assert!(
            msg.contains("ipam.nodeName") && msg.contains("Node_A/.."),
            "{cmd}: {e}"
        );
    }
    let on_bad = OnNode {
        conf: bad,
        env: Vec::new(),
    };
    assert_eq!(on_bad.gc(&[]).err_code(), 7);
    let e = Call::new("ADD", "c2", NS, "net1")
        .env("K8S_NODE_NAME", "node a")
        .run("ippool", &conf)
        .err();
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(
        e["code"] == 7 && msg.contains("K8S_NODE_NAME") && msg.contains("node a"),
        "{e}"
    );
    assert_eq!(
        pool_state(&tmp.path().join("data"), "gpu1-net11"),
        before,
        "a bad node name changed the store"
    );
}

/// ippool run as on a host whose hostname makes no node name (a UTS
/// namespace of its own named `gpu_node_7`), with neither nodeName nor
/// K8S_NODE_NAME set.
fn on_a_nameless_host(cmd: &str, cid: &str, conf: &Value) -> Outcome {
    let mut c = Call::new(cmd, cid, NS, "net1").command("unshare");
    c.args([
        "--uts",
        "sh",
        "-c",
        "echo gpu_node_7 > /proc/sys/kernel/hostname && exec \"$0\"",
    ])
    .arg(bin("ippool"));
    run_with_stdin(c, conf.to_string().as_bytes())
}

#[test]
fn a_host_without_a_node_name_still_deletes_what_an_older_ippool_allocated() {
    // Upgraded on a host whose hostname is no node name: an older ippool
    // recorded owner/<network>/<cid>/<ifname>; this one needs a node name
    // to allocate, but DEL must not leave the old pods stuck terminating.
    let etcd = Etcd::start();
    let conf = etcd_conf(&etcd, json!({}));
    let root = "/rdma-cni/ippool";
    let record = json!({"ip": "172.16.11.3", "network": "rail1", "containerID": "old-gone", "ifname": "net1", "pod": null});
    etcd_put(
        &etcd,
        &format!("{root}/pools/gpu1-net11/owner/rail1/old-gone/net1"),
        "172.16.11.3",
    );
    etcd_put(
        &etcd,
        &format!("{root}/pools/gpu1-net11/ip/{:032x}", 0xac10_0b03u128),
        &record.to_string(),
    );
    etcd_put(&etcd, &format!("{root}/index/gpu1-net11"), "");
    // A named node's allocation of the same network, same store.
    let node_a = OnNode {
        conf: etcd_conf(&etcd, json!({"nodeName": "node-a"})),
        env: Vec::new(),
    };
    node_a.run("ADD", "new", None).ok();
    let owners = || {
        let mut k = etcd.keys(&format!("{root}/pools/gpu1-net11/owner/"));
        k.sort();
        k
    };
    let prefix = format!("{root}/pools/gpu1-net11/owner/rail1");

    // ADD there is refused, naming what to set.
    let e = on_a_nameless_host("ADD", "fresh", &conf).err();
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(
        e["code"] == 7 && msg.contains("gpu_node_7") && msg.contains("K8S_NODE_NAME"),
        "{e}"
    );
    // DEL of a container no old record names touches no node's allocation.
    on_a_nameless_host("DEL", "new", &conf).ok();
    assert_eq!(
        owners(),
        [
            format!("{prefix}/node-a/new/net1"),
            format!("{prefix}/old-gone/net1"),
        ]
    );
    // DEL of the old pod releases its address, twice in a row.
    on_a_nameless_host("DEL", "old-gone", &conf).ok();
    on_a_nameless_host("DEL", "old-gone", &conf).ok();
    assert_eq!(owners(), [format!("{prefix}/node-a/new/net1")]);
    assert_eq!(etcd.keys(&format!("{root}/pools/gpu1-net11/ip/")).len(), 1);
}
