//! `rdma` chained after `sriov` as Multus runs it: real binaries, real netns
//! and veth stand-ins, fake sysfs with `infiniband/<dev>` entries, and the
//! test build's simulated RDMA subsystem (`<sysfs>/sim-rdma.json`), since the
//! CI kernel has no RDMA devices. The kernel side runs in the VM lane (rxe).

mod common;

use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};

/// A fake node whose VFs each have one RDMA device `mlx5_<10+i>`.
struct RdmaNode {
    node: FakeNode,
}

impl RdmaNode {
    fn new(vfs: usize) -> RdmaNode {
        let node = FakeNode::new(vfs, 9000);
        for (i, vf) in node.vfs.iter().enumerate() {
            add_rdma_dev(&node, &vf.pci, &format!("mlx5_{}", 10 + i));
        }
        RdmaNode { node }
    }

    fn sim_file(&self) -> PathBuf {
        self.node.sysfs.join("sim-rdma.json")
    }

    fn set_mode(&self, mode: &str) {
        std::fs::write(
            self.sim_file(),
            json!({"mode": mode, "devices": {}}).to_string(),
        )
        .expect("write sim rdma");
    }

    fn location(&self, dev: &str) -> String {
        sim_rdma_location(&self.node.sysfs, dev)
    }

    fn sriov(&self, i: usize, extra: Value) -> Value {
        self.node.conf(&self.node.vfs[i].pci, extra)
    }

    fn rdma(&self, extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "rail1", "type": "rdma",
                           "stateDir": self.node.state.join("rdma"), "sysfsRoot": self.node.sysfs});
        if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        c
    }

    fn records(&self) -> Vec<String> {
        list_files(&self.node.state.join("rdma"))
    }
}

fn add_rdma_dev(node: &FakeNode, pci: &str, dev: &str) {
    let d = node
        .sysfs
        .join("bus/pci/devices")
        .join(pci)
        .join("infiniband")
        .join(dev);
    std::fs::create_dir_all(d).expect("mkdir infiniband");
}

