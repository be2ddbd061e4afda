//! `ipam`: ippool (file store) against Go host-local at fill levels of a /16,
//! and the etcd store's allocation rate.

use std::path::Path;
use std::time::{Duration, Instant};

use integration::Etcd;
use libcni::pool::{FileStore, load_pools};
use serde_json::json;

use super::{Bins, Call, dratio, footer, go, heading, median, ms, table};

/// host-local's disk format: one file per address holding "<id>\r\n<ifname>".
fn prefill_host_local(dir: &Path, network: &str, count: usize) {
    let net = dir.join(network);
    std::fs::create_dir_all(&net).expect("mkdir");
    let mut last = String::new();
    for n in 0..count {
        // host-local hands out 10.20.0.2 upward (.1 is its gateway).
        let v = u32::from_be_bytes([10, 20, 0, 0]) + 2 + n as u32;
        last = std::net::Ipv4Addr::from(v).to_string();
        std::fs::write(net.join(&last), format!("fill{n}\r\neth0")).expect("write lease");
    }
    if !last.is_empty() {
        std::fs::write(net.join("last_reserved_ip.0"), &last).expect("write last");
    }
}

pub fn section(bins: &Bins) {
    let ippool = bins.ours("ippool");
    let host_local = go("host-local");
    heading("ipam: ippool (file store) vs Go host-local, /16 pool (65534 addresses)");
    println!(
        "Median of the rounds shown, ADD and DEL execs interleaved with host-local's; ratio = host-local / ippool.\n"
    );
    let mut rows = Vec::new();
    for (fill, rounds) in [(0.0, 40), (0.5, 15), (0.9, 15)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pool = json!({"name": "bench16", "subnet": "10.20.0.0/16"});
        let ours = json!({"cniVersion": "1.0.0", "name": "bench",
            "ipam": {"type": "ippool", "dataDir": tmp.path().join("ippool"), "poolsDir": "/nonexistent",
                     "pools": [pool], "default_ipv4_ippool": ["bench16"]}});
        let theirs = json!({"cniVersion": "1.0.0", "name": "bench",
            "ipam": {"type": "host-local", "dataDir": tmp.path().join("host-local"),
                     "ranges": [[{"subnet": "10.20.0.0/16"}]]}});
        let count = (65534.0 * fill) as usize;
        let pools = load_pools(None, &[pool]).expect("pool");
        FileStore::open(&tmp.path().join("ippool"))
            .and_then(|s| s.prefill(&pools[0], "bench", "fill", count))
            .expect("prefill ippool");
        prefill_host_local(&tmp.path().join("host-local"), "bench", count);
        let (mut oa, mut ga, mut od, mut gd) = (vec![], vec![], vec![], vec![]);
        let call =
            |i: usize, cmd: &str| Call::new(cmd, &format!("bench{i}"), "/proc/self/ns/net", "eth0");
        for i in 0..rounds {
            oa.push(call(i, "ADD").must(&ippool, &ours).took);
            ga.push(call(i, "ADD").must(&host_local, &theirs).took);
        }
        for i in 0..rounds {
            od.push(call(i, "DEL").must(&ippool, &ours).took);
            gd.push(call(i, "DEL").must(&host_local, &theirs).took);
        }
        let (oa, ga, od, gd) = (median(&oa), median(&ga), median(&od), median(&gd));
        rows.push(vec![
            format!("{:.0}% ({rounds} rounds)", fill * 100.0),
            ms(oa),
            ms(ga),
            dratio(ga, oa),
            ms(od),
            ms(gd),
            dratio(gd, od),
        ]);
    }
    table(
        &[
            "fill",
            "ippool ADD",
            "host-local ADD",
            "ADD ratio",
            "ippool DEL",
            "host-local DEL",
            "DEL ratio",
        ],
        &rows,
    );
    etcd_throughput(&ippool);
    footer();
}

fn etcd_throughput(ippool: &Path) {
    const TOTAL: usize = 240;
    let etcd = Etcd::start();
    let conf = json!({"cniVersion": "1.0.0", "name": "bench",
        "ipam": {"type": "ippool", "store": "etcd", "poolsDir": "/nonexistent",
                 "etcd": {"endpoints": [etcd.endpoint], "timeout": "10s"},
                 "pools": [{"name": "bench16", "subnet": "10.21.0.0/16"}], "default_ipv4_ippool": ["bench16"]}});
    println!(
        "### ippool etcd store: allocations per second ({TOTAL} ADD execs per row, etcd on loopback)\n"
    );
    let mut rows = Vec::new();
    for clients in [1usize, 4, 16] {
        let start = Instant::now();
        let times: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let conf = &conf;
                    s.spawn(move || {
                        (0..TOTAL / clients)
                            .map(|i| {
                                let cid = format!("e{clients}-{c}-{i}");
                                Call::new("ADD", &cid, "/proc/self/ns/net", "eth0")
                                    .must(ippool, conf)
                                    .took
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("client"))
                .collect()
        });
        let rate = times.len() as f64 / start.elapsed().as_secs_f64();
        rows.push(vec![
            clients.to_string(),
            format!("{rate:.0}"),
            ms(median(&times)),
        ]);
    }
    table(
        &["concurrent clients", "allocations/s", "median ADD"],
        &rows,
    );
}
