//! cni-scenario: the AI-cluster scenario of conf-examples/roce-8-rails on
//! an emulated two-node cluster (integration::harness), printed for an
//! operator: the pod's `ip a`, `ip rule`, one rail's table, the RDMA devices
//! in the pod, the pools' allocation state, a ping per rail; then DEL and
//! the proof that both nodes are back as they were. scripts/demo.sh builds
//! and runs it; any deviation exits non-zero (the demo is also a smoke test).
//!
//! Usage (root): cni-scenario [<conf-examples dir>]
//! Plugins: $CNI_TEST_BIN_DIR (the test build: simulated PF and RDMA), then
//! Debian's /usr/lib/cni for eth0 (ptp + host-local).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use integration::harness::{
    Cluster, Nad, Pod, Result, conf_examples_dir, ip_in, read_manifest_dir, resolve_networks,
};

/// Set by SIGINT/SIGTERM: the run stops at the next step and still removes
/// what it created (the namespaces and files go when `run` returns).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM instead of dying with the namespaces still
/// there. A handler (not SIG_IGN) so the plugins we exec get the default
/// action back: a Ctrl-C kills the running plugin, its step fails, and the
/// run unwinds through the cleanup.
fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // sigaction with a zeroed, filled-in struct has no other preconditions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(fail("interrupted: cleaning up".into()));
    }
    Ok(())
}

fn step(title: &str) -> Result<()> {
    interrupted()?;
    println!("\n== {title}");
    Ok(())
}

fn indent(text: &str) {
    for l in text.lines() {
        println!("    {l}");
    }
}

fn fail(msg: String) -> integration::harness::Error {
    integration::harness::Error::Setup(msg)
}

