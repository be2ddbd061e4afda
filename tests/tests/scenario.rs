//! The AI-cluster scenario end to end (issue 7), on the emulated cluster of
//! the runtime harness (integration::harness): two nodes, eight RoCE rails
//! from conf-examples/roce-8-rails (the NADs the pod's Multus annotation
//! names, their pool files in conf-examples/ippools), one pod per node with
//! eth0 (Debian's ptp, the cluster network) plus net1..net8, each rail the
//! chain sriov -> rdma -> coordinator with ippool, run as libcni runs it
//! (CNI 1.1.0: ADD, CHECK, GC, STATUS, DEL).
//!
//! The 2-rail version on real igb VFs is the VM lane's tests/vm/seed.sh.

mod common;

use std::collections::BTreeMap;

use common::require_root;
use integration::harness::{
    Attachment, Cluster, Nad, Pod, PodManifest, conf_examples_dir, files_under, read_manifest_dir,
    resolve_networks,
};

const RAILS: usize = 8;

/// Rail k (1-based) as the pool files and the coordinator define it.
struct RailPlan {
    ifname: String,
    subnet_prefix: String,
    gateway: String,
    table: u64,
    priority: u64,
}

fn plan(k: usize) -> RailPlan {
    RailPlan {
        ifname: format!("net{k}"),
        subnet_prefix: format!("172.16.{}.", 10 + k),
        gateway: format!("172.16.{}.254", 10 + k),
        table: 100 + k as u64,
        priority: 1100 + k as u64,
    }
}

fn roce_example() -> (PodManifest, Vec<Nad>) {
    let (nads, pods) =
        read_manifest_dir(&conf_examples_dir().join("roce-8-rails")).expect("roce-8-rails");
    assert_eq!(pods.len(), 1, "roce-8-rails holds one pod manifest");
    (pods.into_iter().next().expect("one pod"), nads)
}

/// The pod's IPv4 address on each rail, asserting what ADD must have done
/// on it: interfaces, addresses from the rail's pool (also in the cached
/// result), one rule and one table per rail, the main default on eth0.
fn assert_pod_is_wired(pod: &Pod) -> Vec<String> {
    let mut want_ifs: Vec<String> = (1..=RAILS).map(|k| format!("net{k}")).collect();
    want_ifs.push("eth0".into());
    want_ifs.sort();
    assert_eq!(
        pod.interfaces().expect("links"),
        want_ifs,
        "{}: interfaces",
        pod.name
    );

    let eth0 = pod.ipv4("eth0").expect("eth0 address");
    let mut addrs = Vec::new();
    for (k, (rail, ifname, result)) in (1..=RAILS).zip(&pod.rails) {
        let p = plan(k);
        assert_eq!((*rail, ifname.as_str()), (k - 1, p.ifname.as_str()));
        let got = pod.addresses(&p.ifname).expect("addresses");
        assert_eq!(got.len(), 1, "{} {}: {got:?}", pod.name, p.ifname);
        let (ip, len) = got[0].split_once('/').expect("cidr");
        assert!(
            ip.starts_with(&p.subnet_prefix) && len == "24",
            "{}: {ip}/{len} not from the pool",
            p.ifname
        );
        let host: u8 = ip
            .rsplit('.')
            .next()
            .and_then(|o| o.parse().ok())
            .expect("octet");
        assert!(
            (1..=200).contains(&host),
            "{ip} outside the pool's ips .1-.200"
        );
        assert_eq!(
            result["ips"][0]["address"],
            got[0].as_str(),
            "cached result of {}",
            p.ifname
        );
        assert_eq!(result["ips"][0]["gateway"], p.gateway.as_str());
        addrs.push(ip.to_string());

        let table = pod.routes("-4", &p.table.to_string()).expect("table");
        assert!(
            table.contains(&("default".into(), p.gateway.clone(), p.ifname.clone())),
            "table {} has no default via {} dev {}: {table:?}",
            p.table,
            p.gateway,
            p.ifname
        );
        assert!(
            table.iter().all(|(_, _, dev)| *dev == p.ifname),
            "table {} routes through another interface: {table:?}",
            p.table
        );
    }

    let rules = pod.rules("-4").expect("rules");
    let rail_rules: Vec<(u64, String, String)> = rules
        .iter()
        .filter(|r| r.from != "all")
        .map(|r| (r.priority, r.from.clone(), r.table.clone()))
        .collect();
    let want: Vec<(u64, String, String)> = (1..=RAILS)
        .map(|k| {
            (
                plan(k).priority,
                addrs[k - 1].clone(),
                plan(k).table.to_string(),
            )
        })
        .collect();
    assert_eq!(
        rail_rules, want,
        "{}: `from <ip> lookup <table>` rules",
        pod.name
    );

    let main = pod.routes("-4", "main").expect("main");
    let defaults: Vec<_> = main.iter().filter(|(dst, _, _)| dst == "default").collect();
    assert_eq!(defaults.len(), 1, "{}: main defaults {main:?}", pod.name);
    assert_eq!(
        defaults[0].2, "eth0",
        "{}: main default not on eth0",
        pod.name
    );
    let cluster_net = format!("10.244.{}.", pod.node + 1);
    assert!(eth0.starts_with(&cluster_net), "{}: eth0 {eth0}", pod.name);
    addrs
}

