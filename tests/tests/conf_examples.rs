//! Every file under conf-examples/ is parsed and run as-is (issue 7):
//! NetworkAttachmentDefinitions through the runtime harness on the emulated
//! cluster (integration::harness), the pool files by ippool (its loader
//! here, the binary in every run), the pod's networks annotation resolved to
//! the eight rail NADs, and the .conflist files through cnitool, a client we
//! did not write. `every_file_is_parsed_and_run_by_a_test` fails when a file
//! appears that no test runs.
//!
//! The eight RoCE rail NADs and their pools run in tests/scenario.rs (two
//! nodes, pod to pod on every rail); the other examples run here on their
//! own rail.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::require_root;
use integration::harness::cnitool::Cnitool;
use integration::harness::{
    Cluster, Conflist, IB_VF_GUID, Nad, NodeEtcd, Pod, conf_examples_dir, files_under,
    parse_networks, read_json, read_manifest_dir, read_nad, read_pools, resolve_networks,
};
use serde_json::{Value, json};

const SCENARIO: &str = "two_nodes_eight_rails_pod_to_pod_on_every_rail_then_nothing_is_left";

/// The test files that run conf-examples: a claimed test must be in one.
const TEST_SOURCES: [&str; 2] = [
    include_str!("conf_examples.rs"),
    include_str!("scenario.rs"),
];

/// Which tests run each file of conf-examples (relative path -> test
/// functions, here or in scenario.rs).
fn run_by() -> BTreeMap<String, Vec<&'static str>> {
    let mut m: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    let mut claim = |path: String, test: &'static str| m.entry(path).or_default().push(test);
    for k in 1..=8 {
        claim(format!("roce-8-rails/gpu{k}-sriov.yaml"), SCENARIO);
        claim(format!("ippools/gpu{k}-net1{k}.json"), SCENARIO);
        claim(
            format!("conflist/1{k}-gpu{k}-sriov.conflist"),
            "every_conflist_runs_through_cnitool",
        );
    }
    claim("roce-8-rails/pod.yaml".into(), SCENARIO);
    claim(
        "roce-8-rails/pod.yaml".into(),
        "the_pod_annotation_resolves_to_the_eight_rail_nads",
    );
    claim(
        "infiniband/ib1-sriov.yaml".into(),
        "infiniband_nad_sets_guids_isolates_rdma_and_routes",
    );
    claim(
        "ippools/ib1-net21.json".into(),
        "infiniband_nad_sets_guids_isolates_rdma_and_routes",
    );
    claim(
        "mtu/gpu1-sriov-mtu8000.yaml".into(),
        "mtu_nad_gives_the_vf_8000_end_to_end",
    );
    claim(
        "dual-stack/gpu1-sriov-dual.yaml".into(),
        "dual_stack_nad_routes_both_families_per_rail",
    );
    claim(
        "ippools/gpu1-net11-v6.json".into(),
        "dual_stack_nad_routes_both_families_per_rail",
    );
    claim(
        "etcd-store/gpu1-sriov-etcd.yaml".into(),
        "etcd_nad_allocates_in_etcd_and_releases",
    );
    for f in [
        "21-ib1-sriov",
        "30-gpu1-sriov-mtu8000",
        "40-gpu1-sriov-dual",
        "50-gpu1-sriov-etcd",
    ] {
        claim(
            format!("conflist/{f}.conflist"),
            "every_conflist_runs_through_cnitool",
        );
    }
    m
}

fn example(path: &str) -> std::path::PathBuf {
    conf_examples_dir().join(path)
}

/// Every NAD of conf-examples (all directories).
fn all_nads() -> Vec<Nad> {
    let dir = conf_examples_dir();
    let mut dirs: Vec<String> = files_under(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".yaml"))
        .filter_map(|f| Path::new(&f).parent().map(|p| p.display().to_string()))
        .collect();
    dirs.dedup();
    dirs.into_iter()
        .flat_map(|d| read_manifest_dir(&dir.join(d)).expect("manifests").0)
        .collect()
}

fn all_conflists() -> Vec<Conflist> {
    files_under(&example("conflist"))
        .into_iter()
        .map(|f| Conflist::load(&example("conflist").join(f)).expect("conflist"))
        .collect()
}

