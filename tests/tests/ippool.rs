//! `ippool` run as a runtime runs it: the real binary, file store in a temp
//! dir or a real etcd on loopback.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const NS: &str = "/proc/self/ns/net";

fn rail_pool() -> Value {
    json!({"name": "gpu1-net11", "subnet": "172.16.11.0/24", "ips": ["172.16.11.1-172.16.11.200"],
           "gateway": "172.16.11.254", "routes": [{"dst": "172.16.0.0/16", "gw": "172.16.11.254"}]})
}

/// A network config with ippool IPAM on the file store under `dir`.
fn file_conf(dir: &Path, ipam: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "rail1", "type": "sriov",
                       "ipam": {"type": "ippool", "dataDir": dir.join("data"), "poolsDir": dir.join("pools")}});
    for (k, v) in ipam.as_object().cloned().unwrap_or_default() {
        c["ipam"][k] = v;
    }
    c
}

fn etcd_conf(etcd: &Etcd, ipam: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "rail1", "type": "sriov",
                       "ipam": {"type": "ippool", "store": "etcd", "poolsDir": "/nonexistent",
                                "etcd": {"endpoints": [etcd.endpoint], "timeout": "5s"}}});
    for (k, v) in ipam.as_object().cloned().unwrap_or_default() {
        c["ipam"][k] = v;
    }
    c
}

fn add(cid: &str, conf: &Value) -> Outcome {
    Call::new("ADD", cid, NS, "net1").run("ippool", conf)
}

fn del(cid: &str, conf: &Value) -> Outcome {
    Call::new("DEL", cid, NS, "net1").run("ippool", conf)
}

#[test]
fn rail_pool_add_is_idempotent_del_twice_and_result_shape() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = file_conf(
        tmp.path(),
        json!({"pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"]}),
    );
    let r = add("c1", &conf).ok();
    assert_eq!(
        r,
        json!({"cniVersion": "1.0.0", "ips": [{"address": "172.16.11.1/24", "gateway": "172.16.11.254"}],
               "routes": [{"dst": "172.16.0.0/16", "gw": "172.16.11.254"}], "dns": {}})
    );
    assert_eq!(
        add("c1", &conf).ok(),
        r,
        "repeated ADD must return the same address"
    );
    assert_eq!(addresses(&add("c2", &conf).ok()), ["172.16.11.2/24"]);
    let check = Call::new("CHECK", "c1", NS, "net1").run("ippool", &with_prev(&conf, &r));
    check.ok();
    del("c1", &conf).ok();
    del("c1", &conf).ok();
    let e = Call::new("CHECK", "c1", NS, "net1")
        .run("ippool", &with_prev(&conf, &r))
        .err();
    assert_eq!(e["code"], 105, "{e}");
    // The released address is handed out again (next-fit comes back to it).
    let header = pool_state(&tmp.path().join("data"), "gpu1-net11");
    assert_eq!(header["allocated"], 1);
}

#[test]
fn ipv6_and_dual_stack_from_default_pools() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pools = json!([
        {"name": "v4", "subnet": "10.40.0.0/24", "gateway": "10.40.0.1", "default": true},
        {"name": "v6", "subnet": "fd00:40::/120", "gateway": "fd00:40::1", "default": true,
         "routes": [{"dst": "fd00::/8"}]}
    ]);
    let conf = file_conf(tmp.path(), json!({"pools": pools}));
    let r = add("dual", &conf).ok();
    assert_eq!(addresses(&r), ["10.40.0.2/24", "fd00:40::2/120"]);
    assert_eq!(r["ips"][1]["gateway"], "fd00:40::1");
    assert_eq!(r["routes"], json!([{"dst": "fd00::/8"}]));
    let mut v6only = file_conf(
        tmp.path(),
        json!({"pools": pools, "default_ipv6_ippool": ["v6"]}),
    );
    v6only["ipam"]["pools"][0]["default"] = json!(false);
    assert_eq!(addresses(&add("six", &v6only).ok()), ["fd00:40::3/120"]);
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.3.1");
    let r = add("old", &old).ok();
    assert_eq!(
        r["ips"][0]["version"], "4",
        "0.3.1 results carry ips[].version: {r}"
    );
    assert_eq!(r["ips"][1]["version"], "6");
}

