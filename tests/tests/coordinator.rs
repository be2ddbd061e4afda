//! `coordinator` chained last, as Multus runs it: a pod with a Calico-style
//! eth0 and rails net1..netN (stand-in VFs through `sriov` + `ippool`), each
//! rail's gateway in its own switch netns. Routing is proven by traffic.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A pod with eth0 (Calico-style) and `rails` stand-in VFs waiting for chains.
struct RailPod {
    node: FakeNode,
    pod: Netns,
    /// Kept for its lifetime: the node side of eth0.
    _calico: Netns,
    cid: String,
}

fn rail_v4(i: usize) -> String {
    format!("172.16.1{i}")
}

impl RailPod {
    fn new(rails: usize) -> RailPod {
        let node = FakeNode::per_rail(rails, 9000);
        let pod = Netns::new("pod");
        let calico = Netns::new("calico");
        let cali = format!("ca{}", unique());
        calico.ip(&[
            "link", "add", &cali, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
        ]);
        calico.ip(&["addr", "add", "169.254.1.1/32", "dev", &cali]);
        calico.ip(&["-6", "addr", "add", "fd44::1/128", "dev", &cali, "nodad"]);
        calico.ip(&["link", "set", &cali, "up"]);
        calico.ip(&["route", "add", "10.244.1.5/32", "dev", &cali]);
        calico.ip(&["-6", "route", "add", "fd44::5/128", "dev", &cali]);
        calico.ip(&["addr", "add", "10.96.0.10/32", "dev", "lo"]);
        pod.ip(&["addr", "add", "10.244.1.5/32", "dev", "eth0"]);
        pod.ip(&["-6", "addr", "add", "fd44::5/128", "dev", "eth0", "nodad"]);
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
        pod.ip(&["-6", "route", "add", "fd44::1", "dev", "eth0"]);
        pod.ip(&[
            "-6", "route", "add", "default", "via", "fd44::1", "dev", "eth0",
        ]);
        for (i, sw) in node.switches.iter().enumerate() {
            let (r, peer) = (i + 1, &node.vfs[i].peer);
            sw.ip(&[
                "addr",
                "add",
                &format!("{}.254/24", rail_v4(r)),
                "dev",
                peer,
            ]);
            sw.ip(&[
                "-6",
                "addr",
                "add",
                &format!("fd00:16:{r}::fe/64"),
                "dev",
                peer,
                "nodad",
            ]);
            // A client beyond the gateway: replies to it depend on policy routing.
            sw.ip(&["addr", "add", &format!("10.99.{r}.1/32"), "dev", "lo"]);
            sw.ip(&[
                "-6",
                "addr",
                "add",
                &format!("fd99:{r}::1/128"),
                "dev",
                "lo",
                "nodad",
            ]);
        }
        RailPod {
            node,
            pod,
            _calico: calico,
            cid: format!("pod-{}", unique()),
        }
    }

    fn network(&self, r: usize) -> String {
        format!("gpu{r}-rail")
    }

    /// sriov with ippool IPAM (dual stack) for rail r (1-based).
    fn sriov_conf(&self, r: usize) -> Value {
        let mut c = self.node.conf(&self.node.vfs[r - 1].pci, json!({}));
        c["name"] = json!(self.network(r));
        c["ipam"] = json!({
            "type": "ippool", "dataDir": self.node.dir.path().join("ipam"), "poolsDir": "/nonexistent",
            "pools": [
                {"name": format!("gpu{r}-net1{r}"), "subnet": format!("{}.0/24", rail_v4(r)),
                 "ips": [format!("{0}.1-{0}.200", rail_v4(r))], "gateway": format!("{}.254", rail_v4(r))},
                {"name": format!("gpu{r}-v6"), "subnet": format!("fd00:16:{r}::/64"),
                 "ips": [format!("fd00:16:{r}::1-fd00:16:{r}::ff")], "gateway": format!("fd00:16:{r}::fe")}
            ],
            "default_ipv4_ippool": [format!("gpu{r}-net1{r}")], "default_ipv6_ippool": [format!("gpu{r}-v6")]
        });
        c
    }