#[test]
fn every_file_is_parsed_and_run_by_a_test() {
    let dir = conf_examples_dir();
    let files = files_under(&dir);
    let claims = run_by();
    let unclaimed: Vec<&String> = files.iter().filter(|f| !claims.contains_key(*f)).collect();
    assert!(
        unclaimed.is_empty(),
        "files in conf-examples that no test runs (add a test and claim them in run_by()): {unclaimed:?}"
    );
    let missing: Vec<&String> = claims.keys().filter(|f| !files.contains(f)).collect();
    assert!(
        missing.is_empty(),
        "claimed but not in conf-examples: {missing:?}"
    );

    for (file, tests) in &claims {
        for t in tests {
            assert!(
                TEST_SOURCES
                    .iter()
                    .any(|src| src.contains(&format!("fn {t}()"))),
                "{file} is claimed by {t}, which is no test here or in scenario.rs"
            );
        }
    }

    // Each file parses as what its name says it is.
    for f in &files {
        let path = dir.join(f);
        match Path::new(f).extension().and_then(|e| e.to_str()) {
            Some("yaml") => {
                let (nads, pods) =
                    read_manifest_dir(path.parent().expect("dir")).expect("manifests");
                let found = nads.iter().filter(|n| n.path == path).count()
                    + pods.iter().filter(|p| p.path == path).count();
                assert_eq!(found, 1, "{f}: not a NAD or a pod");
            }
            Some("json") => {
                assert!(f.starts_with("ippools/"), "{f}: JSON files are pool files");
                read_pools(&example("ippools")).expect("pool files");
            }
            Some("conflist") => {
                Conflist::load(&path).unwrap_or_else(|e| panic!("{e}"));
            }
            _ => panic!("{f}: unknown kind of example"),
        }
    }
}

#[test]
fn every_conflist_is_the_config_of_the_nad_of_the_same_name() {
    let nads: BTreeMap<String, Value> = all_nads()
        .into_iter()
        .map(|n| (n.name.clone(), n.config.json.clone()))
        .collect();
    let lists: BTreeMap<String, Value> = all_conflists()
        .into_iter()
        .map(|l| (l.name.clone(), l.json.clone()))
        .collect();
    assert_eq!(
        nads.keys().collect::<Vec<_>>(),
        lists.keys().collect::<Vec<_>>(),
        "one .conflist per NAD"
    );
    for (name, config) in &nads {
        assert_eq!(
            config, &lists[name],
            "{name}: NAD config and .conflist differ"
        );
    }
}

#[test]
fn the_pod_annotation_resolves_to_the_eight_rail_nads() {
    let (nads, pods) = read_manifest_dir(&example("roce-8-rails")).expect("manifests");
    let pod = &pods[0];
    let resolved = resolve_networks(pod, &nads).expect("resolve");
    let got: Vec<(String, String, String, String)> = resolved
        .iter()
        .map(|(n, ifname)| {
            (
                format!("{}/{}", n.namespace, n.name),
                ifname.clone(),
                n.resource_name.clone(),
                n.config.types().join(">"),
            )
        })
        .collect();
    let want: Vec<(String, String, String, String)> = (1..=8)
        .map(|k| {
            (
                format!("kube-system/gpu{k}-sriov"),
                format!("net{k}"),
                format!("spidernet.io/gpu{k}sriov"),
                "sriov>rdma>coordinator".to_string(),
            )
        })
        .collect();
    assert_eq!(got, want);
    for (k, (nad, _)) in (1..=8).zip(&resolved) {
        assert_eq!(nad.config.pool_names(), [format!("gpu{k}-net1{k}")]);
        assert_eq!(nad.config.plugins()[0]["capabilities"]["deviceID"], true);
        assert_eq!(nad.config.plugins()[0]["ipam"]["type"], "ippool");
        assert_eq!(pod.limits[&nad.resource_name], "1");
    }
    // Multus's short form names the same networks.
    let short = (1..=8)
        .map(|k| format!("kube-system/gpu{k}-sriov@net{k}"))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        parse_networks(&short, "default").expect("short form"),
        pod.networks
    );
    // A NAD whose resource the pod does not request is refused.
    let mut greedy = pod.clone();
    greedy.limits.remove("spidernet.io/gpu3sriov");
    let e = resolve_networks(&greedy, &nads).expect_err("resource missing");
    assert!(e.to_string().contains("spidernet.io/gpu3sriov"), "{e}");
}