fn msg(e: &Value) -> String {
    e["msg"].as_str().unwrap_or_default().to_string()
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn chained_after_sriov_the_device_follows_the_vf_and_comes_back() {
    let n = RdmaNode::new(2);
    let pod = Netns::new("pod");
    let call = Call::new("ADD", "ctr-r1", &pod.path(), "net1");
    let sriov = n.sriov(1, json!({"mac": "02:00:00:00:01:01"}));
    let prev = call.run("sriov", &sriov).ok();
    let rdma = n.rdma(json!({}));
    let result = call.run("rdma", &with_prev(&rdma, &prev)).ok();

    // Passed through unchanged; the device of VF 1 (and only it) is in the pod.
    assert_eq!(canonical(&result), canonical(&prev));
    assert_eq!(n.location("mlx5_11"), pod.path());
    assert_eq!(n.location("mlx5_10"), "host");
    assert_eq!(n.records(), ["ctr-r1:net1.json"]);
    let rec: Value = serde_json::from_slice(
        &std::fs::read(n.node.state.join("rdma/ctr-r1:net1.json")).expect("record"),
    )
    .expect("json");
    assert_eq!(
        (rec["device"].as_str(), rec["parent"].as_str()),
        (Some("mlx5_11"), Some(n.node.vfs[1].pci.as_str()))
    );

    call.with("CHECK")
        .run("rdma", &with_prev(&rdma, &result))
        .ok();
    call.with("DEL")
        .run("rdma", &with_prev(&rdma, &result))
        .ok();
    assert_eq!(n.location("mlx5_11"), "host");
    assert_eq!(n.records(), Vec::<String>::new());
    // CHECK now says what is wrong; a second DEL is a no-op.
    let e = call
        .with("CHECK")
        .run("rdma", &with_prev(&rdma, &result))
        .err();
    assert!(msg(&e).contains("no RDMA device recorded"), "{e}");
    call.with("DEL")
        .run("rdma", &with_prev(&rdma, &result))
        .ok();
    call.with("DEL")
        .run("sriov", &with_prev(&sriov, &result))
        .ok();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn device_found_by_device_id_by_pci_id_and_by_admin_mac() {
    let n = RdmaNode::new(3);
    // An SF (auxiliary device) with its own RDMA device, named by runtimeConfig.
    let sf = n
        .node
        .sysfs
        .join("bus/auxiliary/devices/mlx5_core.sf.4/infiniband/mlx5_20");
    std::fs::create_dir_all(sf).expect("mkdir sf");
    let cases: [(&str, usize, Value, &str); 4] = [
        (
            "deviceID in the config",
            0,
            json!({"deviceID": n.node.vfs[2].pci}),
            "mlx5_12",
        ),
        (
            "runtimeConfig.deviceID (an SF) wins over the config",
            0,
            json!({"deviceID": n.node.vfs[2].pci, "runtimeConfig": {"deviceID": "mlx5_core.sf.4"}}),
            "mlx5_20",
        ),
        (
            "prevResult's pciID (CNI 1.1.0)",
            1,
            json!({"cniVersion": "1.1.0"}),
            "mlx5_11",
        ),
        (
            "prevResult's MAC, found in the PF's VF table",
            2,
            json!({}),
            "mlx5_12",
        ),
    ];
    for (what, vf, extra, want) in cases {
        let pod = Netns::new("pod");
        let call = Call::new("ADD", "ctr-r2", &pod.path(), "net1");
        let mut sriov = n.sriov(vf, json!({"mac": format!("02:00:00:00:02:0{vf}")}));
        let mut rdma = n.rdma(extra);
        sriov["cniVersion"] = rdma["cniVersion"].clone();
        let prev = call.run("sriov", &sriov).ok();
        if what.contains("pciID") {
            assert_eq!(prev["interfaces"][0]["pciID"], n.node.vfs[vf].pci.as_str());
        }
        rdma = with_prev(&rdma, &prev);
        call.run("rdma", &rdma).ok();
        assert_eq!(n.location(want), pod.path(), "{what}");
        call.with("DEL").run("rdma", &rdma).ok();
        assert_eq!(n.location(want), "host", "{what}");
        call.with("DEL")
            .run("sriov", &with_prev(&sriov, &prev))
            .ok();
    }

    // A prevResult MAC that no VF has administratively: told to set deviceID.
    let pod = Netns::new("pod");
    let call = Call::new("ADD", "ctr-r3", &pod.path(), "net1");
    let sriov = n.sriov(0, json!({}));
    let prev = call.run("sriov", &sriov).ok();
    let e = call
        .run("rdma", &with_prev(&n.rdma(json!({})), &prev))
        .err();
    assert!(
        msg(&e).contains("no VF of this node has administrative MAC")
            && msg(&e).contains("deviceID"),
        "{e}"
    );
    assert_eq!(n.records(), Vec::<String>::new());
    call.with("DEL")
        .run("sriov", &with_prev(&sriov, &prev))
        .ok();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn shared_mode_zero_or_two_devices_and_bad_input_change_nothing() {
    let n = RdmaNode::new(2);
    add_rdma_dev(&n.node, &n.node.vfs[1].pci, "mlx5_99");
    let pod = Netns::new("pod");
    let call = Call::new("ADD", "ctr-r4", &pod.path(), "net1");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": pod.path()}], "ips": []});
    let add = |extra: Value| call.run("rdma", &with_prev(&n.rdma(extra), &prev));

    n.set_mode("shared");
    let out = add(json!({"deviceID": n.node.vfs[0].pci}));
    let e = out.err();
    assert_eq!(e["code"], 108, "{e}");
    for want in ["shared", "rdma system set netns exclusive", "netns_mode=0"] {
        assert!(msg(&e).contains(want), "{want}: {e}");
    }
    n.set_mode("exclusive");

    let e = add(json!({"deviceID": n.node.vfs[1].pci})).err();
    assert!(
        msg(&e).contains("several RDMA devices (mlx5_11, mlx5_99)"),
        "{e}"
    );
    let e = add(json!({"deviceID": "0000:01:00.0"})).err();
    assert!(msg(&e).contains("no RDMA device"), "{e}");
    let e = add(json!({"deviceID": "../../etc"})).err();
    assert_eq!(e["code"], 7);
    assert!(
        msg(&e).contains("deviceID") && msg(&e).contains("../../etc"),
        "{e}"
    );
    let e = add(json!({"runtimeConfig": {"deviceID": "mlx5_core.sf.1/../../x"}})).err();
    assert!(msg(&e).contains("runtimeConfig.deviceID"), "{e}");
    let e = add(json!({"stateDir": "relative/dir", "deviceID": n.node.vfs[0].pci})).err();
    assert!(msg(&e).contains("stateDir"), "{e}");
    // Not chained: no prevResult.
    let e = call
        .run("rdma", &n.rdma(json!({"deviceID": n.node.vfs[0].pci})))
        .err();
    assert!(msg(&e).contains("prevResult"), "{e}");

    assert_eq!(n.location("mlx5_10"), "host");
    assert_eq!(n.location("mlx5_11"), "host");
    assert_eq!(n.records(), Vec::<String>::new());
    // STATUS reports a shared subsystem as not available (code 50).
    n.set_mode("shared");
    let st = Call::new("STATUS", "", "", "").run("rdma", &n.rdma(json!({"cniVersion": "1.1.0"})));
    assert_eq!(st.err()["code"], 50);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn a_failure_after_each_add_step_leaves_nothing_behind() {
    let n = RdmaNode::new(1);
    let pod = Netns::new("pod");
    let call = Call::new("ADD", "ctr-r5", &pod.path(), "net1");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": pod.path()}], "ips": []});
    let conf = with_prev(&n.rdma(json!({"deviceID": n.node.vfs[0].pci})), &prev);
    for step in ["rdma.add.after_record", "rdma.add.after_move"] {
        let e = call
            .clone()
            .env("FAILPOINTS", &format!("{step}=return"))
            .run("rdma", &conf)
            .err();
        assert!(msg(&e).contains(step), "{step}: {e}");
        assert_eq!(n.location("mlx5_10"), "host", "{step}");
        assert_eq!(n.records(), Vec::<String>::new(), "{step}");
    }
    call.run("rdma", &conf).ok();
    assert_eq!(n.location("mlx5_10"), pod.path());
    // A repeated ADD is refused without touching the first one's record; an
    // ADD of another attachment for the same device finds it gone from the host.
    let e = call.run("rdma", &conf).err();
    assert_eq!(e["code"], 102, "{e}");
    let e = Call::new("ADD", "ctr-r6", &pod.path(), "net2")
        .run("rdma", &conf)
        .err();
    assert!(msg(&e).contains("mlx5_10"), "{e}");
    assert_eq!(n.records(), ["ctr-r5:net1.json"]);
    call.with("DEL").run("rdma", &conf).ok();
    assert_eq!(n.location("mlx5_10"), "host");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn del_with_the_netns_gone_or_empty_drops_the_record_and_gc_cleans_the_rest() {
    for how in ["deleted netns", "empty CNI_NETNS"] {
        let n = RdmaNode::new(1);
        let mut pod = Netns::new("pod");
        let call = Call::new("ADD", "ctr-r7", &pod.path(), "net1");
        let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": pod.path()}], "ips": []});
        let conf = with_prev(&n.rdma(json!({"deviceID": n.node.vfs[0].pci})), &prev);
        call.run("rdma", &conf).ok();
        pod.delete();
        // The kernel handed the device back when the netns died.
        assert_eq!(n.location("mlx5_10"), "host", "{how}");
        let mut del = call.with("DEL");
        if how == "empty CNI_NETNS" {
            del.netns = Some(String::new());
        }
        del.run("rdma", &conf).ok();
        assert_eq!(n.records(), Vec::<String>::new(), "{how}: record leaked");
        del.run("rdma", &conf).ok();
    }

    // GC: only attachments missing from cni.dev/valid-attachments go.
    let n = RdmaNode::new(2);
    let pods = [Netns::new("pod"), Netns::new("pod")];
    for (i, (cid, pod)) in ["keep", "drop"].iter().zip(&pods).enumerate() {
        let prev = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "net1", "sandbox": pod.path()}], "ips": []});
        let mut conf = with_prev(&n.rdma(json!({"deviceID": n.node.vfs[i].pci})), &prev);
        conf["cniVersion"] = json!("1.1.0");
        Call::new("ADD", cid, &pod.path(), "net1")
            .run("rdma", &conf)
            .ok();
    }
    let mut gc = n.rdma(json!({"cniVersion": "1.1.0"}));
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "net1"}]);
    let mut call = Call::new("GC", "", "", "");
    call.netns = None;
    call.run("rdma", &gc).ok();
    assert_eq!(n.records(), ["keep:net1.json"]);
}
