//! `exec`: the VERSION round trip of each of our binaries against a Go
//! plugin: process start, config parse, one JSON answer, exit.

use super::{Bins, dratio, footer, go, heading, median, ms, run, table};

/// Ours, and the Go plugin doing the nearest job (Debian ships no Go rdma
/// or ib-sriov plugin: host-device is the Go plugin that moves devices).
const PAIRS: [(&str, &str); 5] = [
    ("sriov", "host-device"),
    ("ib-sriov", "host-device"),
    ("rdma", "host-device"),
    ("ippool", "host-local"),
    ("coordinator", "sbr"),
];

pub fn section(bins: &Bins) {
    const ROUNDS: usize = 200;
    heading("exec: VERSION round trip (process start cost)");
    println!(
        "Release binaries. Median of {ROUNDS} runs each, ours and Go interleaved; ratio = Go / ours.\n"
    );
    let stdin = br#"{"cniVersion":"1.0.0"}"#;
    let env = [("CNI_COMMAND", "VERSION")];
    let mut rows = Vec::new();
    for (ours, peer) in PAIRS {
        let (ob, pb) = (bins.ours(ours), go(peer));
        let (mut o, mut p) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let r = run(&ob, &env, stdin);
            r.ok(ours);
            o.push(r.took);
            let r = run(&pb, &env, stdin);
            r.ok(peer);
            p.push(r.took);
        }
        let (o, p) = (median(&o), median(&p));
        rows.push(vec![
            ours.to_string(),
            ms(o),
            peer.to_string(),
            ms(p),
            dratio(p, o),
        ]);
    }
    table(&["ours", "VERSION", "Go peer", "VERSION", "ratio"], &rows);
    footer();
}