/// Node `node` is as before the pods: links (names, MACs, MTUs, flags,
/// addresses), routes, rules, PF-side VF state, RDMA devices, state files,
/// result cache, leases; its lock files are only sriov's per-VF locks
/// (kept once a VF was used, as sriov-cni keeps them), none per pod.
fn assert_node_restored(cluster: &Cluster, node: usize, initial: &BTreeMap<String, String>) {
    let n = &cluster.nodes[node];
    let now = n.snapshot().expect("snapshot");
    let differs: Vec<String> = now
        .iter()
        .filter(|(k, v)| initial.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v}\n  was: {:?}", initial.get(k)))
        .chain(
            initial
                .keys()
                .filter(|k| !now.contains_key(*k))
                .map(|k| format!("{k}: gone")),
        )
        .collect();
    assert!(
        differs.is_empty(),
        "{} not back to its initial state:\n{}",
        n.name,
        differs.join("\n")
    );
    let vf_locks: Vec<String> = n
        .vfs
        .iter()
        .map(|vf| format!("sriov/pci/vf_lock/{}.lock", vf.pci))
        .collect();
    assert_eq!(n.lock_files(), vf_locks, "{}: lock files", n.name);
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn two_nodes_eight_rails_pod_to_pod_on_every_rail_then_nothing_is_left() {
    require_root();
    let (manifest, nads) = roce_example();
    let resolved = resolve_networks(&manifest, &nads).expect("the annotation resolves");
    let rails: Vec<&Nad> = resolved.iter().map(|(n, _)| *n).collect();
    assert_eq!(rails.len(), RAILS);
    let cluster =
        Cluster::from_nads(&rails, 2, &conf_examples_dir().join("ippools")).expect("cluster");
    let initial: Vec<BTreeMap<String, String>> = cluster
        .nodes
        .iter()
        .map(|n| n.snapshot().expect("snapshot"))
        .collect();
    let empty_pools: Vec<(String, Vec<String>)> = (1..=RAILS)
        .map(|k| (format!("gpu{k}-net{}", 10 + k), Vec::new()))
        .collect();
    assert_eq!(cluster.pool_usage().expect("usage"), empty_pools);

    // STATUS on every node before any pod: every plugin is ready.
    cluster.status_all().expect("STATUS");

    // ADD: pod A on node1, pod B on node2, eth0 then the annotation's rails.
    let mut pods = Vec::new();
    for (node, name) in [(0, "gpu-worker-a"), (1, "gpu-worker-b")] {
        let mut pod = cluster
            .create_pod(node, name, &manifest.namespace)
            .expect("eth0");
        for (rail, (_, ifname)) in resolved.iter().enumerate() {
            cluster
                .attach(&mut pod, rail, ifname)
                .unwrap_or_else(|e| panic!("ADD {name} {ifname}: {e}"));
        }
        pods.push(pod);
    }
    let (a, b) = (&pods[0], &pods[1]);

    let addrs_a = assert_pod_is_wired(a);
    let addrs_b = assert_pod_is_wired(b);
    // Each pool lent exactly the two pods' addresses.
    let usage = cluster.pool_usage().expect("usage");
    for (k, (pool, used)) in (1..=RAILS).zip(&usage) {
        let mut want = vec![addrs_a[k - 1].clone(), addrs_b[k - 1].clone()];
        want.sort();
        let mut got = used.clone();
        got.sort();
        assert_eq!((pool.as_str(), got), (empty_pools[k - 1].0.as_str(), want));
    }
    // `rdma link` in each pod: one RDMA device per rail, its VF's.
    for pod in [a, b] {
        let node = &cluster.nodes[pod.node];
        let links = node.rdma_links(&pod.path()).expect("rdma");
        let want: Vec<(String, String)> = node
            .vfs
            .iter()
            .map(|v| (v.rdma.clone(), v.pci.clone()))
            .collect();
        let got: Vec<(String, String)> = links.into_iter().map(|l| (l.device, l.pci)).collect();
        assert_eq!(got, want, "{}: RDMA devices in the pod", pod.name);
    }

    // CHECK with the cached results, every plugin of every chain.
    for pod in [a, b] {
        cluster.check_pod(pod).expect("CHECK");
    }

    // Pod A -> pod B on every rail, answered on the same rail.
    for k in 1..=RAILS {
        let ifname = format!("net{k}");
        let ping = cluster.ping_rail(a, b, &ifname, 5).expect("ping");
        assert_eq!(ping.received, 5, "{ifname}: {}", ping.output);
        assert_eq!(
            (ping.from.as_str(), ping.to.as_str()),
            (addrs_a[k - 1].as_str(), addrs_b[k - 1].as_str())
        );
        assert!(
            ping.replier_tx[&ifname] >= 5,
            "{ifname}: B sent {:?}",
            ping.replier_tx
        );
        assert!(
            ping.asker_rx[&ifname] >= 5,
            "{ifname}: A received {:?}",
            ping.asker_rx
        );
        assert!(
            ping.replies_elsewhere().is_empty(),
            "{ifname}: B answered elsewhere: {:?}",
            ping.replier_tx
        );
    }

    // GC on each node, its runtime listing its own live attachments (a
    // runtime knows only its node's): nothing is released, on either node,
    // from the pool store the nodes share, and CHECK still passes. GC per
    // network and per node are covered by the tests below.
    for pod in [a, b] {
        assert_eq!(
            cluster
                .gc_node(pod.node, &pod.attachment_keys())
                .expect("GC"),
            0
        );
    }
    assert_eq!(
        cluster.pool_usage().expect("usage"),
        usage,
        "GC released live addresses"
    );
    for pod in [a, b] {
        cluster.check_pod(pod).expect("CHECK after GC");
    }

    // DEL as kubelet removes a pod: each rail (last attached first), eth0,
    // then the netns goes. Both nodes are back to their initial state.
    let again: Vec<(usize, usize, Attachment)> = [a, b]
        .iter()
        .flat_map(|p| {
            p.rails
                .iter()
                .map(|(r, ifname, _)| (p.node, *r, cluster.attachment(p, ifname, Some(*r))))
        })
        .collect();
    for mut pod in pods {
        cluster.delete_pod(&mut pod).expect("DEL");
    }
    for (node, snapshot) in initial.iter().enumerate() {
        assert_node_restored(&cluster, node, snapshot);
    }
    assert_eq!(
        cluster.pool_usage().expect("usage"),
        empty_pools,
        "addresses leaked"
    );
    // The shared ippool store: one state and one lock file per pool, no
    // more (nothing per pod or per attachment).
    let mut pool_files: Vec<String> = empty_pools
        .iter()
        .flat_map(|(p, _)| [format!("{p}.lock"), format!("{p}.state")])
        .collect();
    pool_files.sort();
    assert_eq!(files_under(&cluster.ipam_data), pool_files);

    // DEL again, the cache and the netns gone (a retried teardown): every
    // plugin succeeds and nothing changes. Then GC with nothing valid
    // (nothing cached is left to DEL; the plugins' GC finds nothing stale)
    // and STATUS.
    for (node, rail, att) in &again {
        let list = cluster.list_on(*node, *rail).expect("list");
        cluster.nodes[*node]
            .runtime
            .del(&list, att)
            .unwrap_or_else(|e| panic!("second DEL of {}: {e}", att.ifname));
    }
    for (node, snapshot) in initial.iter().enumerate() {
        assert_eq!(cluster.gc_node(node, &[]).expect("GC"), 0);
        assert_node_restored(&cluster, node, snapshot);
    }
    assert_eq!(files_under(&cluster.ipam_data), pool_files);
    cluster.status_all().expect("STATUS after");
}

/// libcni's GC is per network: the valid list names the attachments of
/// that network the runtime still knows. Attachments of the node's other
/// networks (the pod's other rails) are not in it and must stay.
#[test]
fn gc_of_one_network_on_one_node_releases_only_what_it_owns() {
    require_root();
    let (manifest, nads) = roce_example();
    let resolved = resolve_networks(&manifest, &nads).expect("resolve");
    let rails: Vec<&Nad> = resolved.iter().take(2).map(|(n, _)| *n).collect();
    let cluster =
        Cluster::from_nads(&rails, 1, &conf_examples_dir().join("ippools")).expect("cluster");
    let mut pod = cluster.create_pod(0, "gc", "default").expect("eth0");
    cluster.attach(&mut pod, 0, "net1").expect("net1");
    cluster.attach(&mut pod, 1, "net2").expect("net2");
    let node = &cluster.nodes[0];
    // The runtime lost net1 (gpu1-sriov) and GCs that network: net2, an
    // attachment of gpu2-sriov, is untouched.
    let gpu1 = cluster.list_on(0, 0).expect("list");
    let net1 = cluster.attachment(&pod, "net1", Some(0));
    node.runtime.del(&gpu1, &net1).expect("DEL net1");
    node.runtime.gc(&gpu1, &[]).expect("GC gpu1-sriov");
    cluster
        .check_rail(&pod, 1, "net2")
        .expect("net2 survives the GC of gpu1-sriov");
    assert_eq!(node.rdma_links(&pod.path()).expect("rdma").len(), 1);
}

/// A node's runtime knows only its own pods. With a cluster-wide pool store
/// (etcd; here the emulated nodes' shared file store stands for it), its GC
/// must not release the addresses of pods on other nodes; its own stale
/// ones it must.
#[test]
fn gc_on_one_node_keeps_the_other_nodes_allocations() {
    require_root();
    let (manifest, nads) = roce_example();
    let resolved = resolve_networks(&manifest, &nads).expect("resolve");
    let rails: Vec<&Nad> = resolved.iter().take(1).map(|(n, _)| *n).collect();
    let cluster =
        Cluster::from_nads(&rails, 2, &conf_examples_dir().join("ippools")).expect("cluster");
    let mut pods = Vec::new();
    for node in 0..2 {
        let mut pod = cluster
            .create_pod(node, &format!("p{node}"), "default")
            .expect("eth0");
        cluster.attach(&mut pod, 0, "net1").expect("net1");
        pods.push(pod);
    }
    let before = cluster.pool_usage().expect("usage");
    let pool = before[0].0.clone();
    assert_eq!(
        cluster.pool_report(&pool).expect("report")["nodes"],
        serde_json::json!(["node1", "node2"]),
        "each node records its allocations as its own"
    );
    cluster
        .gc_node(0, &pods[0].attachment_keys())
        .expect("GC on node1");
    assert_eq!(
        cluster.pool_usage().expect("usage"),
        before,
        "node1's GC released node2's address"
    );
    cluster
        .check_rail(&pods[1], 0, "net1")
        .expect("node2's pod");

    // node1's runtime loses its pod without DEL (its cache lost in a
    // crash): node1's GC releases that address, and only that one.
    let list = cluster.list_on(0, 0).expect("list");
    let lost = cluster.attachment(&pods[0], "net1", Some(0));
    cluster.nodes[0]
        .runtime
        .forget(&list, &lost)
        .expect("forget");
    let p1_addr = pods[1].addresses("net1").expect("addresses")[0]
        .split('/')
        .next()
        .map(str::to_string)
        .expect("address");
    assert_eq!(cluster.gc_node(0, &[]).expect("GC on node1"), 0);
    assert_eq!(
        cluster.pool_usage().expect("usage"),
        [(pool, vec![p1_addr])],
        "node1's GC kept its stale address or took node2's"
    );
    cluster
        .check_rail(&pods[1], 0, "net1")
        .expect("node2's pod after node1's GC");
}
