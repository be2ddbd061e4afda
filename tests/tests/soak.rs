//! Concurrency soak: pods come and go on worker threads, in random order and
//! with random SIGKILLs at random failpoints, through the chain sriov (with
//! ippool IPAM) -> rdma, on one shared pool and a shared set of VF stand-ins.
//! The test plays the runtime and the device plugin: a killed or failed ADD
//! is followed by DEL (retried until it succeeds), a pod is CHECKed before
//! its DEL, and now and then a pod is handed a VF another live pod holds
//! (a stale device-plugin allocation), which ADD must refuse.
//!
//! Afterwards: DEL retries and GC with no valid attachments, then nothing
//! may be leaked (every VF in the host with its name, MAC and MTU, its PF
//! side as created, every RDMA device in the host, the pool empty, no state
//! files beyond the steady state: pool files, lock files, directories) and
//! nothing may have been double-allocated (no two live pods with the same
//! VF or IP at the same time, from the results and their timestamps).
//!
//! Bounded: it stops starting pods after SOAK_PODS pods (default 200) or
//! SOAK_SECS seconds (default 150), whichever comes first. Also:
//! SOAK_THREADS (8), SOAK_VFS (6), SOAK_KILL_PERCENT (30), SOAK_SEED (else
//! from the clock; printed, so a run can be replayed).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use common::*;
use integration::crash::{self, Invocation, Rng};
use serde_json::{Value, json};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|e| panic!("{name}={v:?} is not a number: {e}"))
        })
        .unwrap_or(default)
}

/// A pod's hold on a VF and its addresses, from ADD's success to DEL's start.
#[derive(Clone, Debug)]
struct Lease {
    pod: String,
    vf: usize,
    ips: Vec<String>,
    from: Instant,
    until: Instant,
}

#[derive(Default)]
struct Stats {
    pods: AtomicUsize,
    adds_ok: AtomicUsize,
    kills: AtomicUsize,
    armed_not_reached: AtomicUsize,
    add_failures: AtomicUsize,
    conflicts_refused: AtomicUsize,
    del_retries: AtomicUsize,
}

/// The device plugin: which VFs are handed out, and which are attached to a
/// live pod (ADD succeeded, DEL not started). A pod turns live or stops being
/// live under its VF's write guard; a stale-allocation probe runs under the
/// read guard, so the VF it probes is attached for the whole probe.
struct DevicePlugin {
    taken: Mutex<Vec<bool>>,
    freed: Condvar,
    live: Mutex<Vec<bool>>,
    guards: Vec<RwLock<()>>,
}

impl DevicePlugin {
    fn take(&self, rng: &mut Rng) -> usize {
        let mut taken = self.taken.lock().expect("vfs");
        loop {
            let free: Vec<usize> = (0..taken.len()).filter(|i| !taken[*i]).collect();
            if !free.is_empty() {
                let vf = free[rng.below(free.len())];
                taken[vf] = true;
                return vf;
            }
            taken = self
                .freed
                .wait_timeout(taken, Duration::from_millis(100))
                .expect("vfs")
                .0;
        }
    }

    /// A VF attached to a live pod now (None if there is none).
    fn live_one(&self, rng: &mut Rng) -> Option<usize> {
        let live = self.live.lock().expect("live");
        let held: Vec<usize> = (0..live.len()).filter(|i| live[*i]).collect();
        (!held.is_empty()).then(|| held[rng.below(held.len())])
    }

    fn is_live(&self, vf: usize) -> bool {
        self.live.lock().expect("live")[vf]
    }

    fn set_live(&self, vf: usize, live: bool) {
        let _w = self.guards[vf].write().expect("guard");
        self.live.lock().expect("live")[vf] = live;
    }

    fn give_back(&self, vf: usize) {
        self.taken.lock().expect("vfs")[vf] = false;
        self.freed.notify_all();
    }
}

struct Soak {
    node: FakeNode,
    failpoints_add: Vec<String>,
    failpoints_del: Vec<String>,
    kill_percent: u32,
    stats: Stats,
    leases: Mutex<Vec<Lease>>,
    problems: Mutex<Vec<String>>,
    plugin: DevicePlugin,
}

