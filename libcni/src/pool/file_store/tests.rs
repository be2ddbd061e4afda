use super::record::SLOT;
use super::*;
use crate::pool::spec::load_pools;
use serde_json::json;

fn pool(v: serde_json::Value) -> Pool {
    load_pools(None, &[v]).expect("pool").remove(0)
}

fn owner(c: &str) -> Owner {
    Owner {
        network: "rail1".into(),
        node: "node1".into(),
        container_id: c.into(),
        ifname: "net1".into(),
        pod: Some(format!("default/{c}")),
    }
}

fn store() -> (tempfile::TempDir, FileStore) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let s = FileStore::open(&tmp.path().join("ippool")).expect("store");
    (tmp, s)
}

#[test]
fn allocate_is_idempotent_and_release_frees() {
    let (_t, s) = store();
    let p = pool(json!({"name": "p", "subnet": "10.0.0.0/29", "gateway": "10.0.0.1"}));
    let a = s.allocate(&p, &owner("a"), None, false).expect("a");
    assert_eq!(a, "10.0.0.2".parse::<IpAddr>().expect("ip"));
    assert_eq!(s.allocate(&p, &owner("a"), None, false).expect("again"), a);
    assert_eq!(s.find(&p, &owner("a")).expect("find"), Some(a));
    let b = s.allocate(&p, &owner("b"), None, false).expect("b");
    assert_ne!(a, b);
    assert_eq!(
        s.usage(&p).expect("usage"),
        Usage {
            allocated: 2,
            size: 5
        }
    );
    assert_eq!(
        s.release("p", &owner("a"), false).expect("release"),
        Some(a)
    );
    assert_eq!(s.release("p", &owner("a"), false).expect("twice"), None);
    assert_eq!(s.find(&p, &owner("a")).expect("find"), None);
    assert_eq!(s.pools().expect("pools"), ["p"]);
}

#[test]
fn exhaustion_names_the_pool_and_its_size() {
    let (_t, s) = store();
    let p = pool(json!({"name": "tiny", "subnet": "10.0.0.0/30"}));
    s.allocate(&p, &owner("a"), None, false).expect("a");
    s.allocate(&p, &owner("b"), None, false).expect("b");
    let e = s.allocate(&p, &owner("c"), None, false).expect_err("full");
    assert!(matches!(e, Error::PoolExhausted { size: 2, .. }), "{e}");
    assert!(e.to_string().contains("tiny"), "{e}");
}

#[test]
fn requested_and_sticky_addresses() {
    let (_t, s) = store();
    let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
    let want: IpAddr = "10.0.0.9".parse().expect("ip");
    assert_eq!(
        s.allocate(&p, &owner("a"), Some(want), false)
            .expect("want"),
        want
    );
    assert_eq!(
        s.allocate(&p, &owner("b"), Some(want), false)
            .expect_err("taken")
            .code(),
        102
    );
    assert_eq!(
        s.allocate(
            &p,
            &owner("b"),
            Some("10.0.1.1".parse().expect("ip")),
            false
        )
        .expect_err("outside")
        .code(),
        7
    );
    // Sticky: the pod gets its address back after release, others skip it.
    let sticky_ip = s.allocate(&p, &owner("st"), None, true).expect("st");
    s.release("p", &owner("st"), true).expect("release");
    let other = s.allocate(&p, &owner("x"), None, false).expect("x");
    assert_ne!(
        other, sticky_ip,
        "a sticky address went to another pod while others were free"
    );
    let again = Owner {
        container_id: "st-restarted".into(),
        ..owner("st")
    };
    assert_eq!(s.allocate(&p, &again, None, true).expect("back"), sticky_ip);
}

#[test]
fn gc_releases_only_this_networks_stale_attachments() {
    let (_t, s) = store();
    let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
    for c in ["keep", "stale"] {
        s.allocate(&p, &owner(c), None, false).expect("alloc");
    }
    let other_net = Owner {
        network: "rail2".into(),
        ..owner("foreign")
    };
    s.allocate(&p, &other_net, None, false)
        .expect("other network");
    let keep = [Keep {
        container_id: "keep".into(),
        ifname: "net1".into(),
    }];
    let report = s.gc("p", "rail1", "node1", &keep).expect("gc");
    assert_eq!(report.released.len(), 1);
    assert!(s.find(&p, &owner("keep")).expect("find").is_some());
    assert!(s.find(&p, &owner("stale")).expect("find").is_none());
    assert!(
        s.find(&p, &other_net).expect("find").is_some(),
        "GC touched another network"
    );
}

