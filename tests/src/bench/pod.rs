//! `pod`: a full 8-rail pod through its chains, as a runtime runs them
//! (Multus: one network after the other; each network's plugins in order,
//! prevResult threaded; DEL in reverse with the cached result), one pod at a
//! time and many at once; and the Go chain that does the nearest work.
//!
//! Ours per rail: `sriov` (delegating to `ippool`) -> `rdma` -> `coordinator`
//! with its defaults (gateway probe on). Go per rail: `host-device`
//! (delegating to `host-local`) -> `sbr`: Debian has no Go RDMA plugin and
//! no Spiderpool coordinator; host-local is the Go dynamic IPAM.

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use integration::Netns;
use serde_json::{Value, json};

use super::rig::{Rig, Vf, gateway, subnet};
use super::{Bins, Call, dratio, footer, go, heading, median, ms, table};

pub const RAILS: usize = 8;
pub const LEVELS: [usize; 5] = [1, 2, 4, 8, 16];

/// One network (conflist) for one VF: plugins with their configs.
pub struct Net {
    pub name: String,
    pub version: &'static str,
    pub cni_path: String,
    pub plugins: Vec<(&'static str, PathBuf, Value)>,
}

/// Per-exec wall times of one pod, by plugin type.
pub type Times = Vec<(String, Duration)>;

impl Net {
    fn conf(&self, base: &Value, prev: Option<&Value>) -> Value {
        let mut c = base.clone();
        c["cniVersion"] = json!(self.version);
        c["name"] = json!(self.name);
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    pub fn add(&self, call: &Call, times: &mut Times) -> Value {
        let mut call = call.with("ADD");
        call.cni_path.clone_from(&self.cni_path);
        let mut prev: Option<Value> = None;
        for (kind, bin, base) in &self.plugins {
            let r = call.must(bin, &self.conf(base, prev.as_ref()));
            times.push((format!("{kind} ADD"), r.took));
            prev = Some(r.ok(kind));
        }
        prev.unwrap_or(Value::Null)
    }

    pub fn del(&self, call: &Call, cached: &Value, times: &mut Times) {
        let mut call = call.with("DEL");
        call.cni_path.clone_from(&self.cni_path);
        for (kind, bin, base) in self.plugins.iter().rev() {
            times.push((
                format!("{kind} DEL"),
                call.must(bin, &self.conf(base, Some(cached))).took,
            ));
        }
    }
}

/// Which chain a pod runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    Ours,
    Go,
}

impl Chain {
    pub fn label(self) -> &'static str {
        match self {
            Chain::Ours => "ours (sriov+ippool, rdma, coordinator)",
            Chain::Go => "Go (host-device+host-local, sbr)",
        }
    }
}

/// The network of `rail` (0-based) on `vf` for `chain`.
pub fn net(bins: &Bins, rig: &Rig, chain: Chain, rail: usize, vf: &Vf) -> Net {
    let name = format!("rail{}", rail + 1);
    match chain {
        Chain::Ours => {
            let ipam = json!({"type": "ippool", "dataDir": rig.path("ippool"), "poolsDir": "/nonexistent",
                "pools": [{"name": name, "subnet": subnet(rail + 1),
                           "ips": [format!("10.{0}.0.10-10.{0}.0.250", 101 + rail)],
                           "gateway": gateway(rail + 1)}],
                "default_ipv4_ippool": [name]});
            let rc = json!({"deviceID": vf.pci});
            Net {
                version: "1.1.0",
                cni_path: bins.release.display().to_string(),
                plugins: vec![
                    (
                        "sriov",
                        bins.sim("sriov"),
                        json!({"type": "sriov", "runtimeConfig": rc,
                        "stateDir": rig.path("sriov"), "sysfsRoot": vf.sysfs, "ipam": ipam}),
                    ),
                    (
                        "rdma",
                        bins.sim("rdma"),
                        json!({"type": "rdma", "runtimeConfig": rc,
                        "stateDir": rig.path("rdma"), "sysfsRoot": vf.sysfs}),
                    ),
                    (
                        "coordinator",
                        bins.ours("coordinator"),
                        json!({"type": "coordinator",
                        "stateDir": rig.path("coordinator")}),
                    ),
                ],
                name,
            }
        }
        Chain::Go => {
            let ipam = json!({"type": "host-local", "dataDir": rig.path("host-local"),
                "ranges": [[{"subnet": subnet(rail + 1), "rangeStart": format!("10.{}.0.10", 101 + rail),
                             "rangeEnd": format!("10.{}.0.250", 101 + rail), "gateway": gateway(rail + 1)}]]});
            Net {
                version: "1.0.0",
                cni_path: super::GO_PLUGINS.into(),
                plugins: vec![
                    (
                        "host-device",
                        go("host-device"),
                        json!({"type": "host-device", "device": vf.netdev, "ipam": ipam}),
                    ),
                    ("sbr", go("sbr"), json!({"type": "sbr"})),
                ],
                name,
            }
        }
    }
}