#[test]
fn gateway_and_excluded_addresses_are_never_handed_out_and_exhaustion_is_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pool = json!({"name": "small", "subnet": "10.41.0.0/28", "gateway": "10.41.0.1",
                      "excludeIPs": ["10.41.0.2-10.41.0.5", "10.41.0.9"]});
    let conf = file_conf(
        tmp.path(),
        json!({"pools": [pool], "default_ipv4_ippool": ["small"]}),
    );
    let mut got = BTreeSet::new();
    for i in 0..8 {
        let r = add(&format!("c{i}"), &conf).ok();
        got.insert(addresses(&r)[0].clone());
    }
    let expected: BTreeSet<String> = [6, 7, 8, 10, 11, 12, 13, 14]
        .iter()
        .map(|h| format!("10.41.0.{h}/28"))
        .collect();
    assert_eq!(got, expected);
    let e = add("one-too-many", &conf).err();
    assert_eq!(e["code"], 106, "{e}");
    assert!(
        e["msg"].as_str().unwrap_or_default().contains("small")
            && e["msg"].as_str().unwrap_or_default().contains('8'),
        "{e}"
    );
}

#[test]
fn requested_address_must_be_in_a_selected_pool_and_free() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut conf = file_conf(
        tmp.path(),
        json!({"pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"]}),
    );
    conf["runtimeConfig"] = json!({"ips": ["172.16.11.50/24"]});
    assert_eq!(addresses(&add("want", &conf).ok()), ["172.16.11.50/24"]);
    assert_eq!(add("thief", &conf).err_code(), 102);
    conf["runtimeConfig"] = json!({"ips": ["172.16.11.254"]});
    let e = add("gw", &conf).err();
    assert_eq!(e["code"], 7, "the gateway is not allocatable: {e}");
    conf["runtimeConfig"] = json!({});
    let mut call = Call::new("ADD", "legacy", NS, "net1");
    call.cni_args = Some("IgnoreUnknown=1;IP=172.16.11.77".into());
    assert_eq!(
        addresses(&call.run("ippool", &conf).ok()),
        ["172.16.11.77/24"]
    );
}

#[test]
fn sticky_pods_get_their_address_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = file_conf(
        tmp.path(),
        json!({"pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"], "sticky": true}),
    );
    let pod = |cid: &str| {
        let mut c = Call::new("ADD", cid, NS, "net1");
        c.cni_args = Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=ml;K8S_POD_NAME=trainer-0".into());
        c
    };
    let first = addresses(&pod("sts-a").run("ippool", &conf).ok());
    pod("sts-a").with("DEL").run("ippool", &conf).ok();
    let other = addresses(&add("someone-else", &conf).ok());
    assert_ne!(
        first, other,
        "a sticky address went to another pod while others were free"
    );
    assert_eq!(
        addresses(&pod("sts-b").run("ippool", &conf).ok()),
        first,
        "the restarted pod got a new address"
    );
}

#[test]
fn gc_releases_attachments_missing_from_the_valid_list() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = file_conf(
        tmp.path(),
        json!({"pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"]}),
    );
    for c in ["live", "dead1", "dead2"] {
        add(c, &conf).ok();
    }
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "net1"}]);
    let mut call = Call::new("GC", "", "", "");
    call.netns = None;
    call.run("ippool", &gc).ok();
    let header = pool_state(&tmp.path().join("data"), "gpu1-net11");
    assert_eq!(header["allocated"], 1);
    Call::new("CHECK", "live", NS, "net1")
        .run("ippool", &conf)
        .ok();
    assert_eq!(
        Call::new("CHECK", "dead1", NS, "net1")
            .run("ippool", &conf)
            .err_code(),
        105
    );
}

#[test]
fn invalid_pools_are_rejected_naming_pool_and_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(tmp.path().join("pools")).expect("mkdir");
    std::fs::write(
        tmp.path().join("pools/rail2.json"),
        json!({"name": "gpu2-net12", "subnet": "172.16.12.0/24", "gateway": "172.16.13.254"})
            .to_string(),
    )
    .expect("pool file");
    let conf = file_conf(tmp.path(), json!({"default_ipv4_ippool": ["gpu2-net12"]}));
    let e = add("c", &conf).err();
    assert_eq!(e["code"], 7);
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("pool gpu2-net12: gateway"),
        "{e}"
    );
    assert!(
        !tmp.path().join("data/gpu2-net12.state").exists(),
        "nothing may change on bad input"
    );
    let unknown = file_conf(
        tmp.path(),
        json!({"default_ipv4_ippool": ["nope"], "pools": [rail_pool()]}),
    );
    let _ = std::fs::remove_file(tmp.path().join("pools/rail2.json"));
    let e = add("c", &unknown).err();
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("\"nope\" is not defined"),
        "{e}"
    );
}