#[test]
fn a_changed_pool_keeps_allocations_that_still_fit() {
    let (_t, s) = store();
    let p = pool(json!({"name": "p", "subnet": "10.0.0.0/24", "ips": ["10.0.0.10-10.0.0.20"]}));
    let a = s.allocate(&p, &owner("a"), None, false).expect("a");
    let wider = pool(json!({"name": "p", "subnet": "10.0.0.0/24", "ips": ["10.0.0.1-10.0.0.50"]}));
    assert_eq!(
        s.allocate(&wider, &owner("a"), None, false).expect("same"),
        a
    );
    let b = s.allocate(&wider, &owner("b"), None, false).expect("b");
    assert_ne!(a, b);
    assert_eq!(s.usage(&wider).expect("usage").allocated, 2);
}

#[test]
fn the_file_does_not_grow_with_the_fill_level() {
    let (t, s) = store();
    let p = pool(json!({"name": "big", "subnet": "10.0.0.0/22"}));
    s.allocate(&p, &owner("first"), None, false).expect("first");
    let path = t.path().join("ippool/big.state");
    let size = || std::fs::metadata(&path).expect("meta").len();
    let nearly_empty = size();
    assert!(nearly_empty >= (1022 * SLOT) as u64);
    for i in 0..900 {
        s.allocate(&p, &owner(&format!("c{i}")), None, false)
            .expect("fill");
    }
    // Updated in place: the file keeps its size whatever the fill level.
    assert_eq!(size(), nearly_empty);
    let report = s.inspect("big").expect("inspect").expect("some");
    assert_eq!(report["allocated"], 901);
    assert_eq!(report["addresses"].as_array().map(Vec::len), Some(901));
}

#[test]
fn prefill_takes_free_addresses_in_one_write() {
    let (_t, s) = store();
    let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
    s.allocate(&p, &owner("real"), None, false).expect("real");
    assert_eq!(s.prefill(&p, "rail1", "fill", 100).expect("prefill"), 13);
    assert_eq!(s.usage(&p).expect("usage").allocated, 14);
    assert!(s.find(&p, &owner("real")).expect("find").is_some());
}

#[test]
fn corrupt_or_foreign_files_are_reported_not_trusted() {
    let (t, s) = store();
    std::fs::write(t.path().join("ippool/p.state"), b"garbage").expect("write");
    assert!(s.inspect("p").is_err());
    let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
    let e = s
        .allocate(&p, &owner("a"), None, false)
        .expect_err("corrupt");
    assert!(e.to_string().contains("p.state"), "{e}");
    let too_big = pool(json!({"name": "v6", "subnet": "fd00::/64"}));
    let e = s
        .allocate(&too_big, &owner("a"), None, false)
        .expect_err("too big");
    assert!(e.to_string().contains("etcd"), "{e}");
}

