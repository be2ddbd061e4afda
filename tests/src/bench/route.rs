//! `route`: coordinator ADD on one interface against Go sbr: both give the
//! interface a table, `from` rules and routes.

use integration::Netns;
use serde_json::json;

use super::{Bins, Call, dratio, footer, go, heading, median, ms, table};

pub fn section(bins: &Bins) {
    const ROUNDS: usize = 40;
    heading("route: coordinator ADD on one interface vs Go sbr");
    println!("Median of {ROUNDS}, interleaved; ratio = sbr / ours. Release binaries.\n");
    let pod = Netns::new("bench-pod");
    let peer = Netns::new("bench-gw");
    pod.ip(&[
        "link", "add", "net1", "type", "veth", "peer", "name", "gw1", "netns", &peer.name,
    ]);
    pod.ip(&["addr", "add", "10.50.0.2/24", "dev", "net1"]);
    pod.ip(&["link", "set", "net1", "up"]);
    peer.ip(&["addr", "add", "10.50.0.1/24", "dev", "gw1"]);
    peer.ip(&["link", "set", "gw1", "up"]);
    let state = tempfile::tempdir().expect("tempdir");
    let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": pod.path()}],
                      "ips": [{"interface": 0, "address": "10.50.0.2/24", "gateway": "10.50.0.1"}], "dns": {}});
    let ours = json!({"cniVersion": "1.0.0", "name": "rail", "type": "coordinator", "prevResult": prev,
                      "stateDir": state.path(), "detectGateway": false, "podRPFilter": -1});
    let mut probing = ours.clone();
    probing["detectGateway"] = json!(true);
    probing["podRPFilter"] = json!(0);
    let theirs = json!({"cniVersion": "1.0.0", "name": "rail", "type": "sbr", "prevResult": prev});
    let coord = bins.ours("coordinator");
    let sbr = go("sbr");
    // Same starting state before every ADD: sbr's DEL leaves its table's
    // routes behind, so reset the address and tables (untimed) for everyone.
    let reset = || {
        for table in ["100", "101"] {
            // Fails harmlessly when the table does not exist yet.
            let _ = integration::ip_ok(&["-n", &pod.name, "route", "flush", "table", table]);
        }
        pod.ip(&["addr", "flush", "dev", "net1"]);
        pod.ip(&["addr", "add", "10.50.0.2/24", "dev", "net1"]);
    };
    let (mut c, mut p, mut k, mut g) = (vec![], vec![], vec![], vec![]);
    for i in 0..ROUNDS {
        let call = Call::new("ADD", &format!("b{i}"), &pod.path(), "net1");
        for (plugin, conf, out, packet) in [
            (&coord, &ours, &mut c, false),
            (&coord, &probing, &mut p, false),
            (&coord, &probing, &mut k, true),
            (&sbr, &theirs, &mut g, false),
        ] {
            reset();
            if packet {
                // An entry for the gateway already exists: the probe leaves
                // the neighbour table alone and uses its packet socket, the
                // only path before the neighbour-table probe.
                let entry = ["neigh", "replace", "10.50.0.1", "dev", "net1"];
                pod.ip(&[&entry[..], &["lladdr", "02:00:00:00:00:01", "nud", "stale"]].concat());
            }
            out.push(call.must(plugin, conf).took);
            call.with("DEL").must(plugin, conf);
            let _ = integration::ip_ok(&["-n", &pod.name, "neigh", "flush", "dev", "net1"]);
        }
    }
    let (c, p, k, g) = (median(&c), median(&p), median(&k), median(&g));
    table(
        &["plugin", "ADD", "ratio (sbr / ours)"],
        &[
            vec![
                "coordinator, probes and rp_filter off (sbr's work)".into(),
                ms(c),
                dratio(g, c),
            ],
            vec![
                "coordinator, defaults (gateway probe, rp_filter)".into(),
                ms(p),
                dratio(g, p),
            ],
            vec![
                "coordinator, defaults, probe on its packet socket (the path before)".into(),
                ms(k),
                dratio(g, k),
            ],
            vec!["sbr (Go)".into(), ms(g), "1.00x".into()],
        ],
    );
    footer();
}
