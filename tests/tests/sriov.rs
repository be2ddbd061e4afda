//! `sriov` run as a runtime runs it: real binary, real netns and veth, fake
//! sysfs, simulated PF (test build). Each test asserts what the pod and the
//! host show afterwards.

mod common;

use common::*;
use serde_json::{Value, json};

const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

fn static_ipam(addr: &str, gw: &str) -> Value {
    json!({"type": "static", "addresses": [{"address": addr, "gateway": gw}],
           "routes": [{"dst": "10.200.0.0/16"}]})
}

fn link(ns: &Netns, name: &str) -> Value {
    ns.ip_json(&["-d", "link", "show", name])[0].clone()
}

fn addrs(ns: &Netns, name: &str) -> Vec<String> {
    ns.ip_json(&["addr", "show", name])[0]["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["scope"] == "global")
                .map(|i| {
                    format!(
                        "{}/{}",
                        i["local"].as_str().unwrap_or_default(),
                        i["prefixlen"]
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn add_check_del_del_moves_programs_and_restores_everything() {
    let node = FakeNode::new(1, 9000);
    let vf = node.vfs[0].clone();
    let pod = Netns::new("pod");
    let before = node.snapshot();
    let conf = node.conf(
        &vf.pci,
        json!({"vlan": 100, "vlanQoS": 2, "spoofchk": "off", "trust": "on", "link_state": "enable",
               "min_tx_rate": 10, "max_tx_rate": 1000, "mac": "02:00:00:00:00:21", "mtu": 4000,
               "ipam": node.host_local("10.55.0.0/24", "10.55.0.1")}),
    );
    let call = Call::new("ADD", "ctr-1", &pod.path(), "net1");
    let result = call.run("sriov", &conf).ok();

    // The pod sees the VF under CNI_IFNAME with the configured MAC, MTU, address and routes.
    let l = link(&pod, "net1");
    assert_eq!(l["address"], "02:00:00:00:00:21");
    assert_eq!(l["mtu"], 4000);
    assert!(
        l["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("UP"))),
        "{l}"
    );
    assert_eq!(addrs(&pod, "net1"), ["10.55.0.2/24"]);
    let routes = pod.ip(&["route", "show", "10.200.0.0/16"]);
    assert!(routes.contains("via 10.55.0.1 dev net1"), "{routes}");
    assert!(!ip_ok(&["link", "show", &vf.name]), "VF still in the host");
    // The PF side holds exactly the configured values.
    assert_eq!(
        node.sim_vf(0),
        json!({"mac": "02:00:00:00:00:21", "vlan": {"id": 100, "qos": 2, "proto": "802.1Q"},
               "spoofchk": false, "trust": true, "link_state": "enable",
               "rate": {"min": 10, "max": 1000}})
    );
    assert_eq!(
        node.sim_calls().lines().collect::<Vec<_>>(),
        [
            "vf 0 vlan 100 qos 2 proto 802.1Q",
            "vf 0 mac 02:00:00:00:00:21",
            "vf 0 min_tx_rate 10 max_tx_rate 1000",
            "vf 0 spoofchk off",
            "vf 0 trust on",
            "vf 0 link_state enable"
        ]
    );
    // The result names the interface in the pod.
    assert_eq!(result["interfaces"][0]["name"], "net1");
    assert_eq!(result["interfaces"][0]["mac"], "02:00:00:00:00:21");
    assert_eq!(result["interfaces"][0]["sandbox"], pod.path());
    assert_eq!(result["ips"][0]["address"], "10.55.0.2/24");
    assert_eq!(result["ips"][0]["interface"], 0);

    let conf_prev = with_prev(&conf, &result);
    call.with("CHECK").run("sriov", &conf_prev).ok();
    call.with("DEL").run("sriov", &conf_prev).ok();
    assert_eq!(node.snapshot(), before, "host not restored after DEL");
    assert!(!pod.has_link("net1"));
    call.with("DEL").run("sriov", &conf_prev).ok();
    assert_eq!(node.snapshot(), before, "second DEL changed something");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn result_follows_the_config_version() {
    for version in VERSIONS {
        let node = FakeNode::new(1, 1500);
        let pod = Netns::new("pod");
        let bin = node.dir.path().join("cni-bin");
        any_version_ipam(&bin);
        let mut conf = node.conf(
            &node.vfs[0].pci,
            json!({"ipam": {"type": "any-version-ipam"}}),
        );
        conf["cniVersion"] = json!(version);
        let mut call = Call::new("ADD", "ctr-v", &pod.path(), "net1");
        call.cni_path = bin.display().to_string();
        let r = call.run("sriov", &conf).ok();
        assert_eq!(r["cniVersion"], version);
        let ip = &r["ips"][0];
        assert_eq!(
            ip.get("version").is_some(),
            version < "1.0.0",
            "{version}: {ip}"
        );
        let iface = &r["interfaces"][0];
        assert_eq!(
            iface.get("mtu").is_some(),
            version == "1.1.0",
            "{version}: {iface}"
        );
        assert_eq!(
            iface.get("pciID").and_then(Value::as_str),
            (version == "1.1.0").then_some(node.vfs[0].pci.as_str())
        );
        let with_prev = with_prev(&conf, &r);
        if version >= "0.4.0" {
            call.with("CHECK").run("sriov", &with_prev).ok();
        } else {
            assert_eq!(
                call.with("CHECK").run("sriov", &with_prev).err_code(),
                1,
                "CHECK before 0.4.0"
            );
        }
        call.with("DEL").run("sriov", &with_prev).ok();
    }
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn a_failure_after_each_add_step_leaves_the_host_as_before() {
    let steps = [
        "sriov.add.after_record",
        "vf.after_vlan",
        "vf.after_mac",
        "vf.after_rate",
        "vf.after_spoofchk",
        "vf.after_trust",
        "vf.after_link_state",
        "sriov.add.after_pf",
        "netdev.into_pod.after_move",
        "sriov.add.after_move",
        "sriov.add.after_link_up",
        "sriov.add.after_ipam",
        "sriov.add.after_addresses",
        "sriov.add.after_commit",
    ];
    let node = FakeNode::new(1, 9000);
    let vf = node.vfs[0].clone();
    let pod = Netns::new("pod");
    let conf = node.conf(
        &vf.pci,
        json!({"vlan": 7, "mac": "02:00:00:00:00:31", "min_tx_rate": 1, "max_tx_rate": 50,
               "spoofchk": "off", "trust": "on", "link_state": "disable", "mtu": 2000,
               "ipam": node.host_local("10.56.0.0/24", "10.56.0.1")}),
    );
    let before = node.snapshot();
    for step in steps {
        let out = Call::new("ADD", "ctr-f", &pod.path(), "net1")
            .env("FAILPOINTS", &format!("{step}=return"))
            .run("sriov", &conf);
        let e = out.err();
        assert!(
            e["msg"].as_str().unwrap_or_default().contains(step),
            "{step}: {e}"
        );
        assert_eq!(node.snapshot(), before, "after failing at {step}");
        assert!(!pod.has_link("net1"), "{step}: net1 left in the pod");
    }
    // And without a failpoint the same ADD works: nothing was left half-held.
    let call = Call::new("ADD", "ctr-f", &pod.path(), "net1");
    let r = call.run("sriov", &conf).ok();
    call.with("DEL").run("sriov", &with_prev(&conf, &r)).ok();
    assert_eq!(node.snapshot(), before);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn driver_refusals_fail_add_and_roll_back_the_pf_side() {
    // igb refuses link_state, min_tx_rate > 0 and 802.1ad.
    let node = FakeNode::new(1, 1500);
    node.refuse("link_state min_tx_rate vlan_8021ad");
    let pod = Netns::new("pod");
    let before = node.snapshot();
    for (extra, key) in [
        (
            json!({"vlan": 10, "spoofchk": "off", "link_state": "enable"}),
            "link_state",
        ),
        (
            json!({"vlan": 10, "min_tx_rate": 5, "max_tx_rate": 100}),
            "min_tx_rate",
        ),
        (json!({"vlan": 10, "vlanProto": "802.1ad"}), "vlan"),
    ] {
        let conf = node.conf(&node.vfs[0].pci, extra.clone());
        let e = Call::new("ADD", "ctr-r", &pod.path(), "net1")
            .run("sriov", &conf)
            .err();
        assert_eq!(e["code"], 100, "{extra}: {e}");
        let msg = e["msg"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(&format!("{key}: set VF 0")),
            "{extra}: {msg}"
        );
        assert!(
            msg.contains("simulated PF driver does not support this"),
            "{msg}"
        );
        assert_eq!(node.snapshot(), before, "{extra}");
    }
    // Accepted settings still work on the same driver.
    let conf = node.conf(&node.vfs[0].pci, json!({"vlan": 10, "max_tx_rate": 100}));
    let call = Call::new("ADD", "ctr-r", &pod.path(), "net1");
    let r = call.run("sriov", &conf).ok();
    call.with("DEL").run("sriov", &with_prev(&conf, &r)).ok();
    assert_eq!(node.snapshot(), before);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn invalid_config_and_environment_change_nothing() {
    let node = FakeNode::new(1, 1500);
    let pod = Netns::new("pod");
    let vf = node.vfs[0].pci.clone();
    let before = node.snapshot();
    for (conf, code, needle) in [
        (node.conf(&vf, json!({"vlan": 4095})), 7, "vlan"),
        (node.conf(&vf, json!({"vlanQoS": 3})), 7, "vlanQoS"),
        (node.conf(&vf, json!({"spoofchk": "yes"})), 7, "spoofchk"),
        (node.conf(&vf, json!({"trust": "enabled"})), 7, "trust"),
        (node.conf(&vf, json!({"link_state": "up"})), 7, "link_state"),
        (
            node.conf(&vf, json!({"min_tx_rate": 100, "max_tx_rate": 10})),
            7,
            "min_tx_rate",
        ),
        (
            node.conf(&vf, json!({"mac": "ff:ff:ff:ff:ff:ff"})),
            7,
            "mac",
        ),
        (
            node.conf(&vf, json!({"mtu": 9000})),
            7,
            "mtu: 9000 exceeds the MTU 1500 of PF pf0",
        ),
        (
            node.conf(&vf, json!({"deviceID": "0000:af:06.7"})),
            101,
            "0000:af:06.7",
        ),
        (
            node.conf(&vf, json!({"deviceID": "../../../etc"})),
            7,
            "deviceID",
        ),
        (node.conf(&vf, json!({"cniVersion": "0.2.0"})), 1, "0.2.0"),
        (
            node.conf(&vf, json!({"ipam": {"type": "../../bin/sh"}})),
            104,
            "../../bin/sh",
        ),
        (
            node.conf(&vf, json!({"ipam": {"type": "no-such-ipam"}})),
            104,
            "no-such-ipam",
        ),
    ] {
        let e = Call::new("ADD", "ctr-i", &pod.path(), "net1")
            .run("sriov", &conf)
            .err();
        assert_eq!(e["code"], code, "{e}");
        assert!(
            e["msg"].as_str().unwrap_or_default().contains(needle),
            "{needle}: {e}"
        );
        assert_eq!(node.snapshot(), before, "{e}");
    }
    let conf = node.conf(&vf, json!({}));
    for (var, value, needle) in [
        ("CNI_CONTAINERID", "../evil", "CNI_CONTAINERID"),
        ("CNI_IFNAME", "way-too-long-name", "CNI_IFNAME"),
        ("CNI_IFNAME", "a/b", "CNI_IFNAME"),
        ("CNI_NETNS", "relative", "CNI_NETNS"),
        ("CNI_ARGS", "FOO=1", "FOO"),
        ("CNI_COMMAND", "BOGUS", "CNI_COMMAND"),
    ] {
        let e = Call::new("ADD", "ctr-i", &pod.path(), "net1")
            .env(var, value)
            .run("sriov", &conf)
            .err();
        assert_eq!(e["code"], 4, "{var}: {e}");
        assert!(
            e["msg"].as_str().unwrap_or_default().contains(needle),
            "{e}"
        );
    }
    let e = Call::new("ADD", "ctr-i", "/proc/self/ns/mnt", "net1")
        .run("sriov", &conf)
        .err();
    assert_eq!(
        e["code"], 103,
        "a mount namespace is not a network namespace: {e}"
    );
    let garbage = common::run_with_stdin(
        {
            let mut c = std::process::Command::new(bin("sriov"));
            c.env("CNI_COMMAND", "ADD")
                .env("CNI_CONTAINERID", "x")
                .env("CNI_NETNS", pod.path())
                .env("CNI_IFNAME", "net1");
            c
        },
        b"{not json",
    );
    assert_eq!(garbage.err_code(), 6);
    assert_eq!(node.snapshot(), before);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn del_with_empty_or_deleted_netns_releases_ipam_pf_side_and_records() {
    for how in ["empty CNI_NETNS", "deleted netns"] {
        let node = FakeNode::new(1, 1500);
        let mut pod = Netns::new("pod");
        let conf = node.conf(
            &node.vfs[0].pci,
            json!({"vlan": 42, "ipam": node.host_local("10.57.0.0/24", "10.57.0.1")}),
        );
        let call = Call::new("ADD", "ctr-d", &pod.path(), "net1");
        call.run("sriov", &conf).ok();
        assert_eq!(node.leases().len(), 1);
        let mut del = call.with("DEL");
        if how == "empty CNI_NETNS" {
            del.netns = Some(String::new());
        }
        // The runtime tore the pod down first (the veth stand-in dies with it).
        pod.delete();
        del.run("sriov", &conf).ok();
        assert_eq!(
            node.sim_vf(0)["vlan"]["id"],
            0,
            "{how}: PF side not restored"
        );
        assert_eq!(
            node.leases(),
            Vec::<String>::new(),
            "{how}: IPAM lease leaked"
        );
        assert_eq!(
            list_files(&node.state),
            Vec::<String>::new(),
            "{how}: state leaked"
        );
        del.run("sriov", &conf).ok();
    }
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn del_after_netns_death_renames_the_returned_vf_back() {
    // When a netns dies the kernel hands a physical VF back to the host under
    // its pod name; DEL must give it back its original name, MAC and MTU.
    let node = FakeNode::new(1, 9000);
    let vf = node.vfs[0].clone();
    let before = node.snapshot();
    let mut pod = Netns::new("pod");
    let conf = node.conf(&vf.pci, json!({"mac": "02:00:00:00:00:41", "mtu": 3000}));
    let call = Call::new("ADD", "ctr-k", &pod.path(), "net1");
    call.run("sriov", &conf).ok();
    pod.ip(&["link", "set", "net1", "netns", "1"]);
    pod.delete();
    assert!(ip_ok(&["link", "show", "net1"]));
    call.with("DEL").run("sriov", &conf).ok();
    assert!(
        !ip_ok(&["link", "show", "net1"]),
        "pod name still in the host"
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn del_restores_mtu_and_mac_the_workload_changed() {
    let node = FakeNode::new(1, 9000);
    let before = node.snapshot();
    let pod = Netns::new("pod");
    let conf = node.conf(&node.vfs[0].pci, json!({"mtu": 3333}));
    let call = Call::new("ADD", "ctr-m", &pod.path(), "net1");
    let r = call.run("sriov", &conf).ok();
    pod.ip(&[
        "link",
        "set",
        "net1",
        "mtu",
        "4444",
        "address",
        "02:00:00:00:44:44",
    ]);
    let e = call.with("CHECK").run("sriov", &with_prev(&conf, &r)).err();
    assert_eq!(e["code"], 105);
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("MTU is 4444 (expected 3333)"),
        "{e}"
    );
    call.with("DEL").run("sriov", &with_prev(&conf, &r)).ok();
    assert_eq!(node.snapshot(), before);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn check_names_each_difference() {
    let node = FakeNode::new(1, 1500);
    let pod = Netns::new("pod");
    let conf = node.conf(
        &node.vfs[0].pci,
        json!({"vlan": 5, "trust": "on", "ipam": static_ipam("10.3.0.9/24", "10.3.0.1")}),
    );
    let call = Call::new("ADD", "ctr-c", &pod.path(), "net1");
    let r = call.run("sriov", &conf).ok();
    let check = || call.with("CHECK").run("sriov", &with_prev(&conf, &r));
    check().ok();
    let mut pf = node.sim_vf(0);
    pf["trust"] = json!(false);
    node.set_sim_vf(0, &pf);
    let e = check().err();
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("trust on is not set (PF reports trust off)"),
        "{e}"
    );
    pf["trust"] = json!(true);
    node.set_sim_vf(0, &pf);
    pod.ip(&["addr", "del", "10.3.0.9/24", "dev", "net1"]);
    let e = check().err();
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("address 10.3.0.9/24 is missing"),
        "{e}"
    );
    pod.ip(&["link", "set", "net1", "name", "other"]);
    let e = check().err();
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("interface net1 not found"),
        "{e}"
    );
    pod.ip(&["link", "set", "other", "name", "net1"]);
    call.with("DEL").run("sriov", &with_prev(&conf, &r)).ok();
    let e = check().err();
    assert_eq!(e["code"], 105, "CHECK after DEL: {e}");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn two_adds_racing_for_one_vf_one_wins_one_is_told_why() {
    let node = FakeNode::new(1, 1500);
    let pods = [Netns::new("pod"), Netns::new("pod")];
    let conf = node.conf(&node.vfs[0].pci, json!({"vlan": 3}));
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let conf = &conf;
                s.spawn(move || {
                    Call::new("ADD", &format!("racer-{i}"), &p.path(), "net1").run("sriov", conf)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let winners: Vec<usize> = (0..2).filter(|i| outcomes[*i].status == 0).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let (w, l) = (winners[0], 1 - winners[0]);
    let e = outcomes[l].err();
    assert_eq!(e["code"], 102, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("racer-{w}")),
        "{e}"
    );
    assert!(pods[w].has_link("net1") && !pods[l].has_link("net1"));
    // Once the winner is deleted, the loser's retry gets the VF.
    Call::new("DEL", &format!("racer-{w}"), &pods[w].path(), "net1")
        .run("sriov", &conf)
        .ok();
    let retry = Call::new("ADD", &format!("racer-{l}"), &pods[l].path(), "net1");
    retry.run("sriov", &conf).ok();
    retry.with("DEL").run("sriov", &conf).ok();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn a_vf_held_by_a_dead_pod_is_reclaimed() {
    let node = FakeNode::new(1, 1500);
    let mut dead = Netns::new("pod");
    let conf = node.conf(&node.vfs[0].pci, json!({}));
    Call::new("ADD", "gone", &dead.path(), "net1")
        .run("sriov", &conf)
        .ok();
    // The pod vanished without DEL; the kernel returns a physical VF to the
    // host. Our stand-in dies with the netns, so put a fresh one in its place.
    dead.ip(&["link", "set", "net1", "netns", "1"]);
    dead.delete();
    ip(&["link", "set", "net1", "name", &node.vfs[0].name]);
    let pod = Netns::new("pod");
    let call = Call::new("ADD", "new", &pod.path(), "net1");
    call.run("sriov", &conf).ok();
    assert!(pod.has_link("net1"));
    call.with("DEL").run("sriov", &conf).ok();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn a_second_add_without_del_is_refused_and_an_interrupted_one_is_undone() {
    let node = FakeNode::new(1, 1500);
    let pod = Netns::new("pod");
    let before = node.snapshot();
    let conf = node.conf(&node.vfs[0].pci, json!({"vlan": 9}));
    let call = Call::new("ADD", "twice", &pod.path(), "net1");
    call.run("sriov", &conf).ok();
    assert_eq!(call.run("sriov", &conf).err_code(), 102);
    call.with("DEL").run("sriov", &conf).ok();
    // Killed after programming the PF (SIGKILL: no rollback ran).
    let killed = call
        .clone()
        .env("FAILPOINTS", "sriov.add.after_pf=return(kill)")
        .run("sriov", &conf);
    assert_eq!(killed.status, -1, "expected SIGKILL: {killed:?}");
    assert_eq!(
        node.sim_vf(0)["vlan"]["id"],
        9,
        "the kill left the PF programmed"
    );
    // The runtime's retry ADD first undoes the interrupted one.
    let r = call.run("sriov", &conf).ok();
    call.with("DEL").run("sriov", &with_prev(&conf, &r)).ok();
    assert_eq!(node.snapshot(), before);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn del_of_an_attachment_cached_by_upstream_sriov_cni() {
    let node = FakeNode::new(1, 9000);
    let vf = node.vfs[0].clone();
    let before = node.snapshot();
    let pod = Netns::new("pod");
    // What the Go plugin left: the VF in the pod as net1 with its MAC and MTU,
    // the PF side programmed, its cache and its plain-text allocation file.
    ip(&["link", "set", &vf.name, "netns", &pod.name]);
    pod.ip(&["link", "set", &vf.name, "name", "net1"]);
    pod.ip(&[
        "link",
        "set",
        "net1",
        "address",
        "02:00:00:00:00:51",
        "mtu",
        "5000",
        "up",
    ]);
    node.set_sim_vf(
        0,
        &json!({"mac": "02:00:00:00:00:51", "vlan": {"id": 200, "qos": 1, "proto": "802.1Q"},
                "spoofchk": false, "trust": false, "link_state": "auto", "rate": {"min": 0, "max": 0}}),
    );
    let cache = json!({
        "cniVersion": "1.0.0", "name": "rail1", "type": "sriov",
        "OrigVfState": {"HostIFName": vf.name, "SpoofChk": true, "Trust": false,
            "AdminMAC": "00:00:00:00:00:00", "EffectiveMAC": vf.mac, "Vlan": 0, "VlanQoS": 0,
            "VlanProto": 33024, "MinTxRate": 0, "MaxTxRate": 0, "LinkState": 0, "MTU": vf.mtu},
        "Master": "pf0", "MAC": "02:00:00:00:00:51", "MTU": 1500, "vlan": 200, "vlanQoS": 1,
        "deviceID": vf.pci, "VFID": 0, "spoofchk": "off", "runtimeConfig": {}
    });
    std::fs::create_dir_all(node.state.join("pci")).expect("mkdir");
    std::fs::write(node.state.join("go-ctr-net1"), cache.to_string()).expect("cache");
    std::fs::write(node.state.join("pci").join(&vf.pci), pod.path()).expect("alloc");
    // Pre-upgrade state: no sim file existed before the Go plugin ran.
    let conf = node.conf(&vf.pci, json!({}));
    Call::new("DEL", "go-ctr", &pod.path(), "net1")
        .run("sriov", &conf)
        .ok();
    assert!(!pod.has_link("net1"));
    let after = node.snapshot();
    assert_eq!(after["vf0 link"], before["vf0 link"]);
    assert_eq!(
        node.sim_vf(0),
        json!({"mac": "00:00:00:00:00:00", "vlan": {"id": 0, "qos": 0, "proto": "802.1Q"},
               "spoofchk": true, "trust": false, "link_state": "auto", "rate": {"min": 0, "max": 0}})
    );
    assert_eq!(
        list_files(&node.state),
        Vec::<String>::new(),
        "Go cache or allocation left behind"
    );
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn gc_releases_only_attachments_missing_from_the_valid_list() {
    let node = FakeNode::new(2, 1500);
    let pods = [Netns::new("pod"), Netns::new("pod")];
    let before = node.snapshot();
    for (i, pod) in pods.iter().enumerate() {
        let conf = node.conf(
            &node.vfs[i].pci,
            json!({"vlan": 10 + i, "ipam": node.host_local("10.58.0.0/24", "10.58.0.1")}),
        );
        Call::new("ADD", &format!("gc-{i}"), &pod.path(), "net1")
            .run("sriov", &conf)
            .ok();
    }
    let mut gc = node.conf(
        &node.vfs[0].pci,
        json!({"ipam": node.host_local("10.58.0.0/24", "10.58.0.1")}),
    );
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc-0", "ifname": "net1"}]);
    let mut call = Call::new("GC", "", "", "");
    call.netns = None;
    call.run("sriov", &gc).ok();
    let after = node.snapshot();
    assert!(pods[0].has_link("net1"), "kept attachment was touched");
    assert_eq!(node.sim_vf(0)["vlan"]["id"], 10);
    assert_eq!(
        after["vf1 pf-side"], before["vf1 pf-side"],
        "stale attachment's PF side not restored"
    );
    let state = list_files(&node.state);
    assert_eq!(
        state
            .iter()
            .filter(|f| f.starts_with("attachments/"))
            .count(),
        1,
        "{state:?}"
    );
    assert!(state.iter().any(|f| f.contains("gc-0")));
    // Debian's host-local predates GC: not forwarded, and GC still succeeds.
    Call::new("DEL", "gc-0", &pods[0].path(), "net1")
        .run(
            "sriov",
            &node.conf(
                &node.vfs[0].pci,
                json!({"ipam": node.host_local("10.58.0.0/24", "10.58.0.1")}),
            ),
        )
        .ok();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn userspace_driver_vf_programs_the_pf_side_only() {
    let node = FakeNode::new(0, 9000);
    let pci = node.add_userspace_vf(0);
    let pod = Netns::new("pod");
    let conf = node.conf(&pci, json!({"vlan": 300, "mac": "02:00:00:00:00:61", "ipam": static_ipam("10.4.0.2/24", "10.4.0.1")}));
    let call = Call::new("ADD", "dpdk", &pod.path(), "net1");
    let r = call.run("sriov", &conf).ok();
    assert_eq!(r["interfaces"][0]["mac"], "02:00:00:00:00:61");
    assert_eq!(r["ips"][0]["address"], "10.4.0.2/24");
    assert_eq!(
        pod.ip_json(&["link", "show"]).as_array().map(Vec::len),
        Some(1),
        "only lo in the pod"
    );
    assert_eq!(node.sim_vf(0)["vlan"]["id"], 300);
    call.with("CHECK").run("sriov", &with_prev(&conf, &r)).ok();
    call.with("DEL").run("sriov", &conf).ok();
    assert_eq!(node.sim_vf(0)["vlan"]["id"], 0);
    assert_eq!(node.sim_vf(0)["mac"], "00:00:00:00:00:00");
    assert_eq!(list_files(&node.state), Vec::<String>::new());
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn stale_altnames_never_block_a_rename() {
    // sriov-cni #445: after a pod's DEL, udev (or the kernel) can leave the
    // pod name as an altname of the VF; the next ADD must still succeed.
    let node = FakeNode::new(1, 1500);
    let vf = node.vfs[0].clone();
    let pod = Netns::new("pod");
    let conf = node.conf(&vf.pci, json!({}));
    let call = Call::new("ADD", "alt", &pod.path(), "net1");
    call.run("sriov", &conf).ok();
    call.with("DEL").run("sriov", &conf).ok();
    ip(&[
        "link", "property", "add", "dev", &vf.name, "altname", "net1",
    ]);
    call.run("sriov", &conf).ok();
    let l = link(&pod, "net1");
    assert!(
        l.get("altnames").is_none(),
        "stale altname moved into the pod: {l}"
    );
    call.with("DEL").run("sriov", &conf).ok();
    let host = &ip_json(&["link", "show", &vf.name])[0];
    assert!(host.get("altnames").is_none(), "{host}");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn mac_comes_from_runtime_config_then_cni_args_then_config() {
    let node = FakeNode::new(1, 1500);
    let pod = Netns::new("pod");
    let mut conf = node.conf(&node.vfs[0].pci, json!({"mac": "02:00:00:00:00:03"}));
    let mut call = Call::new("ADD", "macs", &pod.path(), "net1");
    call.cni_args = Some("IgnoreUnknown=1;K8S_POD_NAME=p;MAC=02:00:00:00:00:02".into());
    conf["runtimeConfig"] = json!({"mac": "02:00:00:00:00:01"});
    let r = call.run("sriov", &conf).ok();
    assert_eq!(link(&pod, "net1")["address"], "02:00:00:00:00:01");
    assert_eq!(r["interfaces"][0]["mac"], "02:00:00:00:00:01");
    call.with("DEL").run("sriov", &conf).ok();
    conf["runtimeConfig"] = json!({});
    call.run("sriov", &conf).ok();
    assert_eq!(link(&pod, "net1")["address"], "02:00:00:00:00:02");
    call.with("DEL").run("sriov", &conf).ok();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn ipam_failure_is_passed_through_and_rolled_back() {
    let node = FakeNode::new(1, 1500);
    let pod = Netns::new("pod");
    let before = node.snapshot();
    let bin = node.dir.path().join("cni-bin");
    script(
        &bin,
        "broken-ipam",
        r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":11,"msg":"pool rail1 is exhausted (254 addresses)"}'; exit 1"#,
    );
    let conf = node.conf(
        &node.vfs[0].pci,
        json!({"vlan": 11, "ipam": {"type": "broken-ipam"}}),
    );
    let mut call = Call::new("ADD", "ipamfail", &pod.path(), "net1");
    call.cni_path = bin.display().to_string();
    let e = call.run("sriov", &conf).err();
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("pool rail1 is exhausted"),
        "{e}"
    );
    assert_eq!(node.snapshot(), before);
    assert!(!pod.has_link("net1"));
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn version_status_and_logging() {
    let node = FakeNode::new(1, 1500);
    let mut call = Call::new("VERSION", "", "", "");
    call.netns = None;
    let v = call.run("sriov", &json!({"cniVersion": "1.1.0"})).ok();
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    let mut conf = node.conf(&node.vfs[0].pci, json!({}));
    conf["cniVersion"] = json!("1.1.0");
    let status = call.with("STATUS");
    assert_eq!(status.run("sriov", &conf).ok(), Value::Null);
    let blocker = node.dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("write");
    conf["stateDir"] = json!(blocker.join("state"));
    let e = status.run("sriov", &conf).err();
    assert_eq!(e["code"], 50, "{e}");

    // Logs go to logFile (0600) and never to stdout.
    let log = node.dir.path().join("sriov.log");
    let pod = Netns::new("pod");
    let conf = node.conf(
        &node.vfs[0].pci,
        json!({"logFile": log, "logLevel": "debug"}),
    );
    let add = Call::new("ADD", "logs", &pod.path(), "net1");
    let out = add.run("sriov", &conf);
    out.ok();
    let text = std::fs::read_to_string(&log).expect("log file");
    assert!(text.contains("ADD") && text.contains("logs"), "{text}");
    let mode = std::fs::metadata(&log)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600));
    add.with("DEL").run("sriov", &conf).ok();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn a_dead_pods_late_del_never_clobbers_the_next_pod() {
    // sriov-cni #219: pod A dies without DEL, pod B gets its VF, then A's DEL
    // finally arrives. B must keep its VF and settings; B's DEL must restore
    // the VF's true original state, not A's settings.
    let node = FakeNode::new(1, 1500);
    let before = node.snapshot();
    let mut pod_a = Netns::new("pod");
    let pod_b = Netns::new("pod");
    let conf_a = node.conf(
        &node.vfs[0].pci,
        json!({"vlan": 100, "mac": "02:00:00:00:00:aa"}),
    );
    let conf_b = node.conf(&node.vfs[0].pci, json!({"vlan": 200}));
    let a = Call::new("ADD", "pod-a", &pod_a.path(), "net1");
    a.run("sriov", &conf_a).ok();
    pod_a.ip(&["link", "set", "net1", "netns", "1"]); // what the kernel does when A's netns dies
    pod_a.delete();
    let b = Call::new("ADD", "pod-b", &pod_b.path(), "net1");
    b.run("sriov", &conf_b).ok();
    assert_eq!(node.sim_vf(0)["vlan"]["id"], 200);
    assert_eq!(
        node.sim_vf(0)["mac"],
        "00:00:00:00:00:00",
        "A's MAC survived into B's attachment"
    );
    a.with("DEL").run("sriov", &conf_a).ok();
    assert!(pod_b.has_link("net1"), "A's DEL took B's VF");
    assert_eq!(
        node.sim_vf(0)["vlan"]["id"],
        200,
        "A's DEL clobbered B's VLAN"
    );
    b.with("DEL").run("sriov", &conf_b).ok();
    assert_eq!(node.snapshot(), before);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn del_leaves_a_vf_claimed_by_another_attachment_alone() {
    let node = FakeNode::new(1, 1500);
    let mut pod = Netns::new("pod");
    let conf = node.conf(&node.vfs[0].pci, json!({"vlan": 100}));
    let call = Call::new("ADD", "old", &pod.path(), "net1");
    call.run("sriov", &conf).ok();
    pod.delete();
    let claim = node.state.join("pci").join(&node.vfs[0].pci);
    let other =
        json!({"version": 1, "netns": "/proc/self/ns/net", "containerID": "new", "ifname": "net1"});
    std::fs::write(&claim, other.to_string()).expect("claim");
    call.with("DEL").run("sriov", &conf).ok();
    assert_eq!(
        node.sim_vf(0)["vlan"]["id"],
        100,
        "DEL restored a VF it no longer owns"
    );
    assert_eq!(
        std::fs::read_to_string(&claim).ok(),
        Some(other.to_string())
    );
    assert!(
        list_files(&node.state)
            .iter()
            .all(|f| !f.starts_with("attachments/"))
    );
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn check_accepts_what_a_later_plugin_changed_and_reported() {
    let node = FakeNode::new(1, 1500);
    let pod = Netns::new("pod");
    let conf = node.conf(&node.vfs[0].pci, json!({"mac": "02:00:00:00:00:71"}));
    let call = Call::new("ADD", "chained", &pod.path(), "net1");
    let mut r = call.run("sriov", &conf).ok();
    // A coordinator-style plugin later in the chain rewrites the MAC and says so.
    pod.ip(&["link", "set", "net1", "address", "02:aa:00:00:00:71"]);
    assert_eq!(
        call.with("CHECK")
            .run("sriov", &with_prev(&conf, &r))
            .err_code(),
        105
    );
    r["interfaces"][0]["mac"] = json!("02:aa:00:00:00:71");
    call.with("CHECK").run("sriov", &with_prev(&conf, &r)).ok();
    call.with("DEL").run("sriov", &with_prev(&conf, &r)).ok();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn a_vfs_own_mac_is_given_back_by_clearing_the_admin_mac() {
    // igb reports a VF's own MAC on the PF side until an admin MAC is set;
    // writing that MAC back on DEL would lock an untrusted VF out of its MAC
    // (found on real igb in the VM lane). All-zero clears the admin MAC.
    let node = FakeNode::new(1, 1500);
    let vf = node.vfs[0].clone();
    let igb_like = json!({"mac": vf.mac, "ownMac": vf.mac, "vlan": {"id": 0, "qos": 0, "proto": "802.1Q"},
                          "spoofchk": true, "trust": false, "link_state": "auto", "rate": {"min": 0, "max": 0}});
    node.set_sim_vf(0, &igb_like);
    let before = node.snapshot();
    let pod = Netns::new("pod");
    let conf = node.conf(&vf.pci, json!({"mac": "02:00:00:00:00:81"}));
    let call = Call::new("ADD", "own-mac", &pod.path(), "net1");
    call.run("sriov", &conf).ok();
    assert_eq!(node.sim_vf(0)["mac"], "02:00:00:00:00:81");
    call.with("DEL").run("sriov", &conf).ok();
    assert_eq!(node.snapshot(), before);
    assert!(
        node.sim_calls()
            .lines()
            .any(|l| l == "vf 0 mac 00:00:00:00:00:00"),
        "{}",
        node.sim_calls()
    );
    // The same through a rollback: the netdev ends with its own MAC too.
    let failed = call
        .clone()
        .env("FAILPOINTS", "sriov.add.after_link_up=return")
        .run("sriov", &conf);
    failed.err();
    assert_eq!(node.snapshot(), before);
}

/// Records of an earlier boot as a power loss leaves unsynced files: a torn
/// attachment record and a torn VF owner, under that boot's marker.
fn records_of_an_earlier_boot(node: &FakeNode, marker_boot: &str) {
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    let marker = format!(r#"{{"version":1,"bootID":"{marker_boot}"}}"#);
    for (dir, torn) in [
        ("attachments", "ctr-old:net1.json".to_string()),
        ("pci", node.vfs[0].pci.clone()),
    ] {
        let d = node.state.join(dir);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join(".boot_id"), &marker).expect("marker");
        std::fs::write(d.join(&torn), b"{\"version\":1,\"ne").expect("torn record");
        let f = std::fs::File::options()
            .write(true)
            .open(d.join(&torn))
            .expect("open");
        f.set_modified(day_ago).expect("age the record");
    }
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn torn_records_of_an_earlier_boot_are_swept_and_this_boots_are_not() {
    let this_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("boot id")
        .trim()
        .to_string();

    // Control: the same torn records stamped with this boot are reported,
    // never swept (a record of this boot may be a live pod's).
    let node = FakeNode::new(1, 1500);
    records_of_an_earlier_boot(&node, &this_boot);
    let gone = Netns::new("gone");
    let conf = node.conf(&node.vfs[0].pci, json!({}));
    let e = Call::new("DEL", "ctr-old", &gone.path(), "net1")
        .run("sriov", &conf)
        .err();
    assert!(
        e["msg"].as_str().is_some_and(|m| m.contains("corrupt")),
        "{e}"
    );
    assert!(node.state.join("attachments/ctr-old:net1.json").exists());

    // After a reboot the runtime's late DEL succeeds and the VF is free.
    let node = FakeNode::new(1, 1500);
    records_of_an_earlier_boot(&node, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
    let conf = node.conf(&node.vfs[0].pci, json!({}));
    Call::new("DEL", "ctr-old", &gone.path(), "net1")
        .run("sriov", &conf)
        .ok();
    assert_eq!(list_files(&node.state), Vec::<String>::new());
    let pod = Netns::new("pod");
    let call = Call::new("ADD", "ctr-new", &pod.path(), "net1");
    call.run("sriov", &conf).ok();
    assert!(pod.has_link("net1"));
    for dir in ["attachments", "pci"] {
        let marker =
            std::fs::read_to_string(node.state.join(dir).join(".boot_id")).expect("marker");
        assert!(marker.contains(&this_boot), "{dir}: {marker}");
    }
    call.with("DEL").run("sriov", &conf).ok();
    assert_eq!(list_files(&node.state), Vec::<String>::new());
}