const CHAIN: [&str; 2] = ["sriov", "rdma"];

impl Soak {
    fn ipam(&self) -> Value {
        json!({"type": "ippool", "dataDir": self.node.dir.path().join("ipam"), "poolsDir": "/nonexistent",
               "pools": [{"name": "soak-v4", "subnet": "10.88.0.0/24", "ips": ["10.88.0.10-10.88.0.40"],
                          "gateway": "10.88.0.1"}],
               "default_ipv4_ippool": ["soak-v4"]})
    }

    fn confs(&self, vf: usize, pod_no: usize) -> [Value; 2] {
        let mut sriov = self.node.conf(
            &self.node.vfs[vf].pci,
            json!({"vlan": 100 + vf, "mac": format!("02:00:00:88:{:02x}:{:02x}", pod_no / 256, pod_no % 256),
                   "spoofchk": "off", "trust": "on", "mtu": 4000, "ipam": self.ipam()}),
        );
        sriov["cniVersion"] = json!("1.1.0");
        let rdma = json!({"cniVersion": "1.1.0", "name": "rail1", "type": "rdma",
                          "stateDir": self.node.dir.path().join("rdma-state"), "sysfsRoot": self.node.sysfs});
        [sriov, rdma]
    }

    fn invocation(&self, command: &str, cid: &str, netns: &str) -> Invocation {
        let mut i = Invocation::new(command, cid, netns, "net1");
        i.cni_path = bin_dir().display().to_string();
        i
    }

    fn problem(&self, p: String) {
        eprintln!("soak problem: {p}");
        self.problems.lock().expect("problems").push(p);
    }

    /// ADD through the chain, every plugin's run armed with `kill_at` (the
    /// first process that reaches it dies). Ok(result) or Err(killed?, what).
    fn add(
        &self,
        confs: &[Value; 2],
        cid: &str,
        netns: &str,
        kill_at: Option<&str>,
    ) -> Result<Value, (bool, String)> {
        let mut prev: Option<Value> = None;
        for (plugin, conf) in CHAIN.iter().zip(confs) {
            let mut c = conf.clone();
            if let Some(p) = &prev {
                c["prevResult"] = p.clone();
            }
            let mut inv = self.invocation("ADD", cid, netns);
            if let Some(fp) = kill_at {
                inv = inv.killed_at(fp);
            }
            let run = inv.run(&bin(plugin), &c);
            if run.killed() {
                return Err((
                    true,
                    format!("{plugin} killed at {}", kill_at.unwrap_or("?")),
                ));
            }
            if !run.succeeded() {
                return Err((false, format!("{plugin} ADD: {}", run.describe())));
            }
            prev = Some(run.result());
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL in reverse; the first attempt may be armed with `kill_at`, then
    /// retried (as kubelet does) until it succeeds, at most 5 times.
    fn del(
        &self,
        confs: &[Value; 2],
        cid: &str,
        netns: &str,
        cached: Option<&Value>,
        kill_at: Option<&str>,
    ) {
        let mut kill_at = kill_at;
        for attempt in 0..5 {
            let mut failed = None;
            for (plugin, conf) in CHAIN.iter().zip(confs).rev() {
                let mut c = conf.clone();
                if let Some(r) = cached {
                    c["prevResult"] = r.clone();
                }
                let mut inv = self.invocation("DEL", cid, netns);
                if let Some(fp) = kill_at {
                    inv = inv.killed_at(fp);
                }
                let run = inv.run(&bin(plugin), &c);
                if run.killed() {
                    self.stats.kills.fetch_add(1, Ordering::Relaxed);
                }
                if !run.succeeded() {
                    failed = Some(format!("{plugin} DEL: {}", run.describe()));
                    break;
                }
            }
            kill_at = None;
            match failed {
                None => return,
                Some(f) => {
                    self.stats.del_retries.fetch_add(1, Ordering::Relaxed);
                    if attempt == 4 {
                        self.problem(format!("{cid}: DEL never succeeded: {f}"));
                    }
                }
            }
        }
    }

    fn pick<'a>(&self, rng: &mut Rng, list: &'a [String]) -> Option<&'a str> {
        (rng.percent(self.kill_percent) && !list.is_empty())
            .then(|| list[rng.below(list.len())].as_str())
    }

