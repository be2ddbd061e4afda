//! The Kubernetes side of the examples: Multus NetworkAttachmentDefinitions,
//! a pod's `k8s.v1.cni.cncf.io/networks` annotation and the device-plugin
//! resources it requests, and ippool's pool files. YAML is read with
//! serde_yaml_ng into typed documents that refuse unknown keys where a typo
//! would silently change the meaning (a NAD's top level and `spec`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::runtime::Conflist;
use super::{Result, setup};

pub const RESOURCE_ANNOTATION: &str = "k8s.v1.cni.cncf.io/resourceName";
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: String,
    namespace: Option<String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    /// Accepted (manifests carry them), not used.
    #[serde(default, rename = "labels")]
    _labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NadDoc {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: NadSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NadSpec {
    config: String,
}

/// A Multus NetworkAttachmentDefinition.
#[derive(Clone, Debug)]
pub struct Nad {
    pub name: String,
    pub namespace: String,
    pub resource_name: String,
    pub config: Conflist,
    pub path: PathBuf,
}

fn read_yaml<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).map_err(|e| setup(format!("{}: {e}", path.display())))?;
    serde_yaml_ng::from_str(&text).map_err(|e| setup(format!("{}: {e}", path.display())))
}

/// Reads a NAD file: a `k8s.cni.cncf.io/v1` NetworkAttachmentDefinition
/// with the resourceName annotation (what makes Multus ask the device
/// plugin for a VF) and `spec.config`, a config list whose `name` is the
/// NAD's name.
pub fn read_nad(path: &Path) -> Result<Nad> {
    let doc: NadDoc = read_yaml(path)?;
    let bad = |why: String| setup(format!("{}: {why}", path.display()));
    if doc.api_version != "k8s.cni.cncf.io/v1" || doc.kind != "NetworkAttachmentDefinition" {
        return Err(bad(format!(
            "{} {} is not a k8s.cni.cncf.io/v1 NetworkAttachmentDefinition",
            doc.api_version, doc.kind
        )));
    }
    let resource_name = doc
        .metadata
        .annotations
        .get(RESOURCE_ANNOTATION)
        .cloned()
        .ok_or_else(|| bad(format!("no {RESOURCE_ANNOTATION} annotation")))?;
    let config = Conflist::parse(&doc.spec.config, &format!("{} spec.config", path.display()))?;
    if config.name != doc.metadata.name {
        return Err(bad(format!(
            "spec.config name {:?} differs from metadata.name {:?}",
            config.name, doc.metadata.name
        )));
    }
    Ok(Nad {
        name: doc.metadata.name,
        namespace: doc.metadata.namespace.unwrap_or_else(|| "default".into()),
        resource_name,
        config,
        path: path.to_path_buf(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodDoc {
    api_version: String,
    kind: String,
    metadata: Metadata,
    spec: PodSpec,
}

/// Only what the runtime side needs; a pod spec has many more fields.
#[derive(Debug, Deserialize)]
struct PodSpec {
    containers: Vec<Container>,
}

#[derive(Debug, Deserialize)]
struct Container {
    #[serde(default)]
    resources: Resources,
}

#[derive(Debug, Default, Deserialize)]
struct Resources {
    #[serde(default)]
    limits: BTreeMap<String, serde_yaml_ng::Value>,
}

/// One entry of a pod's networks annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkSelection {
    pub name: String,
    /// Empty: the pod's namespace.
    pub namespace: String,
    pub interface: String,
}

/// What the runtime side needs from a pod manifest.
#[derive(Clone, Debug)]
pub struct PodManifest {
    pub name: String,
    pub namespace: String,
    pub networks: Vec<NetworkSelection>,
    /// Every container's `resources.limits`, quantities as text.
    pub limits: BTreeMap<String, String>,
    pub path: PathBuf,
}

/// Multus's JSON form (`[{"name","namespace","interface"}]`).
#[derive(Debug, Deserialize)]
struct SelectionJson {
    name: String,
    namespace: Option<String>,
    interface: Option<String>,
}

/// The networks annotation in either of Multus's forms: a JSON list, or
/// the short `[<namespace>/]<name>[@<interface>]` comma-separated text.
/// Without an interface name Multus calls the n-th network `net<n>`.
pub fn parse_networks(
    text: &str,
    pod_namespace: &str,
) -> std::result::Result<Vec<NetworkSelection>, String> {
    let entries: Vec<(String, Option<String>, Option<String>)> =
        if text.trim_start().starts_with('[') {
            let list: Vec<SelectionJson> =
                serde_json::from_str(text).map_err(|e| format!("not a JSON network list: {e}"))?;
            list.into_iter()
                .map(|s| (s.name, s.namespace, s.interface))
                .collect()
        } else {
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let (rest, ifname) = match s.split_once('@') {
                        Some((r, i)) => (r, Some(i.to_string())),
                        None => (s, None),
                    };
                    match rest.split_once('/') {
                        Some((ns, n)) => (n.to_string(), Some(ns.to_string()), ifname),
                        None => (rest.to_string(), None, ifname),
                    }
                })
                .collect()
        };
    let mut out = Vec::new();
    for (i, (name, namespace, interface)) in entries.into_iter().enumerate() {
        if name.is_empty() {
            return Err(format!("network {} has no name", i + 1));
        }
        let interface = interface.unwrap_or_else(|| format!("net{}", i + 1));
        if out
            .iter()
            .any(|s: &NetworkSelection| s.interface == interface)
        {
            return Err(format!("interface {interface} is requested twice"));
        }
        out.push(NetworkSelection {
            name,
            namespace: namespace.unwrap_or_else(|| pod_namespace.to_string()),
            interface,
        });
    }
    Ok(out)
}

/// Reads a pod manifest, its networks annotation and its resource limits.
pub fn read_pod(path: &Path) -> Result<PodManifest> {
    let doc: PodDoc = read_yaml(path)?;
    let bad = |why: String| setup(format!("{}: {why}", path.display()));
    if doc.api_version != "v1" || doc.kind != "Pod" {
        return Err(bad(format!(
            "{} {} is not a v1 Pod",
            doc.api_version, doc.kind
        )));
    }
    let namespace = doc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let text = doc
        .metadata
        .annotations
        .get(NETWORKS_ANNOTATION)
        .ok_or_else(|| bad(format!("no {NETWORKS_ANNOTATION} annotation")))?;
    let networks =
        parse_networks(text, &namespace).map_err(|e| bad(format!("{NETWORKS_ANNOTATION}: {e}")))?;
    let mut limits = BTreeMap::new();
    for c in &doc.spec.containers {
        for (k, v) in &c.resources.limits {
            let q = match v {
                serde_yaml_ng::Value::String(s) => s.clone(),
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                other => return Err(bad(format!("limit {k} is not a quantity: {other:?}"))),
            };
            limits.insert(k.clone(), q);
        }
    }
    Ok(PodManifest {
        name: doc.metadata.name,
        namespace,
        networks,
        limits,
        path: path.to_path_buf(),
    })
}

/// Resolves a pod's networks to NADs as Multus does (by namespace and
/// name), checking that the pod requests each NAD's device-plugin resource
/// (without it the device plugin allocates no VF and Multus has no
/// `deviceID` to pass). Returns (NAD, interface name) in annotation order.
pub fn resolve_networks<'a>(pod: &PodManifest, nads: &'a [Nad]) -> Result<Vec<(&'a Nad, String)>> {
    let mut out = Vec::new();
    for sel in &pod.networks {
        let nad = nads
            .iter()
            .find(|n| n.name == sel.name && n.namespace == sel.namespace)
            .ok_or_else(|| {
                setup(format!(
                    "pod {}: no NetworkAttachmentDefinition {}/{}",
                    pod.name, sel.namespace, sel.name
                ))
            })?;
        if !pod.limits.contains_key(&nad.resource_name) {
            return Err(setup(format!(
                "pod {} uses {}/{} but does not request its resource {}",
                pod.name, nad.namespace, nad.name, nad.resource_name
            )));
        }
        out.push((nad, sel.interface.clone()));
    }
    Ok(out)
}

