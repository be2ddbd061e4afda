//! `memory`: peak RSS (wait4's ru_maxrss) of each binary during ADD,
//! against the Go plugin doing the same job on the same interface.

use integration::Netns;
use serde_json::{Value, json};

use super::rig::{Rig, gateway};
use super::{Bins, Call, footer, go, heading, median_u64, ratio, run_rss, table};

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn section(bins: &Bins) {
    const ROUNDS: usize = 10;
    heading("memory: peak RSS during ADD");
    println!(
        "Peak RSS as GNU time reports it (see `run_rss` in tests/src/bench/mod.rs for why not wait4 here). Median of {ROUNDS} ADDs of each binary on one stand-in VF (one rail: `sriov` and Go `host-device` \
         without IPAM, since a peak RSS includes the children a process waited for and Go `static` alone peaks \
         above either; then the chain `sriov` with static IPAM, `rdma`, `coordinator` with its defaults, \
         against `host-device` with static IPAM, `sbr`), and \
         ippool vs host-local on a /24; ratio = Go / ours. `sriov` and `rdma` are the release profile \
         with the test-build features (see `move`); `ib-sriov` has no stand-in here: VERSION only.\n"
    );
    let rig = Rig::new(1, 1);
    let vf = rig.vfs[0][0].clone();
    let pod = Netns::new("bmem");
    let static_ipam = json!({"type": "static", "addresses": [{"address": "10.101.0.5/24", "gateway": gateway(1)}]});
    let rc = json!({"deviceID": vf.pci});
    let sriov = json!({"cniVersion": "1.0.0", "name": "mem", "type": "sriov", "runtimeConfig": rc,
        "stateDir": rig.path("sriov"), "sysfsRoot": vf.sysfs, "ipam": static_ipam});
    let rdma = json!({"cniVersion": "1.0.0", "name": "mem", "type": "rdma", "runtimeConfig": rc,
        "stateDir": rig.path("rdma"), "sysfsRoot": vf.sysfs});
    let coord = json!({"cniVersion": "1.0.0", "name": "mem", "type": "coordinator", "stateDir": rig.path("coordinator")});
    let host_device = json!({"cniVersion": "1.0.0", "name": "mem", "type": "host-device", "device": vf.netdev, "ipam": static_ipam});
    let sbr = json!({"cniVersion": "1.0.0", "name": "mem", "type": "sbr"});
    let without_ipam = |c: &Value| {
        let mut c = c.clone();
        if let Some(o) = c.as_object_mut() {
            o.remove("ipam");
        }
        c
    };
    let (sriov_alone, host_device_alone) = (without_ipam(&sriov), without_ipam(&host_device));
    let with = |c: &Value, prev: &Value| {
        let mut c = c.clone();
        c["prevResult"] = prev.clone();
        c
    };
    let mut rss: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
    for i in 0..ROUNDS {
        let mut call = Call::new("ADD", &format!("mem{i}"), &pod.path(), "net1");
        call.rss = true;
        let alone = call.must(&bins.sim("sriov"), &sriov_alone);
        rss.entry("sriov").or_default().push(alone.maxrss_kib);
        call.with("DEL")
            .must(&bins.sim("sriov"), &with(&sriov_alone, &alone.ok("sriov")));
        let prev = call.must(&bins.sim("sriov"), &sriov).ok("sriov");
        let b = call.must(&bins.sim("rdma"), &with(&rdma, &prev));
        rss.entry("rdma").or_default().push(b.maxrss_kib);
        let c = call.must(&bins.ours("coordinator"), &with(&coord, &prev));
        rss.entry("coordinator").or_default().push(c.maxrss_kib);
        let last = c.ok("coordinator");
        call.with("DEL")
            .must(&bins.ours("coordinator"), &with(&coord, &last));
        call.with("DEL")
            .must(&bins.sim("rdma"), &with(&rdma, &last));
        call.with("DEL")
            .must(&bins.sim("sriov"), &with(&sriov, &last));

        let alone = call.must(&go("host-device"), &host_device_alone);
        rss.entry("host-device").or_default().push(alone.maxrss_kib);
        call.with("DEL").must(
            &go("host-device"),
            &with(&host_device_alone, &alone.ok("host-device")),
        );
        let prev = call
            .must(&go("host-device"), &host_device)
            .ok("host-device");
        let b = call.must(&go("sbr"), &with(&sbr, &prev));
        rss.entry("sbr").or_default().push(b.maxrss_kib);
        let last = b.ok("sbr");
        call.with("DEL").must(&go("sbr"), &with(&sbr, &last));
        call.with("DEL")
            .must(&go("host-device"), &with(&host_device, &last));
        // sbr leaves its table's routes behind on DEL; the netdev left, so they went with it.
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ippool = json!({"cniVersion": "1.0.0", "name": "mem",
        "ipam": {"type": "ippool", "dataDir": tmp.path().join("ippool"), "poolsDir": "/nonexistent",
                 "pools": [{"name": "p24", "subnet": "10.70.0.0/24"}], "default_ipv4_ippool": ["p24"]}});
    let host_local = json!({"cniVersion": "1.0.0", "name": "mem",
        "ipam": {"type": "host-local", "dataDir": tmp.path().join("host-local"), "ranges": [[{"subnet": "10.70.0.0/24"}]]}});
    for i in 0..ROUNDS {
        let mut call = Call::new("ADD", &format!("ip{i}"), "/proc/self/ns/net", "eth0");
        call.rss = true;
        rss.entry("ippool")
            .or_default()
            .push(call.must(&bins.ours("ippool"), &ippool).maxrss_kib);
        rss.entry("host-local")
            .or_default()
            .push(call.must(&go("host-local"), &host_local).maxrss_kib);
        call.with("DEL").must(&bins.ours("ippool"), &ippool);
        call.with("DEL").must(&go("host-local"), &host_local);
    }
    let version = [("CNI_COMMAND", "VERSION")];
    for _ in 0..ROUNDS {
        for (key, bin) in [
            ("ib-sriov VERSION", bins.ours("ib-sriov")),
            ("host-device VERSION", go("host-device")),
        ] {
            let r = run_rss(&bin, &version, br#"{"cniVersion":"1.0.0"}"#);
            r.ok(key);
            rss.entry(key).or_default().push(r.maxrss_kib);
        }
    }
    let m = |k: &str| median_u64(rss.get(k).map_or(&[][..], Vec::as_slice));
    let rows: Vec<Vec<String>> = [
        (
            "sriov ADD, no IPAM",
            "sriov",
            "host-device ADD, no IPAM",
            "host-device",
        ),
        (
            "rdma ADD (no Go RDMA plugin: vs host-device)",
            "rdma",
            "host-device ADD",
            "host-device",
        ),
        ("coordinator ADD", "coordinator", "sbr ADD", "sbr"),
        ("ippool ADD", "ippool", "host-local ADD", "host-local"),
        (
            "ib-sriov VERSION",
            "ib-sriov VERSION",
            "host-device VERSION",
            "host-device VERSION",
        ),
    ]
    .iter()
    .map(|(label, ours, peer_label, peer)| {
        let (o, p) = (m(ours), m(peer));
        vec![
            label.to_string(),
            mib(o),
            peer_label.to_string(),
            mib(p),
            ratio(p as f64, o as f64),
        ]
    })
    .collect();
    table(
        &[
            "ours",
            "peak RSS",
            "Go peer",
            "peak RSS",
            "ratio (goal >= 3x)",
        ],
        &rows,
    );
    footer();
}
