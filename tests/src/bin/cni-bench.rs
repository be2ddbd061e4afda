//! cni-bench: our plugins against Debian's Go reference plugins, exec for
//! exec, on the same work in the same run. Prints Markdown tables of medians
//! and ratios (Go / ours: above 1 means we are faster).
//!
//! Usage: cni-bench <bin dir> <section>...   (sections: ipam, coordinator)
//! scripts/bench.sh builds the release binaries and runs this.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use integration::{Etcd, Netns, run_with_stdin};
use libcni::pool::{FileStore, load_pools};
use serde_json::{Value, json};

const GO_PLUGINS: &str = "/usr/lib/cni";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Runs one CNI command and returns its wall time; any failure aborts the run.
fn exec(plugin: &Path, command: &str, cid: &str, conf: &Value) -> Duration {
    exec_in(plugin, command, cid, conf, "/proc/self/ns/net", "eth0")
}

fn exec_in(
    plugin: &Path,
    command: &str,
    cid: &str,
    conf: &Value,
    netns: &str,
    ifname: &str,
) -> Duration {
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", GO_PLUGINS);
    let input = conf.to_string();
    let start = Instant::now();
    let out = run_with_stdin(cmd, input.as_bytes());
    let took = start.elapsed();
    if out.status != 0 {
        eprintln!(
            "{} {command} {cid} failed: {}{}",
            plugin.display(),
            out.stdout,
            out.stderr
        );
        std::process::exit(1);
    }
    took
}

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

fn ipam(bins: &Path) {
    const ROUNDS: usize = 40;
    let ippool = bins.join("ippool");
    let host_local = Path::new(GO_PLUGINS).join("host-local");
    println!("## ipam: ippool (file store) vs Go host-local, /16 pool (65534 addresses)\n");
    println!(
        "Median of {ROUNDS} ADD and {ROUNDS} DEL execs per fill level; ratio = host-local / ippool.\n"
    );
    println!(
        "| fill | ippool ADD | host-local ADD | ADD ratio | ippool DEL | host-local DEL | DEL ratio |"
    );
    println!("|---|---|---|---|---|---|---|");
    for fill in [0.0, 0.5, 0.9] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pool = json!({"name": "bench16", "subnet": "10.20.0.0/16"});
        let ours = json!({"cniVersion": "1.0.0", "name": "bench",
            "ipam": {"type": "ippool", "dataDir": tmp.path().join("ippool"), "poolsDir": "/nonexistent",
                     "pools": [pool], "default_ipv4_ippool": ["bench16"]}});
        let go = json!({"cniVersion": "1.0.0", "name": "bench",
            "ipam": {"type": "host-local", "dataDir": tmp.path().join("host-local"),
                     "ranges": [[{"subnet": "10.20.0.0/16"}]]}});
        let count = (65534.0 * fill) as usize;
        let pools = load_pools(None, &[pool]).expect("pool");
        FileStore::open(&tmp.path().join("ippool"))
            .and_then(|s| s.prefill(&pools[0], "bench", "fill", count))
            .expect("prefill ippool");
        prefill_host_local(&tmp.path().join("host-local"), "bench", count);
        let (mut oa, mut ga, mut od, mut gd) = (vec![], vec![], vec![], vec![]);
        for i in 0..ROUNDS {
            let cid = format!("bench{i}");
            oa.push(exec(&ippool, "ADD", &cid, &ours));
            ga.push(exec(&host_local, "ADD", &cid, &go));
        }
        for i in 0..ROUNDS {
            let cid = format!("bench{i}");
            od.push(exec(&ippool, "DEL", &cid, &ours));
            gd.push(exec(&host_local, "DEL", &cid, &go));
        }
        let (oa, ga, od, gd) = (median(oa), median(ga), median(od), median(gd));
        println!(
            "| {:.0}% | {} | {} | {:.1}x | {} | {} | {:.1}x |",
            fill * 100.0,
            ms(oa),
            ms(ga),
            ga.as_secs_f64() / oa.as_secs_f64(),
            ms(od),
            ms(gd),
            gd.as_secs_f64() / od.as_secs_f64()
        );
    }
    println!();
    etcd_throughput(&ippool);
}