#[test]
fn a_header_claiming_astronomic_ranges_is_corrupt_not_a_crash() {
    // fuzz/seeds/state_files/crash-pool-huge-range: a valid container
    // around a header whose range holds ~2^127 addresses; the slot count
    // times 10 overflowed u128.
    let (t, s) = store();
    let dir = StateDir::open(&t.path().join("ippool")).expect("dir");
    let header = br#"{"version":1,"pool":"v6","v6":true,"ranges":[["0f0d::1","fd00::8"]],"networks":["n"],"cursor":2,"allocated":2}"#;
    let mut record = (header.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(header);
    record.extend_from_slice(&[0; 40]);
    DoubleBufferedFile::create(&dir, "v6.state", MAGIC, &[&record]).expect("create");
    let e = s.inspect("v6").expect_err("corrupt");
    assert!(e.to_string().contains("slot array"), "{e}");
}

fn on(node: &str, c: &str) -> Owner {
    Owner {
        node: node.into(),
        ..owner(c)
    }
}

fn keep(c: &str) -> Keep {
    Keep {
        container_id: c.into(),
        ifname: "net1".into(),
    }
}

#[test]
fn gc_of_one_node_keeps_the_other_nodes_allocations() {
    // A dataDir shared by two nodes: each node's runtime lists only its own
    // attachments.
    let (_t, s) = store();
    let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
    let mine = s.allocate(&p, &on("node1", "a"), None, false).expect("a");
    let stale = s
        .allocate(&p, &on("node1", "gone"), None, false)
        .expect("gone");
    let theirs = s.allocate(&p, &on("node2", "b"), None, false).expect("b");
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
    // node2's GC with nothing live takes only node2's.
    let report = s.gc("p", "rail1", "node2", &[]).expect("gc");
    assert_eq!(report.released, [theirs]);
    assert_eq!(s.find(&p, &on("node1", "a")).expect("find"), Some(mine));
    let r = s.inspect("p").expect("inspect").expect("some");
    assert_eq!(r["nodes"], json!(["node1", "node2"]));
    assert_eq!(r["networks"], json!(["rail1"]));
}

#[test]
fn the_same_container_id_on_two_nodes_is_two_attachments() {
    // Container IDs are unique per runtime only.
    let (_t, s) = store();
    let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
    let a = s.allocate(&p, &on("node1", "c"), None, false).expect("n1");
    let b = s.allocate(&p, &on("node2", "c"), None, false).expect("n2");
    assert_ne!(a, b);
    assert_eq!(
        s.release("p", &on("node2", "c"), false).expect("DEL"),
        Some(b)
    );
    assert_eq!(s.find(&p, &on("node1", "c")).expect("find"), Some(a));
    assert_eq!(s.find(&p, &on("node2", "c")).expect("find"), None);
}

/// A pool file as ippool wrote it before node scoping (header version 1:
/// `networks`, slots naming a network only).
fn write_v1(t: &tempfile::TempDir, slots: &[(u64, u16)]) {
    let dir = StateDir::open(&t.path().join("ippool")).expect("dir");
    let header = br#"{"version":1,"pool":"p","v6":false,"ranges":[["10.0.0.1","10.0.0.14"]],"networks":["rail1","rail2"],"cursor":3,"allocated":3}"#;
    let mut record = (header.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(header);
    let mut array = vec![0u8; 14 * SLOT];
    for (i, (hash, flags)) in slots.iter().enumerate() {
        array[i * SLOT..i * SLOT + 8].copy_from_slice(&hash.to_le_bytes());
        array[i * SLOT + 8..(i + 1) * SLOT].copy_from_slice(&flags.to_le_bytes());
    }
    record.extend_from_slice(&array);
    DoubleBufferedFile::create(&dir, "p.state", MAGIC, &[&record]).expect("create");
}

fn raw_header(t: &tempfile::TempDir) -> serde_json::Value {
    let dir = StateDir::open(&t.path().join("ippool")).expect("dir");
    let (_, record) = DoubleBufferedFile::open(&dir, "p.state", MAGIC)
        .expect("open")
        .expect("exists");
    let hlen = u32::from_le_bytes([record[0], record[1], record[2], record[3]]) as usize;
    serde_json::from_slice(&record[4..4 + hlen]).expect("header")
}

#[test]
fn allocations_recorded_without_a_node_are_found_and_never_collected_blindly() {
    let (t, s) = store();
    let hash = |c: &str| stable_hash(&[c, "net1"]);
    // 10.0.0.1: rail1 "live" (the runtime lists it), 10.0.0.2: rail1
    // "unknown" (maybe another node's), 10.0.0.3: rail2 "other".
    write_v1(
        &t,
        &[
            (hash("live"), ALLOCATED | 1),
            (hash("unknown"), ALLOCATED | 1),
            (hash("other"), ALLOCATED | 2),
        ],
    );
    let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
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
    let r = s.inspect("p").expect("inspect").expect("some");
    assert_eq!(r["allocatedWithoutNode"], 3);
    assert_eq!(r["networks"], json!(["rail1", "rail2"]));

    let report = s.gc("p", "rail1", "node1", &[keep("live")]).expect("gc");
    assert_eq!(
        report,
        GcReport {
            released: vec![],
            adopted: vec![ip("10.0.0.1")],
            unscoped: vec![ip("10.0.0.2")],
        }
    );
    assert_eq!(s.usage(&p).expect("usage").allocated, 3, "GC released one");
    // Adopted: node1's now, so node1's next GC collects it once stale;
    // another node's GC leaves it alone.
    assert_eq!(
        s.gc("p", "rail1", "node2", &[]).expect("gc").released,
        Vec::<IpAddr>::new()
    );
    assert_eq!(
        s.gc("p", "rail1", "node1", &[]).expect("gc").released,
        [ip("10.0.0.1")]
    );
    // A DEL on a node with no usable name (empty node) finds no node's
    // allocation (node1 adopted "live" and GC released it; take a new one)...
    let scoped = s
        .allocate(&p, &on("node1", "new"), None, false)
        .expect("ADD");
    assert_eq!(s.release("p", &on("", "new"), false).expect("DEL"), None);
    assert_eq!(s.find(&p, &on("node1", "new")).expect("find"), Some(scoped));
    // ...but the unscoped one is still there for its DEL, which finds it
    // from any node, a nameless one included.
    assert_eq!(
        s.release("p", &on("", "unknown"), false).expect("DEL"),
        Some(ip("10.0.0.2"))
    );
    let rail2 = Owner {
        network: "rail2".into(),
        ..on("node1", "other")
    };
    assert_eq!(
        s.find(&p, &rail2).expect("find"),
        Some(ip("10.0.0.3")),
        "rail1's GC touched rail2"
    );
    // Written back as version 2, which older releases refuse to read.
    let h = raw_header(&t);
    assert_eq!(h["version"], 2);
    assert!(h.get("networks").is_none(), "{h}");
    assert_eq!(
        h["scopes"],
        json!([{"network": "rail1"}, {"network": "rail2"}, {"network": "rail1", "node": "node1"}])
    );
}

#[test]
fn a_header_of_an_unknown_version_is_refused() {
    let (t, s) = store();
    let dir = StateDir::open(&t.path().join("ippool")).expect("dir");
    let header = br#"{"version":3,"pool":"p","v6":false,"ranges":[["10.0.0.1","10.0.0.2"]],"scopes":[],"cursor":0,"allocated":0}"#;
    let mut record = (header.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(header);
    record.extend_from_slice(&[0; 2 * SLOT]);
    DoubleBufferedFile::create(&dir, "p.state", MAGIC, &[&record]).expect("create");
    let e = s.inspect("p").expect_err("version 3");
    assert!(e.to_string().contains("version 3"), "{e}");
}

#[test]
fn a_full_scope_table_reuses_an_entry_nothing_holds() {
    let (t, s) = store();
    let dir = StateDir::open(&t.path().join("ippool")).expect("dir");
    // 16383 scopes (the most a slot can name); only scope 1 holds a slot.
    let scopes: Vec<serde_json::Value> = (0..0x3fff)
        .map(|i| json!({"network": "rail1", "node": format!("gone{i}")}))
        .collect();
    let header = serde_json::to_vec(&json!({"version": 2, "pool": "p", "v6": false,
        "ranges": [["10.0.0.1", "10.0.0.2"]], "scopes": scopes, "cursor": 0, "allocated": 1}))
    .expect("json");
    let mut record = (header.len() as u32).to_le_bytes().to_vec();
    record.extend_from_slice(&header);
    record.extend_from_slice(&stable_hash(&["old", "net1"]).to_le_bytes());
    record.extend_from_slice(&(ALLOCATED | 1).to_le_bytes());
    record.extend_from_slice(&[0; SLOT]);
    DoubleBufferedFile::create(&dir, "p.state", MAGIC, &[&record]).expect("create");
    let p = pool(json!({"name": "p", "subnet": "10.0.0.0/30"}));
    let got = s
        .allocate(&p, &on("node1", "new"), None, false)
        .expect("add");
    assert_eq!(got, "10.0.0.2".parse::<IpAddr>().expect("ip"));
    let old = on("gone0", "old");
    assert!(
        s.find(&p, &old).expect("find").is_some(),
        "a used entry was reused"
    );
    assert_eq!(s.find(&p, &on("node1", "new")).expect("find"), Some(got));
}