/// A pod sandbox on one slot of the rig.
pub struct Pod {
    pub ns: Netns,
    pub cid: String,
    pub nets: Vec<Net>,
}

impl Pod {
    pub fn new(bins: &Bins, rig: &Rig, chain: Chain, slot: usize, tag: &str) -> Pod {
        let nets = rig.vfs[slot]
            .iter()
            .enumerate()
            .map(|(r, vf)| net(bins, rig, chain, r, vf))
            .collect();
        Pod {
            ns: Netns::new("bpod"),
            cid: format!("pod-{tag}-{slot}"),
            nets,
        }
    }

    fn call(&self, rail: usize) -> Call {
        Call::new(
            "ADD",
            &self.cid,
            &self.ns.path(),
            &format!("net{}", rail + 1),
        )
    }

    /// ADD of every rail in order; the cached results.
    pub fn add(&self, times: &mut Times) -> Vec<Value> {
        self.nets
            .iter()
            .enumerate()
            .map(|(r, n)| n.add(&self.call(r), times))
            .collect()
    }

    /// DEL of every rail, last network first.
    pub fn del(&self, cached: &[Value], times: &mut Times) {
        for (r, n) in self.nets.iter().enumerate().rev() {
            n.del(&self.call(r), &cached[r], times);
        }
    }
}

/// One level of concurrency: `pods` pods ADD at once (each on its own thread,
/// released together), then DEL at once. Per-pod ADD and DEL latencies, the
/// wall times of both, and the per-exec times.
pub struct Level {
    pub add: Vec<Duration>,
    pub del: Vec<Duration>,
    pub add_wall: Duration,
    pub del_wall: Duration,
    pub execs: Times,
}

pub fn run_level(bins: &Bins, rig: &Rig, chain: Chain, pods: usize, tag: &str) -> Level {
    let pods: Vec<Pod> = (0..pods)
        .map(|s| Pod::new(bins, rig, chain, s, tag))
        .collect();
    let barrier = Barrier::new(pods.len() + 1);
    let phase = |f: &(dyn Fn(usize, &Pod, &mut Times) -> Duration + Sync)| {
        std::thread::scope(|s| {
            let handles: Vec<_> = pods
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        let mut times = Times::new();
                        barrier.wait();
                        let took = f(i, p, &mut times);
                        (took, times)
                    })
                })
                .collect();
            barrier.wait();
            let start = Instant::now();
            let out: Vec<(Duration, Times)> = handles
                .into_iter()
                .map(|h| h.join().expect("pod thread"))
                .collect();
            (out, start.elapsed())
        })
    };
    let cached: Vec<std::sync::Mutex<Vec<Value>>> =
        pods.iter().map(|_| Default::default()).collect();
    let (adds, add_wall) = phase(&|i, p, t| {
        let start = Instant::now();
        let r = p.add(t);
        let took = start.elapsed();
        *cached[i].lock().expect("cache") = r;
        took
    });
    let (dels, del_wall) = phase(&|i, p, t| {
        let c = cached[i].lock().expect("cache").clone();
        let start = Instant::now();
        p.del(&c, t);
        start.elapsed()
    });
    let mut execs = Times::new();
    for (_, t) in adds.iter().chain(dels.iter()) {
        execs.extend(t.iter().cloned());
    }
    Level {
        add: adds.iter().map(|(d, _)| *d).collect(),
        del: dels.iter().map(|(d, _)| *d).collect(),
        add_wall,
        del_wall,
        execs,
    }
}

/// Several rounds of one level until `total` pods went through.
pub fn measure(bins: &Bins, rig: &Rig, chain: Chain, pods: usize, total: usize) -> Level {
    let mut all = Level {
        add: vec![],
        del: vec![],
        add_wall: Duration::ZERO,
        del_wall: Duration::ZERO,
        execs: vec![],
    };
    for round in 0..total.div_ceil(pods) {
        let l = run_level(bins, rig, chain, pods, &format!("{pods}x{round}"));
        all.add.extend(l.add);
        all.del.extend(l.del);
        all.add_wall += l.add_wall;
        all.del_wall += l.del_wall;
        all.execs.extend(l.execs);
    }
    all
}

fn per_second(pods: usize, wall: Duration) -> f64 {
    pods as f64 / wall.as_secs_f64()
}