#[test]
fn the_pool_files_are_the_issues_pools() {
    let pools = read_pools(&example("ippools")).expect("ippool loads every pool file");
    let by_name: BTreeMap<&str, _> = pools.iter().map(|p| (p.name.as_str(), p)).collect();
    for k in 1..=8 {
        let p = by_name[format!("gpu{k}-net1{k}").as_str()];
        assert_eq!(
            (
                p.subnet.as_str(),
                p.first.as_str(),
                p.size,
                p.gateway.as_str()
            ),
            (
                format!("172.16.1{k}.0/24").as_str(),
                format!("172.16.1{k}.1").as_str(),
                200,
                format!("172.16.1{k}.254").as_str()
            )
        );
    }
    let ib = by_name["ib1-net21"];
    assert_eq!((ib.subnet.as_str(), ib.size), ("172.16.21.0/24", 200));
    let v6 = by_name["gpu1-net11-v6"];
    assert_eq!(
        (v6.subnet.as_str(), v6.size, v6.gateway.as_str()),
        ("fd00:16:11::/64", 200, "fd00:16:11::fe")
    );
    assert_eq!(pools.len(), 10);
}

/// One example NAD as the only rail of a cluster of `nodes` nodes.
struct ExampleRun<'a> {
    nad: &'a Nad,
    cluster: Cluster,
    pods: Vec<Pod>,
    initial: Vec<BTreeMap<String, String>>,
}