/// A pool as ippool loads it (only what the topology and the tests need).
#[derive(Clone, Debug)]
pub struct PoolFile {
    pub name: String,
    /// `172.16.11.0/24`
    pub subnet: String,
    /// Empty when the pool has none.
    pub gateway: String,
    /// How many addresses it hands out.
    pub size: u128,
    /// The first address it hands out.
    pub first: String,
    /// The file it came from.
    pub origin: String,
}

impl PoolFile {
    /// The gateway with the subnet's prefix length (`172.16.11.254/24`).
    pub fn gateway_cidr(&self) -> String {
        let len = self.subnet.split('/').nth(1).unwrap_or("32");
        format!("{}/{len}", self.gateway)
    }

    pub fn is_v6(&self) -> bool {
        self.subnet.contains(':')
    }
}

/// Every pool of `dir/*.json`, loaded and validated by ippool's own loader
/// (libcni::pool::load_pools): a file ippool would refuse fails here.
pub fn read_pools(dir: &Path) -> Result<Vec<PoolFile>> {
    let pools = libcni::pool::load_pools(Some(dir), &[])
        .map_err(|e| setup(format!("pool files in {}: {e}", dir.display())))?;
    Ok(pools
        .into_iter()
        .map(|p| {
            let first = p
                .addresses
                .ranges()
                .first()
                .map(|(lo, _)| libcni::pool::from_u128(*lo, p.is_v6()).to_string())
                .unwrap_or_default();
            PoolFile {
                name: p.name.clone(),
                subnet: p.subnet.to_string(),
                gateway: p.gateway.map(|g| g.to_string()).unwrap_or_default(),
                size: p.size(),
                first,
                origin: p.origin.clone(),
            }
        })
        .collect())
}

/// The manifests of one directory (`*.yaml`, by `kind`): its
/// NetworkAttachmentDefinitions and its pods, each sorted by file name.
/// Any other kind is an error.
pub fn read_manifest_dir(dir: &Path) -> Result<(Vec<Nad>, Vec<PodManifest>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| setup(format!("{}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let (mut nads, mut pods) = (Vec::new(), Vec::new());
    for f in files {
        #[derive(Debug, Deserialize)]
        struct Probe {
            kind: String,
        }
        let probe: Probe = read_yaml(&f)?;
        match probe.kind.as_str() {
            "NetworkAttachmentDefinition" => nads.push(read_nad(&f)?),
            "Pod" => pods.push(read_pod(&f)?),
            other => return Err(setup(format!("{}: unexpected kind {other}", f.display()))),
        }
    }
    Ok((nads, pods))
}