pub fn section(bins: &Bins, out_dir: &Path) {
    const TOTAL: usize = 16;
    heading("pod: a full 8-rail pod, ADD and DEL, 1 to 16 pods at once");
    println!(
        "Each pod: 8 networks one after the other (as Multus runs them), each a chain run by a minimal \
         libcni-like driver in the bench (prevResult threaded, DEL in reverse with the cached result, \
         `deviceID` as runtimeConfig). {}: `sriov` and `rdma` are the release profile with the \
         test-build features (simulated PF and RDMA subsystem: no SR-IOV PF nor RDMA on this kernel), \
         `coordinator` and `ippool` the release binaries; coordinator with its defaults (gateway probe \
         on, answered by a bridge in the rail's switch netns). {}: Debian has no Go RDMA or coordinator \
         plugin, so the Go chain does less. {TOTAL} pods per level (rounds of N concurrent pods); \
         latency = one pod's 8 rails; pods/s = pods / wall time of the rounds.\n",
        Chain::Ours.label(),
        Chain::Go.label()
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rig = Rig::new(*LEVELS.iter().max().unwrap_or(&1), RAILS);
    let mut rows = Vec::new();
    let mut dat = String::from("# pods ours_add_ms go_add_ms ours_pods_per_s go_pods_per_s\n");
    let mut single = [0.0f64; 2];
    let mut execs: Vec<(Chain, Times)> = Vec::new();
    for pods in LEVELS {
        let ours = measure(bins, &rig, Chain::Ours, pods, TOTAL);
        let theirs = measure(bins, &rig, Chain::Go, pods, TOTAL);
        let (oa, ga) = (median(&ours.add), median(&theirs.add));
        let (od, gd) = (median(&ours.del), median(&theirs.del));
        let (ops, gps) = (
            per_second(ours.add.len(), ours.add_wall),
            per_second(theirs.add.len(), theirs.add_wall),
        );
        if pods == 1 {
            single = [ops, gps];
            execs.push((Chain::Ours, ours.execs.clone()));
            execs.push((Chain::Go, theirs.execs.clone()));
        }
        dat.push_str(&format!(
            "{pods} {:.3} {:.3} {ops:.3} {gps:.3}\n",
            oa.as_secs_f64() * 1e3,
            ga.as_secs_f64() * 1e3
        ));
        rows.push(vec![
            pods.to_string(),
            ms(oa),
            format!("{ops:.2}"),
            format!("{:.2}x", ops / single[0]),
            ms(od),
            ms(ga),
            format!("{gps:.2}"),
            format!("{:.2}x", gps / single[1]),
            ms(gd),
            dratio(ga, oa),
        ]);
    }
    table(
        &[
            "pods at once",
            "ours ADD/pod",
            "ours pods/s",
            "ours speed-up",
            "ours DEL/pod",
            "Go ADD/pod",
            "Go pods/s",
            "Go speed-up",
            "Go DEL/pod",
            "ADD ratio (Go / ours)",
        ],
        &rows,
    );
    println!(
        "Speed-up = pods/s at that level / pods/s one at a time; {cores} cores, so the goal \
         (1.8 pods/s per core-equivalent of one pod's rate, read as speed-up >= 0.9 x cores) is >= {:.1}x at 16.\n",
        0.9 * cores as f64
    );
    println!("### per-exec medians inside a pod (one pod at a time)\n");
    let mut rows = Vec::new();
    for (chain, times) in &execs {
        let mut kinds: Vec<&str> = times.iter().map(|(k, _)| k.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for k in kinds {
            let v: Vec<Duration> = times
                .iter()
                .filter(|(kk, _)| kk == k)
                .map(|(_, d)| *d)
                .collect();
            rows.push(vec![
                match chain {
                    Chain::Ours => "ours".into(),
                    Chain::Go => "Go".into(),
                },
                k.to_string(),
                ms(median(&v)),
                v.len().to_string(),
            ]);
        }
    }
    table(
        &["chain", "plugin and command", "median exec", "execs"],
        &rows,
    );
    write_plot(out_dir, &dat);
    footer();
}

/// The data file and, when gnuplot is installed, the PNG of per-pod ADD
/// latency against concurrency.
fn write_plot(out_dir: &Path, dat: &str) {
    std::fs::create_dir_all(out_dir).expect("bench output dir");
    let data = out_dir.join("pod-concurrency.dat");
    std::fs::write(&data, dat).expect("write data");
    let png = out_dir.join("pod-add-latency.png");
    let script = format!(
        "set terminal pngcairo size 800,500 font ',10'\n\
         set output '{png}'\n\
         set title 'Per-pod ADD latency (8 rails) vs pods started at once'\n\
         set xlabel 'pods at once'\nset ylabel 'median ADD per pod (ms)'\n\
         set logscale x 2\nset xrange [0.8:20]\nset xtics (1,2,4,8,16)\nset grid\nset key top left\nset yrange [0:*]\n\
         plot '{data}' using 1:2 with linespoints lw 2 title 'ours: sriov+ippool, rdma, coordinator', \
         '' using 1:3 with linespoints lw 2 title 'Go: host-device+host-local, sbr'\n",
        png = png.display(),
        data = data.display()
    );
    let gp = out_dir.join("pod-add-latency.gp");
    std::fs::write(&gp, &script).expect("write gnuplot script");
    match std::process::Command::new("gnuplot").arg(&gp).status() {
        Ok(s) if s.success() => println!("Plot: {} (data {}).\n", png.display(), data.display()),
        _ => println!(
            "gnuplot failed or is missing: data in {}.\n",
            data.display()
        ),
    }
}