impl<'a> ExampleRun<'a> {
    fn new(nad: &'a Nad, nodes: usize) -> ExampleRun<'a> {
        require_root();
        let cluster = Cluster::from_nads(&[nad], nodes, &example("ippools")).expect("cluster");
        let initial = cluster
            .nodes
            .iter()
            .map(|n| n.snapshot().expect("snapshot"))
            .collect();
        ExampleRun {
            nad,
            cluster,
            pods: Vec::new(),
            initial,
        }
    }

    /// STATUS, then one pod per node with eth0 and the rail as net1
    /// (capability args from `caps` per node), CHECK, and what every rail
    /// must show: the pool's address, `from <ip> lookup 101`, table 101's
    /// default via the pool's gateway, main's default on eth0; with two
    /// nodes, pod 0 -> pod 1 on net1 answered on net1.
    fn attach(&mut self, caps: impl Fn(usize) -> Value) {
        let (cluster, name) = (&self.cluster, &self.nad.name);
        cluster.status_all().expect("STATUS");
        let gw = cluster.rails[0].pools[0].gateway.clone();
        for node in 0..cluster.nodes.len() {
            let mut pod = cluster
                .create_pod(node, &format!("pod{node}"), "default")
                .expect("eth0");
            cluster
                .attach_with(&mut pod, 0, "net1", &caps(node))
                .unwrap_or_else(|e| panic!("{name}: ADD on node {node}: {e}"));
            cluster.check_pod(&pod).expect("CHECK");
            assert_eq!(pod.interfaces().expect("links"), ["eth0", "net1"]);
            let ip = pod.ipv4("net1").expect("net1 address");
            let prefix = gw.rsplit_once('.').map(|(p, _)| p).unwrap_or_default();
            assert!(
                ip.starts_with(prefix),
                "{name}: {ip} is not from the pool of {gw}"
            );
            let rules = pod.rules("-4").expect("rules");
            assert!(
                rules.iter().any(|r| r.from == ip && r.table == "101"),
                "{name}: no `from {ip} lookup 101`: {rules:?}"
            );
            let table = pod.routes("-4", "101").expect("table 101");
            assert!(
                table.contains(&("default".into(), gw.clone(), "net1".into())),
                "{name}: table 101 {table:?}"
            );
            let main = pod.routes("-4", "main").expect("main");
            let defaults: Vec<_> = main.iter().filter(|r| r.0 == "default").collect();
            assert!(
                defaults.len() == 1 && defaults[0].2 == "eth0",
                "{name}: {main:?}"
            );
            self.pods.push(pod);
        }
        if self.pods.len() > 1 {
            let ping = cluster
                .ping_rail(&self.pods[0], &self.pods[1], "net1", 3)
                .expect("ping");
            assert_eq!(ping.received, 3, "{name}: {}", ping.output);
            assert!(
                ping.replier_tx["net1"] >= 3 && ping.replies_elsewhere().is_empty(),
                "{name}: {ping:?}"
            );
        }
    }

    /// DEL of every pod; the nodes and the pools are as before.
    fn teardown(mut self) -> Cluster {
        for mut pod in std::mem::take(&mut self.pods) {
            self.cluster.delete_pod(&mut pod).expect("DEL");
        }
        for (node, before) in self.initial.iter().enumerate() {
            let now = self.cluster.nodes[node].snapshot().expect("snapshot");
            assert_eq!(&now, before, "{}: node {node} not restored", self.nad.name);
        }
        for (pool, used) in self.cluster.pool_usage().expect("usage") {
            assert!(
                used.is_empty(),
                "{}: {pool} still lends {used:?}",
                self.nad.name
            );
        }
        self.cluster
    }
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn infiniband_nad_sets_guids_isolates_rdma_and_routes() {
    let nad = read_nad(&example("infiniband/ib1-sriov.yaml")).expect("NAD");
    let guid = |node: usize| format!("02:00:00:00:00:00:0a:0{}", node + 1);
    let mut run = ExampleRun::new(&nad, 2);
    run.attach(|node| json!({"infinibandGUID": guid(node)}));
    for (node, pod) in run.pods.iter().enumerate() {
        let n = &run.cluster.nodes[node];
        let pf = n.pf_side(0).expect("pf side");
        assert_eq!(
            (
                pf["node_guid"].as_str(),
                pf["port_guid"].as_str(),
                pf["link_state"].as_str()
            ),
            (
                Some(guid(node).as_str()),
                Some(guid(node).as_str()),
                Some("enable")
            )
        );
        let links = n.rdma_links(&pod.path()).expect("rdma");
        assert_eq!(
            links.len(),
            1,
            "rdmaIsolation: the VF's RDMA device is in the pod"
        );
        let dir = n.dir.join("state/ib-sriov");
        let pkeys: Vec<Value> = files_under(&dir)
            .into_iter()
            .filter(|f| f.ends_with(".json"))
            .map(|f| read_json(&dir.join(f)).expect("record")["pkey"].clone())
            .filter(|p| !p.is_null())
            .collect();
        assert_eq!(
            pkeys,
            [json!(0x8001)],
            "the pkey is recorded for ib-kubernetes"
        );
    }
    let cluster = run.teardown();
    for n in &cluster.nodes {
        let pf = n.pf_side(0).expect("pf side");
        assert_eq!(pf["node_guid"], IB_VF_GUID, "GUID restored");
    }
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn mtu_nad_gives_the_vf_8000_end_to_end() {
    let nad = read_nad(&example("mtu/gpu1-sriov-mtu8000.yaml")).expect("NAD");
    let mut run = ExampleRun::new(&nad, 2);
    run.attach(|_| json!({}));
    let (a, b) = (&run.pods[0], &run.pods[1]);
    assert_eq!(
        (a.mtu("net1").expect("mtu"), b.mtu("net1").expect("mtu")),
        (8000, 8000)
    );
    let (src, dst) = (a.ipv4("net1").expect("a"), b.ipv4("net1").expect("b"));
    // 7972 bytes of payload + 8 (ICMP) + 20 (IPv4) = 8000: not fragmented.
    let (got, out) = a
        .ping(&src, &dst, 2, &["-M", "do", "-s", "7972"])
        .expect("ping");
    assert_eq!(got, 2, "{out}");
    let (got, out) = a
        .ping(&src, &dst, 1, &["-M", "do", "-s", "7973"])
        .expect("ping");
    assert_eq!(got, 0, "one byte more must not fit: {out}");
    let vf = run.cluster.nodes[0].vfs[0].netdev.clone();
    let cluster = run.teardown();
    let back = cluster.nodes[0].ns.ip_json(&["link", "show", "dev", &vf]);
    assert_eq!(back[0]["mtu"], 1500, "the VF's MTU is restored");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn dual_stack_nad_routes_both_families_per_rail() {
    let nad = read_nad(&example("dual-stack/gpu1-sriov-dual.yaml")).expect("NAD");
    let mut run = ExampleRun::new(&nad, 2);
    run.attach(|_| json!({}));
    let v6 = |p: &Pod| {
        p.addresses("net1")
            .expect("addresses")
            .into_iter()
            .find(|a| a.starts_with("fd00:16:11::"))
            .and_then(|a| a.split('/').next().map(str::to_string))
            .expect("an address from gpu1-net11-v6")
    };
    for p in &run.pods {
        p.wait_dad().expect("DAD");
        let ip = v6(p);
        let rules = p.rules("-6").expect("rules");
        assert!(
            rules.iter().any(|r| r.from == ip && r.table == "101"),
            "{rules:?}"
        );
        let table = p.routes("-6", "101").expect("table");
        assert!(
            table.contains(&("default".into(), "fd00:16:11::fe".into(), "net1".into())),
            "{table:?}"
        );
    }
    let (a, b) = (&run.pods[0], &run.pods[1]);
    let (got, out) = a.ping(&v6(a), &v6(b), 3, &["-6"]).expect("ping6");
    assert_eq!(got, 3, "{out}");
    let usage = run.cluster.pool_usage().expect("usage");
    assert_eq!(
        usage
            .iter()
            .map(|(p, u)| (p.as_str(), u.len()))
            .collect::<Vec<_>>(),
        [("gpu1-net11", 2), ("gpu1-net11-v6", 2)]
    );
    run.teardown();
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn etcd_nad_allocates_in_etcd_and_releases() {
    let nad = read_nad(&example("etcd-store/gpu1-sriov-etcd.yaml")).expect("NAD");
    let ipam = &nad.config.plugins()[0]["ipam"];
    let endpoint = ipam["etcd"]["endpoints"][0].as_str().expect("endpoint");
    let prefix = ipam["etcd"]["prefix"].as_str().expect("prefix").to_string();
    let port: u16 = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut run = ExampleRun::new(&nad, 1);
    // The etcd the NAD names, at 127.0.0.1 as seen from the node.
    let etcd = NodeEtcd::start(&run.cluster.nodes[0].ns.path(), port).expect("etcd");
    run.attach(|_| json!({}));
    let pod = &run.pods[0];
    let ip: std::net::Ipv4Addr = pod.ipv4("net1").expect("ip").parse().expect("v4");
    let keys = etcd.keys(&prefix).expect("keys");
    let pool = format!("{prefix}/pools/gpu1-net11");
    for want in [
        format!("{prefix}/index/gpu1-net11"),
        format!("{pool}/ip/{:032x}", u32::from(ip)),
        format!(
            "{pool}/owner/gpu1-sriov-etcd/{}/{}/net1",
            run.cluster.nodes[0].name, pod.container_id
        ),
    ] {
        assert!(keys.contains(&want), "{want} missing from {keys:?}");
    }
    assert!(
        run.cluster
            .pool_report("gpu1-net11")
            .expect("file store")
            .is_null(),
        "the file store was used"
    );
    let _cluster = run.teardown();
    let left: Vec<String> = etcd
        .keys(&prefix)
        .expect("keys")
        .into_iter()
        .filter(|k| k.contains("/ip/") || k.contains("/owner/"))
        .collect();
    assert!(left.is_empty(), "allocations left in etcd: {left:?}");
}

/// What cnitool's ADD must have given the pod on `list`'s rail.
fn assert_cnitool_result(list: &Conflist, result: &Value, pod: &Pod, gateway: &str) {
    let name = &list.name;
    assert_eq!(
        result["cniVersion"], "1.0.0",
        "{name}: cnitool speaks the list's cniVersion"
    );
    let ifs = result["interfaces"].as_array().cloned().unwrap_or_default();
    assert!(
        ifs.iter()
            .any(|i| i["name"] == "net1" && i["sandbox"] == pod.path().as_str()),
        "{name}: {result}"
    );
    let ip = pod.ipv4("net1").expect("address");
    assert!(
        result["ips"].as_array().is_some_and(|a| a
            .iter()
            .any(|i| i["address"] == format!("{ip}/24").as_str())),
        "{name}: {result}"
    );
    assert!(
        pod.rules("-4")
            .expect("rules")
            .iter()
            .any(|r| r.from == ip && r.table == "101")
    );
    let table = pod.routes("-4", "101").expect("table");
    assert!(
        table.contains(&("default".into(), gateway.into(), "net1".into())),
        "{name}: {table:?}"
    );
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn every_conflist_runs_through_cnitool() {
    require_root();
    let cnitool = Cnitool::locate().expect("cnitool (scripts/lib/cnitool.sh builds it)");
    let lists = all_conflists();
    let cluster = Cluster::new(&lists, 1, &example("ippools")).expect("cluster");
    let node = &cluster.nodes[0];
    let initial = node.snapshot().expect("snapshot");
    let netconf = cluster.dir.path().join("net.d");
    let mut etcd = None;
    for rail in 0..lists.len() {
        let local = cluster.list_on(0, rail).expect("node list");
        Cnitool::write_netconf(&netconf, &local).expect("netconf");
        if local.plugins()[0]["ipam"]["store"] == "etcd" && etcd.is_none() {
            let port = local.plugins()[0]["ipam"]["etcd"]["endpoints"][0]
                .as_str()
                .and_then(|e| e.rsplit(':').next()?.parse().ok())
                .expect("etcd port");
            etcd = Some(NodeEtcd::start(&node.ns.path(), port).expect("etcd"));
        }
    }
    for (rail, list) in lists.iter().enumerate() {
        let mut pod = cluster
            .create_pod(0, &format!("cnitool{rail}"), "default")
            .expect("eth0");
        let mut att = cluster.attachment(&pod, "net1", Some(rail));
        if list.types().contains(&"ib-sriov".to_string()) {
            att.capability_args
                .insert("infinibandGUID".into(), json!("02:00:00:00:00:00:0b:01"));
        }
        let run = |cmd: &str| {
            cnitool
                .run(node, &netconf, cmd, &list.name, &att)
                .unwrap_or_else(|e| panic!("cnitool {cmd} {}: {e}", list.name))
        };
        let result = run("add");
        let gateway = &cluster.rails[rail].pools[0].gateway;
        assert_cnitool_result(list, &result, &pod, gateway);
        let rdma = node.rdma_links(&pod.path()).expect("rdma");
        let isolates = list.types().contains(&"rdma".to_string())
            || list.plugins()[0]["rdmaIsolation"] == true;
        assert_eq!(
            rdma.len(),
            usize::from(isolates),
            "{}: RDMA devices in the pod",
            list.name
        );
        if list.plugins()[0]["mtu"] == 8000 {
            assert_eq!(pod.mtu("net1").expect("mtu"), 8000);
        }
        if list.pool_names().len() == 2 {
            assert!(
                pod.addresses("net1")
                    .expect("addrs")
                    .iter()
                    .any(|a| a.starts_with("fd00:16:11::")),
                "{}: no IPv6 address",
                list.name
            );
        }
        // libcni caches the result in /var/lib/cni/results (cnitool has no
        // other cache dir); CHECK reads it, DEL removes it.
        let cached = || {
            files_under(Path::new("/var/lib/cni/results"))
                .into_iter()
                .filter(|f| {
                    f.starts_with(&format!("{}-cnitool-", list.name)) && f.ends_with("-net1")
                })
                .count()
        };
        assert_eq!(cached(), 1, "{}: no cached result", list.name);
        run("check");
        run("del");
        assert!(
            !pod.ns.has_link("net1"),
            "{}: net1 still in the pod",
            list.name
        );
        assert_eq!(cached(), 0, "{}: cached result left", list.name);
        run("del");
        cluster.delete_pod(&mut pod).expect("DEL eth0");
        assert_eq!(
            node.snapshot().expect("snapshot"),
            initial,
            "{}: node not restored",
            list.name
        );
        for (pool, used) in cluster.pool_usage().expect("usage") {
            assert!(
                used.is_empty(),
                "{}: {pool} still lends {used:?}",
                list.name
            );
        }
    }
    drop(etcd);
}
