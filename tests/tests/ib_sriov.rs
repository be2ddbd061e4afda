//! `ib-sriov` run as a runtime runs it: real binary, real netns, veth ends
//! standing in for IPoIB VF netdevs, fake sysfs (with `infiniband/<dev>` and
//! the driver's bind/unbind files), the simulated PF (which stores node and
//! port GUIDs) and the simulated RDMA subsystem.

mod common;

use common::*;
use serde_json::{Value, json};

const GUID_A: &str = "02:00:00:00:00:00:0a:01";
const GUID_ORIG: &str = "0c:42:a1:03:00:11:22:33";
const ALL_F: &str = "ff:ff:ff:ff:ff:ff:ff:ff";

struct IbNode {
    node: FakeNode,
}

impl IbNode {
    /// VFs with GUID `GUID_ORIG` (as sriov-network-operator assigns them)
    /// and one RDMA device `mlx5_<10+i>` each.
    fn new(vfs: usize) -> IbNode {
        let node = FakeNode::new(vfs, 4092);
        for (i, vf) in node.vfs.iter().enumerate() {
            let mut s = fresh_vf();
            s["node_guid"] = json!(GUID_ORIG);
            s["port_guid"] = json!(GUID_ORIG);
            node.set_sim_vf(i as u32, &s);
            let dev = node
                .sysfs
                .join("bus/pci/devices")
                .join(&vf.pci)
                .join("infiniband");
            std::fs::create_dir_all(dev.join(format!("mlx5_{}", 10 + i))).expect("mkdir");
        }
        IbNode { node }
    }

    fn conf(&self, i: usize, extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "ib-rail1", "type": "ib-sriov",
                           "deviceID": self.node.vfs[i].pci,
                           "stateDir": self.node.state, "sysfsRoot": self.node.sysfs});
        if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        c
    }

    fn guids(&self, i: usize) -> (String, String) {
        let s = self.node.sim_vf(i as u32);
        let g = |k: &str| s[k].as_str().unwrap_or("none").to_string();
        (g("node_guid"), g("port_guid"))
    }

    fn rdma_location(&self, dev: &str) -> String {
        sim_rdma_location(&self.node.sysfs, dev)
    }

    /// What `driver`'s bind file last got (the fake tree records writes).
    fn last_bind(&self, driver: &str) -> String {
        std::fs::read_to_string(
            self.node
                .sysfs
                .join("bus/pci/drivers")
                .join(driver)
                .join("bind"),
        )
        .unwrap_or_default()
    }
}