    fn coord_conf(&self, r: usize, extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": self.network(r), "type": "coordinator",
                           "stateDir": self.node.dir.path().join("coordinator"), "probeTimeoutMs": 300});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            c[k] = v;
        }
        c
    }

    fn call(&self, r: usize) -> Call {
        let mut c = Call::new("ADD", &self.cid, &self.pod.path(), &format!("net{r}"));
        c.cni_path = bin_dir().display().to_string();
        c
    }

    fn chain(&self, r: usize, extra: Value) -> Vec<(&'static str, Value)> {
        vec![
            ("sriov", self.sriov_conf(r)),
            ("coordinator", self.coord_conf(r, extra)),
        ]
    }

    fn add(&self, r: usize, extra: Value) -> Value {
        chain_add(&self.call(r), &self.chain(r, extra))
    }

    fn del(&self, r: usize, extra: Value, cached: &Value) {
        chain_del(&self.call(r), &self.chain(r, extra), cached);
    }

    fn rules(&self, v6: bool) -> Vec<(String, u64, u64)> {
        let fam = if v6 { "-6" } else { "-4" };
        self.pod
            .ip_json(&[fam, "rule"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                let table = r["table"].as_str()?.parse::<u64>().ok()?;
                Some((
                    r["src"].as_str().unwrap_or("all").to_string(),
                    table,
                    r["priority"].as_u64()?,
                ))
            })
            .collect()
    }

    /// Routes of table t (empty when the table does not exist).
    fn table(&self, v6: bool, t: u64) -> Vec<Value> {
        let fam = if v6 { "-6" } else { "-4" };
        let out = std::process::Command::new("ip")
            .args([
                "-j",
                "-n",
                &self.pod.name,
                fam,
                "route",
                "show",
                "table",
                &t.to_string(),
            ])
            .output()
            .expect("ip");
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn main_defaults(&self, v6: bool) -> Vec<String> {
        let fam = if v6 { "-6" } else { "-4" };
        self.pod
            .ip_json(&[fam, "route", "show", "default"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["gateway"].as_str().unwrap_or_default(),
                    r["dev"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    /// Pings the pod's address from the client behind rail r's gateway and
    /// returns (net_r tx delta, eth0 tx delta).
    fn ping_from_beyond(&self, r: usize, target: &str, v6: bool) -> (u64, u64) {
        let sw = &self.node.switches[r - 1];
        let src = if v6 {
            format!("fd99:{r}::1")
        } else {
            format!("10.99.{r}.1")
        };
        let before = (
            packets(&self.pod, &format!("net{r}")).1,
            packets(&self.pod, "eth0").1,
        );
        let out = std::process::Command::new("ip")
            .args([
                "netns", "exec", &sw.name, "ping", "-c", "5", "-i", "0.2", "-W", "1", "-I", &src,
                target,
            ])
            .output()
            .expect("ping");
        assert!(
            out.status.success(),
            "rail {r}: ping {target} from {src} failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let after = (
            packets(&self.pod, &format!("net{r}")).1,
            packets(&self.pod, "eth0").1,
        );
        (after.0 - before.0, after.1 - before.1)
    }
}

fn address(result: &Value, v6: bool) -> String {
    result["ips"]
        .as_array()
        .and_then(|ips| {
            ips.iter()
                .filter_map(|ip| ip["address"].as_str())
                .find(|a| a.contains(':') == v6)
                .map(|a| a.split('/').next().unwrap_or_default().to_string())
        })
        .expect("address of that family")
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn three_rails_get_tables_rules_and_answer_on_the_rail_they_were_asked_on() {
    let p = RailPod::new(3);
    // Chains in an odd order: tables follow the names, not the order.
    let mut results = std::collections::BTreeMap::new();
    for r in [3, 1, 2] {
        results.insert(r, p.add(r, json!({})));
    }
    for v6 in [false, true] {
        let rules = p.rules(v6);
        for r in 1..=3usize {
            let ip = address(&results[&r], v6);
            let table = 100 + r as u64;
            assert!(
                rules.contains(&(ip.clone(), table, 1000 + table)),
                "v6={v6}: no rule from {ip} lookup {table}: {rules:?}"
            );
            let routes = p.table(v6, table);
            let gw = if v6 {
                format!("fd00:16:{r}::fe")
            } else {
                format!("{}.254", rail_v4(r))
            };
            let dev = format!("net{r}");
            assert!(
                routes.iter().any(|x| x["dst"] == "default"
                    && x["gateway"] == gw.as_str()
                    && x["dev"] == dev.as_str()),
                "table {table}: {routes:?}"
            );
            assert!(
                routes
                    .iter()
                    .any(|x| x["dev"] == dev.as_str() && x["dst"] != "default"),
                "no subnet route in {table}"
            );
        }
        let defaults = p.main_defaults(v6);
        assert_eq!(
            defaults.len(),
            1,
            "main must keep exactly one default: {defaults:?}"
        );
        assert!(defaults[0].ends_with(" eth0"), "{defaults:?}");
    }
    settle_ipv6(&p.pod);
    for r in 1..=3 {
        for v6 in [false, true] {
            let (rail_tx, eth0_tx) = p.ping_from_beyond(r, &address(&results[&r], v6), v6);
            assert!(
                rail_tx >= 5,
                "rail {r} v6={v6}: replies did not leave through net{r} (tx +{rail_tx})"
            );
            assert!(
                eth0_tx < 2,
                "rail {r} v6={v6}: replies leaked through eth0 (tx +{eth0_tx})"
            );
        }
    }
    for r in 1..=3 {
        for o in chain_check(&p.call(r), &p.chain(r, json!({})), &results[&r]) {
            o.ok();
        }
    }
    for r in [2, 3, 1] {
        p.del(r, json!({}), &results[&r]);
    }
    for v6 in [false, true] {
        assert!(
            p.rules(v6)
                .iter()
                .all(|(_, t, _)| *t == 254 || *t == 255 || *t == 253),
            "rules left: {:?}",
            p.rules(v6)
        );
        for r in 1..=3 {
            assert!(p.table(v6, 100 + r).is_empty(), "table {} left", 100 + r);
        }
        assert_eq!(p.main_defaults(v6).len(), 1);
    }
    // Not even the pod's lock file: one per pod ever run would pile up.
    assert_eq!(
        every_file(&p.node.dir.path().join("coordinator")),
        Vec::<String>::new()
    );
}

/// Every entry of the state dir, pod lock files included (the per-boot
/// marker stays by design).
fn every_file(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !integration::harness::is_boot_marker(name))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn gc_removes_lock_files_of_pods_without_records() {
    let p = RailPod::new(1);
    let cached = p.add(1, json!({}));
    let state = p.node.dir.path().join("coordinator");
    // Left by an older version's DELs.
    std::fs::write(state.join("gone-pod.lock"), "").expect("write");
    let mut gc = p.coord_conf(1, json!({}));
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": p.cid, "ifname": "net1"}]);
    let mut call = Call::new("GC", "", "", "");
    call.netns = None;
    call.run("coordinator", &gc).ok();
    let left = every_file(&state);
    assert!(!left.contains(&"gone-pod.lock".to_string()), "{left:?}");
    assert_eq!(
        left.iter().filter(|f| f.ends_with(".json")).count(),
        1,
        "{left:?}"
    );
    p.del(1, json!({}), &cached);
    assert_eq!(every_file(&state), Vec::<String>::new());
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn an_unreachable_gateway_fails_add_in_bounded_time_and_leaves_nothing() {
    let p = RailPod::new(1);
    let sw = &p.node.switches[0];
    sw.ip(&[
        "addr",
        "del",
        &format!("{}.254/24", rail_v4(1)),
        "dev",
        &p.node.vfs[0].peer,
    ]);
    let call = p.call(1);
    let sriov = call.run("sriov", &p.sriov_conf(1)).ok();
    let start = Instant::now();
    let e = call
        .run(
            "coordinator",
            &with_prev(&p.coord_conf(1, json!({"probeTimeoutMs": 200})), &sriov),
        )
        .err();
    let took = start.elapsed();
    let msg = e["msg"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("net1") && msg.contains("172.16.11.254"), "{e}");
    assert_eq!(e["code"], 107, "{e}");
    assert!(
        took < Duration::from_secs(3),
        "3 probes of 200 ms took {took:?}"
    );
    assert!(
        p.rules(false).iter().all(|(_, t, _)| *t >= 253),
        "rules left: {:?}",
        p.rules(false)
    );
    assert!(p.table(false, 101).is_empty());
    assert_eq!(
        every_file(&p.node.dir.path().join("coordinator")),
        Vec::<String>::new()
    );
    // The runtime then DELs the whole chain.
    p.del(1, json!({}), &sriov);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn an_address_already_in_use_is_detected() {
    let p = RailPod::new(1);
    let sw = &p.node.switches[0];
    // Another host on the rail already has the address the pool will hand out.
    sw.ip(&[
        "addr",
        "add",
        &format!("{}.1/24", rail_v4(1)),
        "dev",
        &p.node.vfs[0].peer,
    ]);
    let call = p.call(1);
    let sriov = call.run("sriov", &p.sriov_conf(1)).ok();
    assert_eq!(address(&sriov, false), "172.16.11.1");
    let peer_mac = sw.ip_json(&["link", "show", &p.node.vfs[0].peer])[0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let e = call
        .run(
            "coordinator",
            &with_prev(&p.coord_conf(1, json!({"detectIPConflict": true})), &sriov),
        )
        .err();
    let msg = e["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("172.16.11.1") && msg.contains(&peer_mac),
        "{e}"
    );
    p.del(1, json!({}), &sriov);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn a_rail_can_hold_the_main_default_and_eth0_moves_to_its_own_table() {
    let p = RailPod::new(2);
    let extra = json!({"podDefaultRouteNic": "net2", "hijackCIDR": ["10.96.0.0/12"]});
    let r1 = p.add(1, extra.clone());
    let r2 = p.add(2, extra.clone());
    assert_eq!(p.main_defaults(false), ["172.16.12.254 net2"]);
    assert!(
        p.rules(false)
            .contains(&("10.244.1.5".to_string(), 100, 1100)),
        "{:?}",
        p.rules(false)
    );
    assert!(
        p.table(false, 100)
            .iter()
            .any(|x| x["dst"] == "default" && x["dev"] == "eth0")
    );
    let hijack = p.pod.ip(&["route", "show", "10.96.0.0/12"]);
    assert!(
        hijack.contains("via 169.254.1.1 dev eth0"),
        "service traffic must stay on eth0: {hijack}"
    );
    // A packet to the service leaves through eth0, not the rail holding the default.
    let out = p.pod.ip(&["route", "get", "10.96.0.10"]);
    assert!(out.contains("dev eth0"), "{out}");
    p.del(2, extra.clone(), &r2);
    assert_eq!(
        p.main_defaults(false),
        ["169.254.1.1 eth0"],
        "eth0's default must come back"
    );
    assert!(
        p.table(false, 100).is_empty(),
        "table 100 left: {:?}",
        p.table(false, 100)
    );
    p.del(1, extra, &r1);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn del_with_and_without_the_netns() {
    for how in ["netns gone", "empty CNI_NETNS"] {
        let mut p = RailPod::new(1);
        let cached = p.add(1, json!({}));
        p.pod.delete();
        let mut call = p.call(1);
        if how == "empty CNI_NETNS" {
            call.netns = Some(String::new());
        }
        chain_del(&call, &p.chain(1, json!({})), &cached);
        chain_del(&call, &p.chain(1, json!({})), &cached);
        assert_eq!(
            every_file(&p.node.dir.path().join("coordinator")),
            Vec::<String>::new(),
            "{how}"
        );
    }
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn concurrent_chains_of_one_pod_never_share_a_table() {
    let p = RailPod::new(4);
    let sriov: Vec<Value> = (1..=4)
        .map(|r| p.call(r).run("sriov", &p.sriov_conf(r)).ok())
        .collect();
    // The four coordinators of one pod at once: the pod's lock keeps tables apart.
    let outs: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=4)
            .map(|r| {
                let (p, prev) = (&p, &sriov[r - 1]);
                s.spawn(move || {
                    p.call(r)
                        .run("coordinator", &with_prev(&p.coord_conf(r, json!({})), prev))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for o in &outs {
        o.ok();
    }
    let tables: std::collections::BTreeSet<u64> = p
        .rules(false)
        .iter()
        .map(|r| r.1)
        .filter(|t| *t < 253)
        .collect();
    assert_eq!(tables.into_iter().collect::<Vec<_>>(), [101, 102, 103, 104]);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn pod_tuning_and_the_result_reflects_what_changed() {
    let p = RailPod::new(1);
    let extra = json!({"podMACPrefix": "0a:1b", "txQueueLen": 3000, "mtu": 8000});
    let mut v11 = p.chain(1, extra.clone());
    for (_, c) in v11.iter_mut() {
        c["cniVersion"] = json!("1.1.0");
    }
    // A v6 default from the pool's routes (the kernel refuses a second
    // default of equal metric, so eth0 has no v6 default in this pod):
    // coordinator moves it out of main into table 101.
    p.pod.ip(&["-6", "route", "del", "default"]);
    v11[0].1["ipam"]["pools"][1]["routes"] = json!([{"dst": "::/0", "gw": "fd00:16:1::fe"}]);
    let r = chain_add(&p.call(1), &v11);
    let l = &p.pod.ip_json(&["-d", "link", "show", "net1"])[0];
    assert_eq!(l["address"], "0a:1b:ac:10:0b:01", "prefix + 172.16.11.1");
    assert_eq!(l["mtu"], 8000);
    assert_eq!(l["txqlen"], 3000);
    assert_eq!(r["interfaces"][0]["mac"], "0a:1b:ac:10:0b:01");
    assert_eq!(r["interfaces"][0]["mtu"], 8000);
    let moved = r["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|x| x["dst"] == "::/0"))
        .cloned();
    assert_eq!(
        moved.as_ref().map(|m| m["table"].clone()),
        Some(json!(101)),
        "{r}"
    );
    assert_eq!(
        p.main_defaults(true),
        Vec::<String>::new(),
        "the rail's v6 default must leave main"
    );
    assert!(
        p.table(true, 101)
            .iter()
            .any(|x| x["dst"] == "default" && x["dev"] == "net1")
    );
    for key in ["all", "default", "net1"] {
        let v = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &p.pod.name,
                "cat",
                &format!("/proc/sys/net/ipv4/conf/{key}/rp_filter"),
            ])
            .output()
            .expect("cat");
        assert_eq!(
            String::from_utf8_lossy(&v.stdout).trim(),
            "0",
            "rp_filter of {key}"
        );
    }
    for o in chain_check(&p.call(1), &v11, &r) {
        o.ok();
    }
    // Something else changes the routing: CHECK names it.
    p.pod
        .ip(&["rule", "del", "from", "172.16.11.1", "lookup", "101"]);
    let e = p
        .call(1)
        .with("CHECK")
        .run("coordinator", &with_prev(&v11[1].1, &r))
        .err();
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("rule from 172.16.11.1/32 lookup 101"),
        "{e}"
    );
    chain_del(&p.call(1), &v11, &r);
    // 1.0.0 results cannot say `table`: the moved default is left out.
    let r10 = p.add(1, json!({}));
    assert!(
        r10["routes"]
            .as_array()
            .map(|rs| rs.iter().all(|x| x["dst"] != "::/0"))
            .unwrap_or(true),
        "{r10}"
    );
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn works_after_debians_go_macvlan() {
    let p = RailPod::new(1);
    let sw = &p.node.switches[0];
    // A host uplink for macvlan, wired to the rail's switch.
    let up = format!("up{}", unique());
    ip(&[
        "link",
        "add",
        &up,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{up}s"),
        "netns",
        &sw.name,
    ]);
    ip(&["link", "set", &up, "up"]);
    sw.ip(&["link", "set", &format!("{up}s"), "up"]);
    sw.ip(&["addr", "add", "172.30.0.1/24", "dev", &format!("{up}s")]);
    let net = json!({"cniVersion": "1.0.0", "name": "mv-rail"});
    let mut mv = net.clone();
    mv["type"] = json!("macvlan");
    mv["master"] = json!(up);
    mv["ipam"] = json!({"type": "static", "addresses": [{"address": "172.30.0.5/24", "gateway": "172.30.0.1"}]});
    let mut co = net.clone();
    co["type"] = json!("coordinator");
    co["stateDir"] = json!(p.node.dir.path().join("coordinator"));
    let plugins = [("/usr/lib/cni/macvlan", mv), ("coordinator", co)];
    let mut call = p.call(1);
    call.cni_path = format!("{}:/usr/lib/cni", bin_dir().display());
    let r = chain_add(&call, &plugins);
    assert!(
        p.rules(false)
            .contains(&("172.30.0.5".to_string(), 101, 1101)),
        "{:?}",
        p.rules(false)
    );
    sw.ip(&["addr", "add", "10.99.9.1/32", "dev", "lo"]);
    let ok = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &sw.name,
            "ping",
            "-c",
            "2",
            "-W",
            "1",
            "-I",
            "10.99.9.1",
            "172.30.0.5",
        ])
        .output()
        .expect("ping");
    assert!(
        ok.status.success(),
        "reply from the macvlan interface did not come back through it"
    );
    chain_del(&call, &plugins, &r);
    assert!(p.table(false, 101).is_empty());
    let _ = ip_ok(&["link", "del", &up]);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn announcements_refresh_what_the_rail_remembers_about_the_addresses() {
    // The rail's switch still maps the addresses to a previous pod's MAC.
    let p = RailPod::new(1);
    let (sw, peer) = (&p.node.switches[0], p.node.vfs[0].peer.clone());
    std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &sw.name,
            "sh",
            "-c",
            &format!("echo 1 > /proc/sys/net/ipv4/conf/{peer}/arp_accept"),
        ])
        .status()
        .expect("sysctl");
    sw.ip(&[
        "neigh",
        "add",
        "172.16.11.1",
        "lladdr",
        "02:de:ad:be:ef:01",
        "dev",
        &peer,
        "nud",
        "stale",
    ]);
    sw.ip(&[
        "neigh",
        "add",
        "fd00:16:1::1",
        "lladdr",
        "02:de:ad:be:ef:01",
        "dev",
        &peer,
        "nud",
        "stale",
    ]);
    let r = p.add(1, json!({"detectGateway": false}));
    let mac = r["interfaces"][0]["mac"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    settle_ipv6(&p.pod);
    std::thread::sleep(Duration::from_millis(300));
    for ip in ["172.16.11.1", "fd00:16:1::1"] {
        let n = sw.ip_json(&["neigh", "show", ip, "dev", &peer]);
        assert_eq!(
            n[0]["lladdr"].as_str(),
            Some(mac.as_str()),
            "{ip} not refreshed: {n}"
        );
    }
    p.del(1, json!({"detectGateway": false}), &r);
}