/// Starts `n` plugin processes at once and waits for all of them.
fn concurrently(n: usize, command: &str, conf: &Value) -> Vec<Outcome> {
    let stdin = conf.to_string();
    let children: Vec<_> = (0..n)
        .map(|i| {
            let mut c = Command::new(bin("ippool"));
            c.env_clear()
                .env("CNI_COMMAND", command)
                .env("CNI_CONTAINERID", format!("burst-{i}"))
                .env("CNI_NETNS", NS)
                .env("CNI_IFNAME", "net1")
                .env("CNI_PATH", "/usr/lib/cni");
            (c, stdin.clone())
        })
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = children
            .into_iter()
            .map(|(c, input)| s.spawn(move || run_with_stdin(c, input.as_bytes())))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

fn burst_and_free(conf: &Value) {
    let outs = concurrently(64, "ADD", conf);
    let got: BTreeSet<String> = outs.iter().map(|o| addresses(&o.ok())[0].clone()).collect();
    assert_eq!(
        got.len(),
        64,
        "64 concurrent ADDs must yield 64 distinct addresses"
    );
    for o in concurrently(64, "DEL", conf) {
        o.ok();
    }
}

#[test]
fn sixty_four_concurrent_processes_file_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = file_conf(
        tmp.path(),
        json!({"pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"]}),
    );
    burst_and_free(&conf);
    assert_eq!(
        pool_state(&tmp.path().join("data"), "gpu1-net11")["allocated"],
        0
    );
}

#[test]
fn sixty_four_concurrent_processes_etcd_store() {
    let etcd = Etcd::start();
    let conf = etcd_conf(
        &etcd,
        json!({"pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"]}),
    );
    burst_and_free(&conf);
    let left: Vec<String> = etcd
        .keys("/rdma-cni/ippool/pools/gpu1-net11/")
        .into_iter()
        .filter(|k| !k.ends_with("/cursor"))
        .collect();
    assert_eq!(left, Vec::<String>::new(), "allocations left in etcd");
}

#[test]
fn etcd_store_semantics_match_the_file_store() {
    let etcd = Etcd::start();
    let pool = json!({"name": "tiny", "subnet": "10.42.0.0/29", "gateway": "10.42.0.1", "excludeIPs": ["10.42.0.2"]});
    let conf = etcd_conf(
        &etcd,
        json!({"pools": [pool], "default_ipv4_ippool": ["tiny"], "sticky": true, "nodeName": "node-a"}),
    );
    let r = add("e1", &conf).ok();
    assert_eq!(addresses(&r), ["10.42.0.3/29"]);
    assert_eq!(add("e1", &conf).ok(), r, "idempotent");
    for c in ["e2", "e3", "e4"] {
        add(c, &conf).ok();
    }
    let e = add("e5", &conf).err();
    assert_eq!(e["code"], 106, "{e}");
    Call::new("CHECK", "e1", NS, "net1")
        .run("ippool", &with_prev(&conf, &r))
        .ok();
    del("e1", &conf).ok();
    del("e1", &conf).ok();
    assert_eq!(addresses(&add("e5", &conf).ok()), ["10.42.0.3/29"]);
    let mut gc = conf.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "e2", "ifname": "net1"}]);
    let mut call = Call::new("GC", "", "", "");
    call.netns = None;
    call.run("ippool", &gc).ok();
    let owners = etcd.keys("/rdma-cni/ippool/pools/tiny/owner/");
    assert_eq!(
        owners,
        ["/rdma-cni/ippool/pools/tiny/owner/rail1/node-a/e2/net1"]
    );
    let mut status = call.with("STATUS");
    status.netns = None;
    status.run("ippool", &gc).ok();
}

#[test]
fn unreachable_etcd_is_try_again_later_within_the_timeout() {
    // A listener that accepts and never answers: the worst kind of down.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut conf = file_conf(
        tmp.path(),
        json!({"pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"], "store": "etcd",
        "etcd": {"endpoints": [format!("http://127.0.0.1:{port}")], "timeout": "600ms"}}),
    );
    let start = Instant::now();
    let e = add("c", &conf).err();
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?} with a 600ms timeout",
        start.elapsed()
    );
    conf["cniVersion"] = json!("1.1.0");
    let mut status = Call::new("STATUS", "", "", "");
    status.netns = None;
    assert_eq!(status.run("ippool", &conf).err_code(), 50);
    drop(silent);
}