fn etcd_throughput(ippool: &Path) {
    const TOTAL: usize = 240;
    let etcd = Etcd::start();
    let conf = json!({"cniVersion": "1.0.0", "name": "bench",
        "ipam": {"type": "ippool", "store": "etcd", "poolsDir": "/nonexistent",
                 "etcd": {"endpoints": [etcd.endpoint], "timeout": "10s"},
                 "pools": [{"name": "bench16", "subnet": "10.21.0.0/16"}], "default_ipv4_ippool": ["bench16"]}});
    println!(
        "## ipam: ippool etcd store, allocations per second ({TOTAL} ADD execs per row, etcd 3.4 on loopback)\n"
    );
    println!("| concurrent clients | allocations/s | median ADD |");
    println!("|---|---|---|");
    for clients in [1usize, 4, 16] {
        let start = Instant::now();
        let times: Vec<Duration> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let conf = &conf;
                    s.spawn(move || {
                        (0..TOTAL / clients)
                            .map(|i| exec(ippool, "ADD", &format!("e{clients}-{c}-{i}"), conf))
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
        println!("| {clients} | {rate:.0} | {} |", ms(median(times)));
    }
    println!();
}

/// coordinator vs Go sbr: both give one interface a table, rules and routes.
fn coordinator(bins: &Path) {
    const ROUNDS: usize = 40;
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
    let go = json!({"cniVersion": "1.0.0", "name": "rail", "type": "sbr", "prevResult": prev});
    let coord = bins.join("coordinator");
    let sbr = Path::new(GO_PLUGINS).join("sbr");
    // Same starting state before every ADD: sbr's DEL leaves its table's
    // routes behind, so reset the address and table (untimed) for everyone.
    let reset = || {
        for table in ["100", "101"] {
            // Fails harmlessly when the table does not exist yet.
            let _ = integration::ip_ok(&["-n", &pod.name, "route", "flush", "table", table]);
        }
        pod.ip(&["addr", "flush", "dev", "net1"]);
        pod.ip(&["addr", "add", "10.50.0.2/24", "dev", "net1"]);
    };
    let (mut c, mut p, mut g) = (vec![], vec![], vec![]);
    for i in 0..ROUNDS {
        let cid = format!("b{i}");
        for (plugin, conf, out) in [
            (&coord, &ours, &mut c),
            (&coord, &probing, &mut p),
            (&sbr, &go, &mut g),
        ] {
            reset();
            out.push(exec_in(plugin, "ADD", &cid, conf, &pod.path(), "net1"));
            exec_in(plugin, "DEL", &cid, conf, &pod.path(), "net1");
        }
    }
    let (c, p, g) = (median(c), median(p), median(g));
    println!("## coordinator: ADD on one interface vs Go sbr (median of {ROUNDS})\n");
    println!("| plugin | ADD | ratio (sbr / ours) |");
    println!("|---|---|---|");
    println!(
        "| coordinator, probes off (sbr's work) | {} | {:.1}x |",
        ms(c),
        g.as_secs_f64() / c.as_secs_f64()
    );
    println!(
        "| coordinator, gateway probe on (default) | {} | {:.1}x |",
        ms(p),
        g.as_secs_f64() / p.as_secs_f64()
    );
    println!("| sbr (Go) | {} | 1.0x |", ms(g));
    println!();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(bins) = args.next().map(PathBuf::from) else {
        eprintln!(
            "usage: cni-bench <dir with our release binaries> <section>...  (sections: ipam)"
        );
        std::process::exit(2);
    };
    let sections: Vec<String> = args.collect();
    for section in if sections.is_empty() {
        vec!["ipam".to_string()]
    } else {
        sections
    } {
        match section.as_str() {
            "ipam" => ipam(&bins),
            "coordinator" | "route" => coordinator(&bins),
            other => {
                eprintln!("unknown section {other}");
                std::process::exit(2);
            }
        }
    }
}