fn msg(e: &Value) -> String {
    e["msg"].as_str().unwrap_or_default().to_string()
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn add_check_del_sets_guid_rebinds_isolates_rdma_and_restores() {
    let n = IbNode::new(1);
    let vf = n.node.vfs[0].clone();
    let pod = Netns::new("pod");
    let before = n.node.snapshot();
    let conf = n.conf(
        0,
        json!({"link_state": "enable", "rdmaIsolation": true, "pkey": "0x8001",
               "runtimeConfig": {"infinibandGUID": GUID_A},
               "ipam": n.node.host_local("10.60.0.0/24", "10.60.0.1")}),
    );
    let call = Call::new("ADD", "ib-1", &pod.path(), "net1");
    let r = call.run("ib-sriov", &conf).ok();

    assert_eq!(n.guids(0), (GUID_A.to_string(), GUID_A.to_string()));
    assert_eq!(n.node.sim_vf(0)["link_state"], "enable");
    assert_eq!(
        n.last_bind("iavf"),
        vf.pci,
        "VF not rebound after the GUID change"
    );
    assert!(pod.has_link("net1") && !ip_ok(&["link", "show", &vf.name]));
    assert!(pod.ip(&["addr", "show", "net1"]).contains("10.60.0.2/24"));
    assert_eq!(n.rdma_location("mlx5_10"), pod.path());
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert_eq!(r["ips"][0]["address"], "10.60.0.2/24");
    let rec = list_files(&n.node.state)
        .into_iter()
        .find(|f| f.starts_with("attachments/"))
        .expect("record");
    let rec: Value = serde_json::from_slice(&std::fs::read(n.node.state.join(rec)).expect("read"))
        .expect("json");
    assert_eq!(
        (rec["pkey"].as_u64(), rec["rdma"].as_str()),
        (Some(0x8001), Some("mlx5_10"))
    );

    let cached = with_prev(&conf, &r);
    call.with("CHECK").run("ib-sriov", &cached).ok();
    // CHECK names a GUID someone changed behind our back.
    let mut s = n.node.sim_vf(0);
    s["port_guid"] = json!("02:00:00:00:00:00:0b:0b");
    n.node.set_sim_vf(0, &s);
    let e = call.with("CHECK").run("ib-sriov", &cached).err();
    assert!(msg(&e).contains("port_guid"), "{e}");

    call.with("DEL").run("ib-sriov", &cached).ok();
    assert_eq!(n.node.snapshot(), before, "host not restored");
    assert_eq!(n.rdma_location("mlx5_10"), "host");
    call.with("DEL").run("ib-sriov", &cached).ok();
    assert_eq!(n.node.snapshot(), before, "second DEL changed something");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn guid_comes_from_runtime_config_then_args_then_cni_args_then_config() {
    let n = IbNode::new(1);
    let g = |last: u8| format!("02:00:00:00:00:00:00:{last:02x}");
    let full = json!({"guid": g(4), "args": {"cni": {"guid": g(2)}},
                      "runtimeConfig": {"infinibandGUID": g(1)}});
    let cases = [
        (full.clone(), 1),
        (json!({"guid": g(4), "args": {"cni": {"guid": g(2)}}}), 2),
        (json!({"guid": g(4)}), 3),
    ];
    for (extra, want) in cases {
        let pod = Netns::new("pod");
        let mut call = Call::new("ADD", "ib-g", &pod.path(), "net1");
        call.cni_args = Some(format!("IgnoreUnknown=1;GUID={}", g(3)));
        let conf = n.conf(0, extra);
        call.run("ib-sriov", &conf).ok();
        assert_eq!(n.guids(0).0, g(want), "{conf}");
        call.with("DEL").run("ib-sriov", &conf).ok();
        assert_eq!(n.guids(0).0, GUID_ORIG);
    }
    // Only the config: used when nothing else says.
    let pod = Netns::new("pod");
    let call = Call::new("ADD", "ib-g", &pod.path(), "net1");
    let conf = n.conf(0, json!({"guid": g(4)}));
    call.run("ib-sriov", &conf).ok();
    assert_eq!(n.guids(0).0, g(4));
    call.with("DEL").run("ib-sriov", &conf).ok();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn invalid_guids_and_configs_are_refused_naming_the_key_and_change_nothing() {
    let n = IbNode::new(1);
    let pod = Netns::new("pod");
    let before = n.node.snapshot();
    let call = Call::new("ADD", "ib-v", &pod.path(), "net1");
    for (extra, key) in [
        (json!({"guid": "00:00:00:00:00:00:00:00"}), "guid"),
        (json!({"guid": ALL_F}), "guid"),
        (
            json!({"runtimeConfig": {"infinibandGUID": "02:00:00:00:00:00:00"}}),
            "runtimeConfig.infinibandGUID",
        ),
        (
            json!({"args": {"cni": {"guid": "zz:00:00:00:00:00:00:01"}}}),
            "args.cni.guid",
        ),
        (json!({"pkey": "0x8000"}), "pkey"),
        (json!({"link_state": "up"}), "link_state"),
        (json!({"ipam": {"type": "dhcp"}}), "ipam.type"),
        (json!({"deviceID": "0000:af:06.0/../.."}), "deviceID"),
        (
            json!({"ibKubernetesEnabled": true, "guid": GUID_A}),
            "ibKubernetesEnabled",
        ),
        (
            json!({"ibKubernetesEnabled": true, "args": {"cni": {"mellanox.infiniband.app": "configured"}}}),
            "ibKubernetesEnabled",
        ),
        (json!({"vfioPciMode": true, "guid": GUID_A}), "vfioPciMode"),
    ] {
        let e = call.run("ib-sriov", &n.conf(0, extra.clone())).err();
        assert_eq!(e["code"], 7, "{extra}: {e}");
        assert!(msg(&e).contains(key), "{extra}: {e}");
        assert_eq!(n.node.snapshot(), before, "{extra}");
    }
    let mut bad_args = call.clone();
    bad_args.cni_args = Some("GUID=nope".into());
    let e = bad_args.run("ib-sriov", &n.conf(0, json!({}))).err();
    assert!(msg(&e).contains("CNI_ARGS GUID"), "{e}");

    // No GUID anywhere and the VF has none (all zero): refused, with the remedy.
    let mut s = n.node.sim_vf(0);
    s["node_guid"] = json!("00:00:00:00:00:00:00:00");
    s["port_guid"] = json!("00:00:00:00:00:00:00:00");
    n.node.set_sim_vf(0, &s);
    let before = n.node.snapshot();
    let e = call.run("ib-sriov", &n.conf(0, json!({}))).err();
    assert!(msg(&e).contains("no valid GUID"), "{e}");
    assert_eq!(n.node.snapshot(), before);
    // ibKubernetesEnabled with what ib-kubernetes writes: accepted.
    let conf = n.conf(
        0,
        json!({"ibKubernetesEnabled": true,
        "args": {"cni": {"mellanox.infiniband.app": "configured", "guid": GUID_A}}}),
    );
    call.run("ib-sriov", &conf).ok();
    assert_eq!(n.guids(0).0, GUID_A);
    call.with("DEL").run("ib-sriov", &conf).ok();
    // The VF had no GUID: it gets all-F back (mlx5 refuses zero), like upstream.
    assert_eq!(n.guids(0), (ALL_F.to_string(), ALL_F.to_string()));
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn a_failure_after_each_add_step_restores_guid_link_state_and_rdma() {
    let steps = [
        "ib-sriov.add.after_record",
        "vf.after_link_state",
        "vf.after_node_guid",
        "vf.after_port_guid",
        "ib-sriov.add.after_guid",
        "ib-sriov.add.after_rdma",
        "netdev.into_pod.after_move",
        "ib-sriov.add.after_move",
        "ib-sriov.add.after_ipam",
    ];
    let n = IbNode::new(1);
    let pod = Netns::new("pod");
    let conf = n.conf(
        0,
        json!({"guid": GUID_A, "link_state": "disable", "rdmaIsolation": true,
               "ipam": n.node.host_local("10.61.0.0/24", "10.61.0.1")}),
    );
    let before = n.node.snapshot();
    for step in steps {
        let e = Call::new("ADD", "ib-f", &pod.path(), "net1")
            .env("FAILPOINTS", &format!("{step}=return"))
            .run("ib-sriov", &conf)
            .err();
        assert!(msg(&e).contains(step), "{step}: {e}");
        // The GUID and link state too (ib-sriov-cni#217 leaves them set).
        assert_eq!(n.node.snapshot(), before, "after failing at {step}");
        assert_eq!(n.rdma_location("mlx5_10"), "host", "{step}");
        assert!(!pod.has_link("net1"), "{step}");
    }
    let call = Call::new("ADD", "ib-f", &pod.path(), "net1");
    let r = call.run("ib-sriov", &conf).ok();
    call.with("DEL").run("ib-sriov", &with_prev(&conf, &r)).ok();
    assert_eq!(n.node.snapshot(), before);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn isolation_needs_exclusive_mode_and_exactly_one_rdma_device() {
    let n = IbNode::new(1);
    let pod = Netns::new("pod");
    let call = Call::new("ADD", "ib-m", &pod.path(), "net1");
    let conf = n.conf(0, json!({"guid": GUID_A, "rdmaIsolation": true}));
    let before = n.node.snapshot();
    std::fs::write(
        n.node.sysfs.join("sim-rdma.json"),
        r#"{"mode": "shared", "devices": {}}"#,
    )
    .expect("write");
    let e = call.run("ib-sriov", &conf).err();
    assert_eq!(e["code"], 108);
    assert!(msg(&e).contains("rdma system set netns exclusive"), "{e}");
    assert_eq!(n.node.snapshot(), before);
    // Without isolation the mode does not matter.
    let plain = n.conf(0, json!({"guid": GUID_A}));
    call.run("ib-sriov", &plain).ok();
    call.with("DEL").run("ib-sriov", &plain).ok();

    std::fs::remove_file(n.node.sysfs.join("sim-rdma.json")).expect("rm");
    let ib = n
        .node
        .sysfs
        .join("bus/pci/devices")
        .join(&n.node.vfs[0].pci)
        .join("infiniband");
    std::fs::create_dir_all(ib.join("mlx5_77")).expect("mkdir");
    let e = call.run("ib-sriov", &conf).err();
    assert!(msg(&e).contains("mlx5_10, mlx5_77"), "{e}");
    assert_eq!(n.node.snapshot(), before);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn del_with_the_netns_gone_or_empty_releases_ipam_and_restores_the_pf_side() {
    for how in ["deleted netns", "empty CNI_NETNS"] {
        let n = IbNode::new(1);
        let mut pod = Netns::new("pod");
        let before = n.node.snapshot();
        let conf = n.conf(
            0,
            json!({"guid": GUID_A, "link_state": "enable", "rdmaIsolation": true,
                   "ipam": n.node.host_local("10.62.0.0/24", "10.62.0.1")}),
        );
        let call = Call::new("ADD", "ib-d", &pod.path(), "net1");
        call.run("ib-sriov", &conf).ok();
        assert_eq!(n.node.leases().len(), 1);
        pod.delete();
        let mut del = call.with("DEL");
        if how == "empty CNI_NETNS" {
            del.netns = Some(String::new());
        }
        del.run("ib-sriov", &conf).ok();
        let after = n.node.snapshot();
        assert_eq!(
            after["vf0 pf-side"], before["vf0 pf-side"],
            "{how}: GUID/link state"
        );
        assert_eq!(after["ipam leases"], "", "{how}: lease leaked");
        assert_eq!(after["state files"], "", "{how}: state leaked");
        assert_eq!(n.rdma_location("mlx5_10"), "host");
        del.run("ib-sriov", &conf).ok();
    }
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn vfio_vf_gets_its_guid_without_a_netdev_and_gc_releases_the_stale() {
    let n = IbNode::new(1);
    let pci = n.node.add_userspace_vf(1);
    let mut s = fresh_vf();
    s["node_guid"] = json!(GUID_ORIG);
    s["port_guid"] = json!(GUID_ORIG);
    n.node.set_sim_vf(1, &s);
    let pod = Netns::new("pod");
    let mut conf = n.conf(
        0,
        json!({"guid": GUID_A, "ipam": n.node.host_local("10.63.0.0/24", "10.63.0.1")}),
    );
    conf["deviceID"] = json!(pci);
    conf["cniVersion"] = json!("1.1.0");
    let r = Call::new("ADD", "ib-vfio", &pod.path(), "net1")
        .run("ib-sriov", &conf)
        .ok();
    assert_eq!(n.guids(1).0, GUID_A);
    assert_eq!(r["interfaces"][0]["pciID"], pci.as_str());
    assert!(r["ips"].as_array().is_none_or(Vec::is_empty), "{r}");
    assert_eq!(
        n.node.leases(),
        Vec::<String>::new(),
        "vfio VFs get no IPAM"
    );
    assert!(
        n.last_bind("vfio-pci").is_empty(),
        "a vfio VF is not rebound"
    );

    let mut gc = n.conf(0, json!({"cniVersion": "1.1.0"}));
    gc["cni.dev/valid-attachments"] = json!([]);
    let mut call = Call::new("GC", "", "", "");
    call.netns = None;
    call.run("ib-sriov", &gc).ok();
    assert_eq!(
        n.guids(1).0,
        GUID_ORIG,
        "GC did not restore the stale attachment"
    );
    assert_eq!(
        list_files(&n.node.state)
            .iter()
            .filter(|f| f.starts_with("attachments/"))
            .count(),
        0
    );
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn del_after_netns_death_renames_the_returned_netdev_back() {
    // A dying netns hands a physical VF netdev back under its pod name.
    let n = IbNode::new(1);
    let before = n.node.snapshot();
    let mut pod = Netns::new("pod");
    let conf = n.conf(0, json!({"guid": GUID_A}));
    let call = Call::new("ADD", "ib-k", &pod.path(), "net1");
    call.run("ib-sriov", &conf).ok();
    pod.ip(&["link", "set", "net1", "netns", "1"]);
    pod.delete();
    assert!(ip_ok(&["link", "show", "net1"]));
    call.with("DEL").run("ib-sriov", &conf).ok();
    assert!(
        !ip_ok(&["link", "show", "net1"]),
        "pod name still in the host"
    );
    assert_eq!(n.node.snapshot(), before);
}