#[test]
fn a_process_killed_mid_add_leaves_a_consistent_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pools = json!([{"name": "v4", "subnet": "10.43.0.0/24", "default": true},
                       {"name": "v6", "subnet": "fd00:43::/120", "default": true}]);
    let conf = file_conf(tmp.path(), json!({"pools": pools}));
    // Killed before the first state file is in place, between the two
    // families, and in the middle of writing a record (half of it on disk).
    for (point, v4_held) in [
        ("state.write.before_rename", Value::Null),
        ("ippool.add.after_v4", json!(1)),
        ("state.double.torn_write", json!(0)),
    ] {
        let killed = Call::new("ADD", "victim", NS, "net1")
            .env("FAILPOINTS", &format!("{point}=return(kill)"))
            .run("ippool", &conf);
        assert_eq!(killed.status, -1, "{point}: expected SIGKILL: {killed:?}");
        // The store is readable and holds exactly what the process committed.
        let v4 = pool_state(&tmp.path().join("data"), "v4");
        assert_eq!(
            v4.get("allocated").cloned().unwrap_or(Value::Null),
            v4_held,
            "{point}: {v4}"
        );
        // The runtime's DEL then ADD again converge.
        del("victim", &conf).ok();
        if !v4_held.is_null() {
            assert_eq!(
                pool_state(&tmp.path().join("data"), "v4")["allocated"],
                0,
                "{point}"
            );
        }
        let r = add("victim", &conf).ok();
        assert_eq!(addresses(&r).len(), 2, "{point}");
        del("victim", &conf).ok();
    }
    // An uncaught failure after v4 is rolled back by the ADD itself.
    let failed = Call::new("ADD", "unlucky", NS, "net1")
        .env("FAILPOINTS", "ippool.add.after_v6=return")
        .run("ippool", &conf);
    failed.err();
    assert_eq!(pool_state(&tmp.path().join("data"), "v4")["allocated"], 0);
    assert_eq!(pool_state(&tmp.path().join("data"), "v6")["allocated"], 0);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn works_under_debians_go_macvlan_and_our_sriov() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pod = Netns::new("pod");
    let master = format!("mv{}", unique());
    ip(&[
        "link",
        "add",
        &master,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{master}p"),
    ]);
    ip(&["link", "set", &master, "up"]);
    let mut conf = file_conf(
        tmp.path(),
        json!({"pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"]}),
    );
    conf["type"] = json!("macvlan");
    conf["master"] = json!(master);
    let mut call = Call::new("ADD", "mv", &pod.path(), "net1");
    call.cni_path = format!("{}:/usr/lib/cni", bin_dir().display());
    let r = call.run("/usr/lib/cni/macvlan", &conf);
    let r = r.ok();
    assert_eq!(r["ips"][0]["address"], "172.16.11.1/24");
    let a = pod.ip_json(&["addr", "show", "net1"]);
    assert!(a.to_string().contains("172.16.11.1"), "{a}");
    call.with("DEL")
        .run("/usr/lib/cni/macvlan", &with_prev(&conf, &r))
        .ok();
    assert_eq!(
        pool_state(&tmp.path().join("data"), "gpu1-net11")["allocated"],
        0
    );
    ip(&["link", "del", &master]);

    // And under our own sriov, with a stand-in VF.
    let node = FakeNode::new(1, 1500);
    let mut sconf = node.conf(&node.vfs[0].pci, json!({}));
    sconf["ipam"] = file_conf(
        tmp.path(),
        json!({"pools": [rail_pool()], "default_ipv4_ippool": ["gpu1-net11"]}),
    )["ipam"]
        .clone();
    let mut call = Call::new("ADD", "sr", &pod.path(), "net1");
    call.cni_path = bin_dir().display().to_string();
    let r = call.run("sriov", &sconf).ok();
    // Next-fit: the pool moves on from the address macvlan just released.
    assert_eq!(r["ips"][0]["address"], "172.16.11.2/24");
    let routes = pod.ip(&["route", "show", "172.16.0.0/16"]);
    assert!(routes.contains("via 172.16.11.254 dev net1"), "{routes}");
    call.with("DEL").run("sriov", &with_prev(&sconf, &r)).ok();
    assert_eq!(
        pool_state(&tmp.path().join("data"), "gpu1-net11")["allocated"],
        0
    );
}