fn run(examples: PathBuf) -> Result<()> {
    let started = Instant::now();
    let (nads, pods) = read_manifest_dir(&examples.join("roce-8-rails"))?;
    let manifest = pods
        .first()
        .ok_or_else(|| fail("roce-8-rails has no pod manifest".into()))?;
    let resolved = resolve_networks(manifest, &nads)?;
    let rails: Vec<&Nad> = resolved.iter().map(|(n, _)| *n).collect();

    step("The cluster: 2 nodes, 8 rails")?;
    let cluster = Cluster::from_nads(&rails, 2, &examples.join("ippools"))?;
    println!(
        "Each node is a network namespace whose runtime execs the plugins in it (nsenter). Each rail is a\n\
         \"switch\" namespace with a bridge that owns the rail's gateway; each node's VF for the rail is a\n\
         veth end listed in the node's fake sysfs, with an RDMA device in the test build's simulated RDMA\n\
         subsystem (exclusive netns mode). eth0 comes from Debian's ptp + host-local (the cluster CNI)."
    );
    for (i, rail) in cluster.rails.iter().enumerate() {
        let vf = &cluster.nodes[0].vfs[i];
        let pool = &rail.pools[0];
        println!(
            "  {:<11} {}  pool {:<11} {} gw {:<14} VF {} = {} + {}",
            rail.list.name,
            rail.list.types().join(" -> "),
            pool.name,
            pool.subnet,
            pool.gateway,
            vf.pci,
            vf.netdev,
            vf.rdma
        );
    }
    let initial: Vec<BTreeMap<String, String>> = cluster
        .nodes
        .iter()
        .map(|n| n.snapshot())
        .collect::<Result<_>>()?;
    println!("node1 before any pod: `ip -br link`");
    indent(&ip_in(&cluster.nodes[0].ns.name, &["-br", "link"])?);

    step(&format!(
        "ADD: pod {}/{} on each node, eth0 then the annotation's networks",
        manifest.namespace, manifest.name
    ))?;
    for (nad, ifname) in &resolved {
        println!(
            "  {ifname} <- {}/{} (resource {}: the device plugin's VF becomes deviceID)",
            nad.namespace, nad.name, nad.resource_name
        );
    }
    let mut pods: Vec<Pod> = Vec::new();
    for node in 0..2 {
        let t = Instant::now();
        let name = format!("{}-{}", manifest.name, ["a", "b"][node]);
        let mut pod = cluster.create_pod(node, &name, &manifest.namespace)?;
        for (rail, (_, ifname)) in resolved.iter().enumerate() {
            interrupted()?;
            cluster.attach(&mut pod, rail, ifname)?;
        }
        cluster.check_pod(&pod)?;
        println!(
            "  {name} on {}: 9 interfaces attached and CHECKed in {:.1} s",
            cluster.nodes[node].name,
            t.elapsed().as_secs_f64()
        );
        pods.push(pod);
    }
    let (a, b) = (&pods[0], &pods[1]);

    step(&format!("In pod {}: ip a", a.name))?;
    indent(&a.ip(&["addr"])?);
    step(&format!("In pod {}: ip rule", a.name))?;
    indent(&a.ip(&["rule"])?);
    step(&format!(
        "In pod {}: ip route (main) and ip route show table 101 (net1)",
        a.name
    ))?;
    indent(&a.ip(&["route"])?);
    println!("    -- table 101:");
    indent(&a.ip(&["route", "show", "table", "101"])?);

    step(&format!(
        "In pod {}: rdma link (the simulated RDMA subsystem's view)",
        a.name
    ))?;
    let node_a = &cluster.nodes[a.node];
    let links = node_a.rdma_links(&a.path())?;
    for (rail, l) in links.iter().enumerate() {
        let ifname = resolved.get(rail).map_or("?", |(_, i)| i.as_str());
        println!(
            "    link {}/1 state ACTIVE netdev {ifname}   (VF {})",
            l.device, l.pci
        );
    }
    if links.len() != resolved.len() {
        return Err(fail(format!(
            "{} RDMA devices in the pod, want {}",
            links.len(),
            resolved.len()
        )));
    }
    println!("node1 now (the VFs are in the pod): `ip -br link`");
    indent(&ip_in(&node_a.ns.name, &["-br", "link"])?);

    step("Allocation state of the pools (ippool's file store)")?;
    for rail in &cluster.rails {
        let pool = &rail.pools[0];
        let r = cluster.pool_report(&pool.name)?;
        let addrs: Vec<String> = r["addresses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "    {:<11} {}/{} allocated: {}   networks: {}",
            pool.name,
            r["allocated"],
            r["size"],
            addrs.join(" "),
            r["networks"]
        );
    }

    step(&format!(
        "Ping {} -> {} on every rail (replies counted on B's interfaces)",
        a.name, b.name
    ))?;
    for (_, ifname) in &resolved {
        interrupted()?;
        let p = cluster.ping_rail(a, b, ifname, 5)?;
        let elsewhere = p.replies_elsewhere();
        let others: u64 = p
            .replier_tx
            .iter()
            .filter(|(n, _)| *n != ifname)
            .map(|(_, d)| d)
            .sum();
        println!(
            "    {ifname}: {} -> {}  {}/{} replies; B sent {} non-IPv6 packets on {ifname}, {others} on its other interfaces",
            p.from,
            p.to,
            p.received,
            p.sent,
            p.replier_tx.get(ifname).copied().unwrap_or_default(),
        );
        if p.received != p.sent || !elsewhere.is_empty() {
            return Err(fail(format!(
                "{ifname}: {}\nB's non-IPv6 packets sent per interface: {:?}",
                p.output, p.replier_tx
            )));
        }
    }

    step("DEL: each rail (last first), eth0, then the pod's netns, on both nodes")?;
    for mut pod in pods {
        cluster.delete_pod(&mut pod)?;
    }
    for (node, before) in initial.iter().enumerate() {
        let n = &cluster.nodes[node];
        let now = n.snapshot()?;
        let differs: Vec<&String> = now
            .keys()
            .chain(before.keys())
            .filter(|k| now.get(*k) != before.get(*k))
            .collect();
        if !differs.is_empty() {
            return Err(fail(format!("{} not restored: {differs:?}", n.name)));
        }
        println!(
            "  {}: links, names, MACs, MTUs, addresses, routes, PF-side VF state, RDMA devices, state files,\n  \
             result cache and leases are as before the pods",
            n.name
        );
    }
    let leaked: Vec<(String, Vec<String>)> = cluster
        .pool_usage()?
        .into_iter()
        .filter(|(_, used)| !used.is_empty())
        .collect();
    if !leaked.is_empty() {
        return Err(fail(format!("addresses still allocated: {leaked:?}")));
    }
    println!("  pools: nothing allocated");
    println!("node1 after DEL: `ip -br link`");
    indent(&ip_in(&cluster.nodes[0].ns.name, &["-br", "link"])?);
    step(&format!(
        "Done in {:.1} s: namespaces and files of the emulated cluster are removed on exit",
        started.elapsed().as_secs_f64()
    ))?;
    Ok(())
}

fn main() -> ExitCode {
    catch_signals();
    let examples = std::env::args()
        .nth(1)
        .map_or_else(conf_examples_dir, PathBuf::from);
    match run(examples) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