    fn pod(&self, n: usize, rng: &mut Rng) {
        let mut pod = Netns::new("soak");
        let netns = pod.path();
        let cid = format!("soak-{n}");
        self.stats.pods.fetch_add(1, Ordering::Relaxed);

        // Now and then a stale allocation: a VF a live pod holds. ADD must refuse it.
        if rng.percent(10)
            && let Some(vf) = self.plugin.live_one(rng)
            && let Ok(_attached) = self.plugin.guards[vf].read()
            && self.plugin.is_live(vf)
        {
            let confs = self.confs(vf, n);
            let ccid = format!("{cid}-conflict");
            match self.add(&confs, &ccid, &netns, None) {
                Ok(r) => {
                    let ips = ips_of(&r);
                    let now = Instant::now();
                    // Recorded as a lease: if its owner is live, the overlap check fails.
                    self.leases.lock().expect("leases").push(Lease {
                        pod: ccid.clone(),
                        vf,
                        ips,
                        from: now,
                        until: now,
                    });
                    self.problem(format!(
                        "{ccid}: ADD of VF {vf}, held by another pod, succeeded"
                    ));
                }
                Err(_) => {
                    self.stats.conflicts_refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            // The runtime DELs the failed ADD: it must not touch the owner.
            self.del(&confs, &ccid, &netns, None, None);
        }

        let vf = self.plugin.take(rng);
        let confs = self.confs(vf, n);
        let mut result = None;
        for _try in 0..3 {
            let kill_at = self.pick(rng, &self.failpoints_add);
            match self.add(&confs, &cid, &netns, kill_at) {
                Ok(r) => {
                    if kill_at.is_some() {
                        self.stats.armed_not_reached.fetch_add(1, Ordering::Relaxed);
                    }
                    result = Some(r);
                    break;
                }
                Err((killed, what)) => {
                    if killed {
                        self.stats.kills.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.stats.add_failures.fetch_add(1, Ordering::Relaxed);
                        // A kill in the delegated IPAM is an ordinary failure to us.
                        if kill_at.is_none() {
                            self.problem(format!("{cid}: ADD failed without a failpoint: {what}"));
                        }
                    }
                    // The runtime's answer to a failed ADD: DEL (no cached result).
                    let del_kill = self.pick(rng, &self.failpoints_del);
                    self.del(&confs, &cid, &netns, None, del_kill);
                }
            }
        }
        if let Some(r) = result {
            self.stats.adds_ok.fetch_add(1, Ordering::Relaxed);
            self.plugin.set_live(vf, true);
            let from = Instant::now();
            std::thread::sleep(Duration::from_millis(rng.below(40) as u64));
            for (plugin, conf) in CHAIN.iter().zip(&confs) {
                let mut c = conf.clone();
                c["prevResult"] = r.clone();
                let run = self.invocation("CHECK", &cid, &netns).run(&bin(plugin), &c);
                if !run.succeeded() {
                    self.problem(format!(
                        "{cid}: CHECK of {plugin} on VF {vf}: {}",
                        run.describe()
                    ));
                }
            }
            let until = Instant::now();
            self.plugin.set_live(vf, false);
            self.leases.lock().expect("leases").push(Lease {
                pod: cid.clone(),
                vf,
                ips: ips_of(&r),
                from,
                until,
            });
            let del_kill = self.pick(rng, &self.failpoints_del);
            self.del(&confs, &cid, &netns, Some(&r), del_kill);
        }
        self.plugin.give_back(vf);
        pod.delete();
    }
}

fn ips_of(r: &Value) -> Vec<String> {
    r["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| ip["address"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Leases of the same VF or IP whose live times overlap.
fn double_allocations(leases: &[Lease]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in leases.iter().enumerate() {
        for b in &leases[i + 1..] {
            let overlap = a.from <= b.until && b.from <= a.until;
            if !overlap {
                continue;
            }
            if a.vf == b.vf {
                out.push(format!(
                    "VF {} held by {} and {} at once",
                    a.vf, a.pod, b.pod
                ));
            }
            for ip in a.ips.iter().filter(|ip| b.ips.contains(ip)) {
                out.push(format!("{ip} held by {} and {} at once", a.pod, b.pod));
            }
        }
    }
    out
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn pods_come_and_go_with_kills_and_nothing_leaks_or_is_double_allocated() {
    require_root();
    let pods = env_num("SOAK_PODS", 200) as usize;
    let secs = env_num("SOAK_SECS", 150);
    let threads = env_num("SOAK_THREADS", 8).max(1) as usize;
    let vfs = env_num("SOAK_VFS", 6).max(1) as usize;
    let kill_percent = env_num("SOAK_KILL_PERCENT", 30).min(100) as u32;
    let seed = Rng::seed_from_env("SOAK_SEED");
    println!(
        "soak: seed {seed:#x} (SOAK_SEED={seed:#x} replays the choices; thread timing differs), {pods} pods max, {secs} s max, {threads} threads, {vfs} VFs, kill {kill_percent}%"
    );

    let node = FakeNode::new(vfs, 9000);
    for (i, vf) in node.vfs.iter().enumerate() {
        let d = node
            .sysfs
            .join("bus/pci/devices")
            .join(&vf.pci)
            .join("infiniband");
        std::fs::create_dir_all(d.join(format!("mlx5_{}", 10 + i))).expect("mkdir infiniband");
    }
    // The failpoints the chain reaches: its plugins' own, ippool's (as
    // sriov's IPAM), and libcni's on their paths.
    let all = crash::failpoints_in_source(&crash::workspace_root());
    let reached = |n: &&String, del: bool| {
        let own = ["sriov.", "rdma.", "ippool."]
            .iter()
            .any(|p| n.starts_with(p));
        if own {
            return n.contains(".del.") == del;
        }
        if del {
            n.starts_with("netdev.to_host.") || *n == "state.double.torn_write"
        } else {
            n.starts_with("vf.") || n.starts_with("netdev.into_pod.") || n.starts_with("state.")
        }
    };
    let soak = Soak {
        failpoints_add: all.iter().filter(|n| reached(n, false)).cloned().collect(),
        failpoints_del: all.iter().filter(|n| reached(n, true)).cloned().collect(),
        node,
        kill_percent,
        stats: Stats::default(),
        leases: Mutex::new(Vec::new()),
        problems: Mutex::new(Vec::new()),
        plugin: DevicePlugin {
            taken: Mutex::new(vec![false; vfs]),
            freed: Condvar::new(),
            live: Mutex::new(vec![false; vfs]),
            guards: (0..vfs).map(|_| RwLock::new(())).collect(),
        },
    };
    println!(
        "soak: ADD failpoints {:?}\nsoak: DEL failpoints {:?}",
        soak.failpoints_add, soak.failpoints_del
    );
    let before: Vec<(String, Value)> = soak
        .node
        .vfs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                format!("name={} mac={} mtu={}", v.name, v.mac, v.mtu),
                soak.node.sim_vf(i as u32),
            )
        })
        .collect();

    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let next = AtomicUsize::new(0);
    let mut seeder = Rng::new(seed);
    let seeds: Vec<u64> = (0..threads).map(|_| seeder.next_u64()).collect();
    std::thread::scope(|s| {
        for seed in &seeds {
            let (soak, next) = (&soak, &next);
            let mut rng = Rng::new(*seed);
            s.spawn(move || {
                loop {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= pods {
                        break;
                    }
                    soak.pod(n, &mut rng);
                }
            });
        }
    });
    let ran_for = started.elapsed();

    // The runtime's last word: GC with no valid attachments, every plugin.
    for (plugin, conf) in CHAIN.iter().zip(soak.confs(0, 0)) {
        let mut c = conf.clone();
        c["cni.dev/valid-attachments"] = json!([]);
        let run = soak
            .invocation("GC", "gc", "/nonexistent")
            .run(&bin(plugin), &c);
        if !run.succeeded() {
            soak.problem(format!("{plugin} GC: {}", run.describe()));
        }
    }

    // Nothing leaked.
    let mut leaks = Vec::new();
    for (i, vf) in soak.node.vfs.iter().enumerate() {
        let now = if ip_ok(&["link", "show", &vf.name]) {
            let l = &ip_json(&["link", "show", &vf.name])[0];
            format!(
                "name={} mac={} mtu={}",
                l["ifname"].as_str().unwrap_or_default(),
                l["address"].as_str().unwrap_or_default(),
                l["mtu"]
            )
        } else {
            "absent from the host".into()
        };
        if now != before[i].0 {
            leaks.push(format!("VF {i}: {now}, was {}", before[i].0));
        }
        if canonical(&soak.node.sim_vf(i as u32)) != canonical(&before[i].1) {
            leaks.push(format!(
                "VF {i} PF side: {} (was {})",
                soak.node.sim_vf(i as u32),
                before[i].1
            ));
        }
        let dev = format!("mlx5_{}", 10 + i);
        let at = sim_rdma_location(&soak.node.sysfs, &dev);
        if at != "host" {
            leaks.push(format!("RDMA device {dev} is in {at}"));
        }
    }
    let usage = crash::pool_usage(&soak.node.dir.path().join("ipam"), "soak-v4");
    let usage_json: Value = serde_json::from_str(&usage).unwrap_or(Value::Null);
    if usage_json["allocated"] != 0 || usage_json["addresses"] != json!([]) {
        leaks.push(format!("pool soak-v4 not empty: {usage}"));
    }
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for sub in ["state", "ipam", "rdma-state"] {
        for (k, v) in crash::files_with_content(&soak.node.dir.path().join(sub)) {
            files.insert(format!("{sub}/{k}"), v);
        }
    }
    // The steady state: directories, lock files, per-boot markers, pool files.
    for (f, content) in &files {
        let steady = f.ends_with('/')
            || content == "(lock)"
            || content == "(boot marker)"
            || f.ends_with(".state");
        if !steady {
            leaks.push(format!(
                "state file {f} left: {}",
                content.chars().take(200).collect::<String>()
            ));
        }
    }

    let leases = soak.leases.lock().expect("leases").clone();
    let doubles = double_allocations(&leases);
    let st = &soak.stats;
    println!(
        "soak: seed {seed:#x}: {} pods in {:.1?} ({} threads, {} VFs): {} ADDs succeeded, {} processes SIGKILLed at failpoints, {} armed failpoints not reached, {} ADD failures, {} stale-VF ADDs refused, {} DEL retries; {} leases checked for overlap; steady-state files: {}",
        st.pods.load(Ordering::Relaxed),
        ran_for,
        threads,
        vfs,
        st.adds_ok.load(Ordering::Relaxed),
        st.kills.load(Ordering::Relaxed),
        st.armed_not_reached.load(Ordering::Relaxed),
        st.add_failures.load(Ordering::Relaxed),
        st.conflicts_refused.load(Ordering::Relaxed),
        st.del_retries.load(Ordering::Relaxed),
        leases.len(),
        files.len(),
    );
    let problems = soak.problems.lock().expect("problems").clone();
    assert!(
        st.kills.load(Ordering::Relaxed) > 0 || kill_percent == 0,
        "no process was killed: the soak proved nothing about crashes"
    );
    assert!(
        leaks.is_empty() && doubles.is_empty() && problems.is_empty(),
        "seed {seed:#x}\nleaks:\n{}\ndouble allocations:\n{}\nproblems:\n{}",
        leaks.join("\n"),
        doubles.join("\n"),
        problems.join("\n")
    );
}
