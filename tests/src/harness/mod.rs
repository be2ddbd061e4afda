//! A container runtime and an emulated cluster for the scenario test, the
//! conf-examples tests and the demo (`src/bin/cni-scenario.rs`).
//!
//! - [`runtime`]: what libcni does with a network config list (ADD with
//!   prevResult threading and a result cache, CHECK, DEL, GC, STATUS).
//! - [`manifests`]: the Kubernetes side: NetworkAttachmentDefinitions, a
//!   pod's `k8s.v1.cni.cncf.io/networks` annotation, ippool's pool files.
//! - [`cluster`]: nodes as network namespaces, one "switch" namespace per
//!   rail, veth VF stand-ins listed in each node's fake sysfs; pods attached
//!   as kubelet + Multus attach them.
//! - [`pod`] and [`node`]: what a test or an operator looks at (addresses,
//!   rules, tables, RDMA devices, counters; a node's before/after state).
//! - [`cnitool`]: the same lists through containernetworking's cnitool, a
//!   client we did not write.
//!
//! # How nodes are emulated
//!
//! The plugins act on the network namespace they run in: that is "the
//! host". To have several nodes on one machine, each node is a network
//! namespace and its runtime execs every plugin through
//! `nsenter --net=<node netns> <plugin>` (only the network namespace
//! changes: the mount namespace, hence `/var/run/netns` and the fake sysfs
//! paths, stay the test's). Delegated plugins (IPAM) inherit it. So on node
//! N, `sriov` finds its VF stand-ins in node N's netns and gives them back
//! there, the test build's simulated RDMA subsystem calls node N's netns
//! "host", and Debian's `ptp` (the cluster network, eth0) puts its host-side
//! veth in node N.
//!
//! Each node has its own directory: a fake sysfs with one PF per rail and
//! one VF each (netdev and RDMA device `mlx5_<7+rail>`, the simulated PF and
//! RDMA state of the test build), the plugins' state dirs, host-local's
//! leases for eth0 and the runtime's result cache. What a node's installer
//! would template into its configs ([`cluster::NodeLocal`]: `stateDir`,
//! `sysfsRoot`, ippool's `dataDir` and `poolsDir`) is added when a list is
//! loaded on that node; a file that sets one of those keys itself is
//! refused, so the files run otherwise unchanged. `deviceID` (and
//! `infinibandGUID`) come as capability args, as Multus passes what the
//! device plugin allocated.
//!
//! Each rail is a "switch" netns holding a Linux bridge that owns the rail's
//! gateway addresses (from the pool files), so the coordinator's gateway
//! probe is answered. Each node's VF stand-in for the rail is a veth end in
//! the node's netns whose peer is a port of that bridge: pods on different
//! nodes reach each other on the rail through the switch, and nowhere else.
//!
//! ippool's file store is node-local by design. One machine stands in for
//! all nodes here, so the emulated nodes share one `dataDir`, which is what
//! a cluster-wide store gives real nodes; on a real cluster use the etcd
//! store or per-node pools. ippool records each allocation with its node,
//! and the emulated nodes share the host's hostname (ippool's default node
//! name), so each node's runtime runs the plugins with `K8S_NODE_NAME=<node>`
//! in their environment: a node's GC then judges only its own allocations,
//! as on a real cluster.

pub mod cluster;
pub mod cnitool;
pub mod manifests;
pub mod node;
pub mod pod;
pub mod runtime;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

pub use cluster::{Cluster, IB_VF_GUID, Node, NodeLocal, Rail, Vf, VfKind};
pub use manifests::{
    Nad, NetworkSelection, PodManifest, PoolFile, parse_networks, read_manifest_dir, read_nad,
    read_pod, read_pools, resolve_networks,
};
pub use node::NodeEtcd;
pub use pod::{Pod, RailPing};
pub use runtime::{Attachment, Conflist, Runtime, VERSIONS};

/// A harness failure: a plugin's CNI error, or a setup step that failed.
#[derive(Debug)]
pub enum Error {
    Plugin(Box<PluginFailure>),
    Setup(String),
}

/// A plugin that exited non-zero.
#[derive(Debug)]
pub struct PluginFailure {
    pub plugin: String,
    pub command: String,
    pub status: i32,
    /// The CNI error object the plugin printed (Null when it printed none).
    pub error: Value,
    pub stderr: String,
}

impl Error {
    /// The CNI error code, when a plugin failed with one.
    pub fn code(&self) -> Option<u64> {
        match self {
            Error::Plugin(p) => p.error["code"].as_u64(),
            Error::Setup(_) => None,
        }
    }

    pub fn msg(&self) -> String {
        match self {
            Error::Plugin(p) => p.error["msg"].as_str().unwrap_or_default().to_string(),
            Error::Setup(m) => m.clone(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Plugin(p) => write!(
                f,
                "plugin {} failed ({}, exit {}): {}\nstderr: {}",
                p.plugin, p.command, p.status, p.error, p.stderr
            ),
            Error::Setup(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn setup(msg: impl Into<String>) -> Error {
    Error::Setup(msg.into())
}

/// Runs a command and returns its stdout; fails with its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(|e| setup(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(setup(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -n <ns> args...`
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// `ip -j -n <ns> args...`, parsed (an empty output is an empty list).
pub fn ip_json_in(ns: &str, args: &[&str]) -> Result<Value> {
    let out = run(Command::new("ip").args(["-j", "-n", ns]).args(args))?;
    if out.trim().is_empty() {
        return Ok(json!([]));
    }
    serde_json::from_str(&out).map_err(|e| setup(format!("ip -j {args:?}: {e}: {out}")))
}

/// Where the test build of the plugins is (`scripts/test.sh` builds it).
pub fn plugin_dir() -> PathBuf {
    match std::env::var("CNI_TEST_BIN_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/testbin/debug"),
    }
}

/// The repository root (for conf-examples and scripts/lib/cnitool.sh),
/// without `..` (the plugins refuse paths with it).
pub fn repo_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map_or_else(|| here.join(".."), Path::to_path_buf)
}

/// The repository's conf-examples directory.
pub fn conf_examples_dir() -> PathBuf {
    repo_dir().join("conf-examples")
}

/// JSON with object keys sorted, so equal values compare equal as strings.
pub fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sort(v))).collect();
                json!(sorted)
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

/// A per-boot state directory's marker and its lock (libcni's
/// `state::boot`): written on a directory's first use in a boot and kept
/// for the rest of it, as lock files are, so they are no leak.
pub fn is_boot_marker(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == ".boot_id" || name == ".boot_id.lock"
}

/// The state files under `dir` (relative, sorted) that record something:
/// lock files and per-boot markers persist by design (like sriov-cni's
/// locks), so they are left out.
pub fn state_files(dir: &Path) -> Vec<String> {
    files_under(dir)
        .into_iter()
        .filter(|f| !f.ends_with(".lock") && !is_boot_marker(f))
        .collect()
}

/// Regular files under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap_or(&p).display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Reads and parses a JSON file (Null when it does not exist).
pub fn read_json(path: &Path) -> Result<Value> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| setup(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
        Err(e) => Err(setup(format!("{}: {e}", path.display()))),
    }
}
