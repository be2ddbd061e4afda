//! The etcd store against a real etcd (Debian's etcd-server) on loopback
//! ports of its own, one per test; a missing etcd fails loudly.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::pool::spec::load_pools;

struct TestEtcd {
    child: Child,
    _dir: tempfile::TempDir,
    endpoint: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl TestEtcd {
    fn start() -> TestEtcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let endpoint = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log");
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &endpoint])
            .args(["--advertise-client-urls", &endpoint])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (Debian package etcd-server)");
        TestEtcd {
            child,
            _dir: dir,
            endpoint,
        }
    }

    /// A store on this etcd once it answers.
    fn store(&self) -> EtcdStore {
        let opts = EtcdOptions {
            endpoints: vec![self.endpoint.clone()],
            prefix: "/t".into(),
            timeout: Duration::from_secs(2),
            cacert: None,
            cert_key: None,
            user: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match EtcdStore::connect(&opts).and_then(|s| s.check_ready().map(|()| s)) {
                Ok(s) => return s,
                Err(e) if Instant::now() > deadline => panic!("etcd never answered: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pool() -> Pool {
    load_pools(
        None,
        &[serde_json::json!({"name": "p", "subnet": "10.0.0.0/28"})],
    )
    .expect("pool")
    .remove(0)
}

fn on(node: &str, c: &str) -> Owner {
    Owner {
        network: "rail1".into(),
        node: node.into(),
        container_id: c.into(),
        ifname: "net1".into(),
        pod: Some(format!("default/{c}")),
    }
}

fn keep(c: &str) -> Keep {
    Keep {
        container_id: c.into(),
        ifname: "net1".into(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// The keys under `/t/pools/p/<sub>`, that prefix cut off.
fn keys_under(s: &EtcdStore, sub: &str) -> Vec<String> {
    let prefix = format!("/t/pools/p/{sub}");
    let resp = s
        .call(
            "list",
            s.client.clone().get(
                prefix.clone(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        )
        .expect("list");
    resp.kvs()
        .iter()
        .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

fn put(s: &EtcdStore, key: &str, value: &str) {
    s.call("put", s.client.clone().put(key, value, None))
        .expect("put");
}

fn get(s: &EtcdStore, key: &str) -> Option<serde_json::Value> {
    s.get_one(key)
        .expect("get")
        .map(|(v, _)| serde_json::from_slice(&v).expect("json"))
}

#[test]
fn gc_of_one_node_keeps_the_other_nodes_allocations() {
    let etcd = TestEtcd::start();
    let s = etcd.store();
    let p = pool();
    let mine = s.allocate(&p, &on("node1", "a"), None, false).expect("a");
    let stale = s
        .allocate(&p, &on("node1", "gone"), None, false)
        .expect("gone");
    let theirs = s.allocate(&p, &on("node2", "b"), None, false).expect("b");
    let mut owners = keys_under(&s, "owner/");
    owners.sort();
    assert_eq!(
        owners,
        [
            "rail1/node1/a/net1",
            "rail1/node1/gone/net1",
            "rail1/node2/b/net1"
        ]
    );
    let record = get(&s, &s.ip_key("p", theirs).expect("key")).expect("record");
    assert_eq!(record["node"], "node2");

    // node1's runtime lists only its own live attachment.
    let report = s.gc("p", "rail1", "node1", &[keep("a")]).expect("gc");
    assert_eq!(
        report,
        GcReport {
            released: vec![stale],
            ..GcReport::default()
        }
    );
    assert_eq!(s.find(&p, &on("node1", "a")).expect("find"), Some(mine));
    assert_eq!(
        s.find(&p, &on("node2", "b")).expect("find"),
        Some(theirs),
        "node1's GC released node2's address"
    );
    assert_eq!(s.usage(&p).expect("usage").allocated, 2);
    // The same container ID on another node is another attachment.
    assert_eq!(s.find(&p, &on("node2", "a")).expect("find"), None);
    assert_eq!(s.release("p", &on("node2", "a"), false).expect("DEL"), None);
    assert_eq!(s.find(&p, &on("node1", "a")).expect("find"), Some(mine));
    // A pod's sticky address follows it to another node.
    s.release("p", &on("node1", "a"), true).expect("sticky DEL");
    let moved = Owner {
        container_id: "a2".into(),
        ..on("node2", "a")
    };
    assert_eq!(s.allocate(&p, &moved, None, true).expect("back"), mine);
}

#[test]
fn allocations_recorded_without_a_node_are_found_and_never_collected_blindly() {
    let etcd = TestEtcd::start();
    let s = etcd.store();
    let p = pool();
    // As ippool wrote them before node scoping: rail1 "live" (the runtime
    // lists it) and "unknown" (maybe another node's), rail2 "other".
    for (n, net, cid) in [
        (1, "rail1", "live"),
        (2, "rail1", "unknown"),
        (3, "rail2", "other"),
    ] {
        let addr = ip(&format!("10.0.0.{n}"));
        put(
            &s,
            &format!("/t/pools/p/owner/{net}/{cid}/net1"),
            &addr.to_string(),
        );
        let record = serde_json::json!({"ip": addr, "network": net, "containerID": cid,
                                        "ifname": "net1", "pod": null});
        put(&s, &s.ip_key("p", addr).expect("key"), &record.to_string());
    }
    put(&s, "/t/index/p", "");

    // CHECK and a repeated ADD find them, from any node.
    assert_eq!(
        s.find(&p, &on("node7", "live")).expect("find"),
        Some(ip("10.0.0.1"))
    );
    assert_eq!(
        s.allocate(&p, &on("node1", "unknown"), None, false)
            .expect("ADD again"),
        ip("10.0.0.2")
    );
    // A new ADD skips the addresses they hold.
    assert_eq!(
        s.allocate(&p, &on("node1", "new"), None, false)
            .expect("new"),
        ip("10.0.0.4")
    );

    let report = s.gc("p", "rail1", "node1", &[keep("live"), keep("new")]);
    assert_eq!(
        report.expect("gc"),
        GcReport {
            released: vec![],
            adopted: vec![ip("10.0.0.1")],
            unscoped: vec![ip("10.0.0.2")],
        }
    );
    let mut owners = keys_under(&s, "owner/");
    owners.sort();
    assert_eq!(
        owners,
        [
            "rail1/node1/live/net1",
            "rail1/node1/new/net1",
            "rail1/unknown/net1",
            "rail2/other/net1"
        ]
    );
    let record = get(&s, &s.ip_key("p", ip("10.0.0.1")).expect("key")).expect("record");
    assert_eq!(
        (&record["node"], &record["containerID"]),
        (&serde_json::json!("node1"), &serde_json::json!("live"))
    );
    // Adopted: another node's GC leaves it, node1's takes it once stale.
    assert_eq!(
        s.gc("p", "rail1", "node2", &[]).expect("gc").released,
        Vec::<IpAddr>::new()
    );
    assert_eq!(
        s.gc("p", "rail1", "node1", &[keep("new")])
            .expect("gc")
            .released,
        [ip("10.0.0.1")]
    );
    // A DEL on a node with no usable name (empty node) finds no node's
    // allocation...
    assert_eq!(s.release("p", &on("", "new"), false).expect("DEL"), None);
    assert_eq!(keys_under(&s, "owner/rail1/node1/"), ["new/net1"]);
    // ...but the unscoped one waits for its DEL, which finds it from any
    // node, a nameless one included.
    assert_eq!(
        s.release("p", &on("", "unknown"), false).expect("DEL"),
        Some(ip("10.0.0.2"))
    );
    assert_eq!(get(&s, &s.ip_key("p", ip("10.0.0.2")).expect("key")), None);
    assert_eq!(
        keys_under(&s, "owner/rail2/"),
        ["other/net1"],
        "rail1's GC touched rail2"
    );
}
