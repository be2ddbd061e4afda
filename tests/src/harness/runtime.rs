//! A libcni-like runtime (containernetworking/cni 1.2) over config lists.
//!
//! - ADD runs the plugins in order; each gets the list's `cniVersion` and
//!   `name` injected, `runtimeConfig` = the capability args its
//!   `capabilities` ask for, and the previous plugin's result as
//!   `prevResult`. The final result is cached in
//!   `<cache>/results/<network>-<containerID>-<ifname>` (libcni's
//!   `cniCacheV1` layout, the config list base64-encoded). A failed ADD is
//!   not undone here: as with libcni, the caller (kubelet) sends DEL.
//! - CHECK sends the cached result to every plugin (refused below 0.4.0 and
//!   without a cached result; skipped with `disableCheck`).
//! - DEL runs the plugins in reverse order, each with the cached result when
//!   there is one (none before 0.4.0), then drops the cache entry.
//! - GC first DELs every cached attachment of the network missing from the
//!   valid list, then (1.1.0 and no `disableGC`) sends GC with
//!   `cni.dev/valid-attachments` (and `cni.dev/attachments`, as libcni HEAD)
//!   to every plugin; it goes on after an error and reports them all.
//! - STATUS (1.1.0) goes to every plugin.
//!
//! The version used is `cniVersion`, or with `cniVersions` the highest one
//! the runtime supports ([`Runtime::max_version`]: 1.1.0, or 1.0.0 to act as
//! libcni 1.1). Results are not converted between versions: every plugin of
//! a list speaks the list's version. Unlike libcni, the plugins get a clean
//! environment (`PATH`, the `CNI_*` variables and the runtime's own `env`),
//! so a test does not depend on the caller's variables.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{Error, PluginFailure, Result, setup};
use crate::{Outcome, run_with_stdin};

/// The CNI versions the runtime knows, oldest first.
pub const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

fn version_rank(v: &str) -> Option<usize> {
    VERSIONS.iter().position(|x| *x == v)
}

/// A network config list, validated as libcni loads it.
#[derive(Clone, Debug)]
pub struct Conflist {
    pub json: Value,
    pub name: String,
    /// `cniVersion` as written.
    pub version: String,
}

impl Conflist {
    /// Parses and validates a config list: `cniVersion` (a known version),
    /// `name` (a valid network name), `cniVersions` (known versions
    /// including `cniVersion`), and a non-empty `plugins` list of objects
    /// with a `type`.
    pub fn parse(text: &str, origin: &str) -> Result<Conflist> {
        let json: Value = serde_json::from_str(text)
            .map_err(|e| setup(format!("{origin}: not valid JSON: {e}")))?;
        Conflist::from_json(json, origin)
    }

    pub fn from_json(json: Value, origin: &str) -> Result<Conflist> {
        let bad = |why: String| setup(format!("{origin}: {why}"));
        let obj = json
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let version = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .filter(|v| version_rank(v).is_some())
            .ok_or_else(|| {
                bad(format!(
                    "cniVersion {:?} is not a CNI version",
                    obj.get("cniVersion")
                ))
            })?
            .to_string();
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| valid_network_name(n))
            .ok_or_else(|| {
                bad(format!(
                    "name {:?} is not a valid network name",
                    obj.get("name")
                ))
            })?
            .to_string();
        if let Some(vs) = obj.get("cniVersions") {
            let list: Vec<&str> = vs
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let ok = !list.is_empty()
                && vs.as_array().map(Vec::len) == Some(list.len())
                && list.iter().all(|v| version_rank(v).is_some())
                && list.contains(&version.as_str());
            if !ok {
                return Err(bad(format!(
                    "cniVersions {vs} must list known versions including {version}"
                )));
            }
        }
        let plugins = obj
            .get("plugins")
            .and_then(Value::as_array)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("plugins must be a non-empty list".into()))?;
        for (i, p) in plugins.iter().enumerate() {
            let t = p.get("type").and_then(Value::as_str).unwrap_or_default();
            if t.is_empty() || t.contains('/') || t.starts_with('.') {
                return Err(bad(format!("plugins[{i}] has no valid type: {p}")));
            }
        }
        Ok(Conflist {
            json,
            name,
            version,
        })
    }

    /// Reads a `.conflist` file.
    pub fn load(path: &Path) -> Result<Conflist> {
        let text =
            std::fs::read_to_string(path).map_err(|e| setup(format!("{}: {e}", path.display())))?;
        Conflist::parse(&text, &path.display().to_string())
    }

    pub fn plugins(&self) -> &[Value] {
        self.json["plugins"].as_array().map_or(&[], Vec::as_slice)
    }

    pub fn types(&self) -> Vec<String> {
        self.plugins()
            .iter()
            .map(|p| p["type"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The version a runtime supporting up to `max` uses for this list.
    pub fn effective_version(&self, max: &str) -> String {
        let max_rank = version_rank(max).unwrap_or(VERSIONS.len() - 1);
        let best = self.json["cniVersions"].as_array().and_then(|vs| {
            vs.iter()
                .filter_map(Value::as_str)
                .filter(|v| version_rank(v).is_some_and(|r| r <= max_rank))
                .max_by_key(|v| version_rank(v))
        });
        best.unwrap_or(&self.version).to_string()
    }

    /// The ippool pool names its `ipam` sections select, v4 then v6.
    pub fn pool_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in self.plugins() {
            for key in ["default_ipv4_ippool", "default_ipv6_ippool"] {
                match &p["ipam"][key] {
                    Value::String(s) => out.push(s.clone()),
                    Value::Array(a) => {
                        out.extend(a.iter().filter_map(Value::as_str).map(str::to_string));
                    }
                    _ => {}
                }
            }
        }
        out
    }
}

/// CNI network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
fn valid_network_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// One attachment as a runtime describes it to libcni (`RuntimeConf`).
#[derive(Clone, Debug)]
pub struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
    /// Capability args (`deviceID`, `infinibandGUID`, `ips`, `mac`...).
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    pub fn cni_args(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// A libcni-like runtime: where plugins are, where results are cached, and
/// the node (netns) the plugins run in.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub cni_path: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// Run every plugin in this netns (a node); None = the caller's.
    pub node_netns: Option<String>,
    /// Extra environment for the plugins (e.g. `K8S_NODE_NAME`).
    pub env: Vec<(String, String)>,
    /// The highest CNI version this runtime speaks.
    pub max_version: String,
}

impl Runtime {
    pub fn new(cni_path: Vec<PathBuf>, cache_dir: PathBuf) -> Runtime {
        Runtime {
            cni_path,
            cache_dir,
            node_netns: None,
            env: Vec::new(),
            max_version: "1.1.0".into(),
        }
    }

    fn find(&self, plugin_type: &str) -> Result<PathBuf> {
        self.cni_path
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                setup(format!(
                    "plugin {plugin_type:?} not found in {:?}",
                    self.cni_path
                ))
            })
    }

    /// `CNI_PATH` as the plugins get it.
    pub fn cni_path_var(&self) -> String {
        self.cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The config one plugin gets: its object plus `cniVersion`, `name`,
    /// `runtimeConfig` (capabilities it declares that the runtime has) and
    /// `prevResult`.
    fn plugin_conf(
        list: &Conflist,
        version: &str,
        plugin: &Value,
        att: Option<&Attachment>,
        prev: Option<&Value>,
    ) -> Value {
        let mut c = plugin.clone();
        c["cniVersion"] = json!(version);
        c["name"] = json!(list.name);
        if let (Some(att), Some(caps)) = (att, plugin["capabilities"].as_object()) {
            let rc: Map<String, Value> = caps
                .iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .filter_map(|(k, _)| att.capability_args.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            if !rc.is_empty() {
                c["runtimeConfig"] = Value::Object(rc);
            }
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    /// Execs one plugin; returns its parsed stdout (Null when empty).
    pub fn exec(
        &self,
        command: &str,
        plugin_type: &str,
        conf: &Value,
        att: Option<&Attachment>,
    ) -> Result<Value> {
        let bin = self.find(plugin_type)?;
        let mut cmd = match &self.node_netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={ns}")).arg("--").arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", self.cni_path_var());
        if let Some(a) = att {
            cmd.env("CNI_CONTAINERID", &a.container_id)
                .env("CNI_NETNS", &a.netns)
                .env("CNI_IFNAME", &a.ifname);
            if !a.args.is_empty() {
                cmd.env("CNI_ARGS", a.cni_args());
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out: Outcome = run_with_stdin(cmd, conf.to_string().as_bytes());
        let parsed: Value = if out.stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(out.stdout.trim()).unwrap_or(Value::String(out.stdout.clone()))
        };
        if out.status != 0 {
            return Err(Error::Plugin(Box::new(PluginFailure {
                plugin: plugin_type.to_string(),
                command: command.to_string(),
                status: out.status,
                error: parsed,
                stderr: out.stderr,
            })));
        }
        Ok(parsed)
    }

    fn cache_file(&self, list: &Conflist, att: &Attachment) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{}-{}-{}", list.name, att.container_id, att.ifname))
    }

    /// The cached ADD result of an attachment, if any.
    pub fn cached_result(&self, list: &Conflist, att: &Attachment) -> Option<Value> {
        let bytes = std::fs::read(self.cache_file(list, att)).ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        (v["kind"] == "cniCacheV1").then(|| v["result"].clone())
    }

    /// Loses an attachment without DEL, as a runtime whose cache was lost
    /// in a crash: only GC can release what its plugins hold.
    pub fn forget(&self, list: &Conflist, att: &Attachment) -> Result<()> {
        let file = self.cache_file(list, att);
        std::fs::remove_file(&file).map_err(|e| setup(format!("removing {}: {e}", file.display())))
    }

    /// ADD: the chain in order, prevResult threaded; caches the final result.
    pub fn add(&self, list: &Conflist, att: &Attachment) -> Result<Value> {
        let version = list.effective_version(&self.max_version);
        let mut prev: Option<Value> = None;
        for p in list.plugins() {
            let conf = Runtime::plugin_conf(list, &version, p, Some(att), prev.as_ref());
            let t = p["type"].as_str().unwrap_or_default();
            let mut result = self.exec("ADD", t, &conf, Some(att))?;
            if !result.is_object() {
                return Err(setup(format!(
                    "plugin {t} (ADD) printed no result: {result}"
                )));
            }
            if result.get("cniVersion").is_none() {
                result["cniVersion"] = json!(version);
            }
            prev = Some(result);
        }
        let result = prev.unwrap_or(Value::Null);
        let entry = json!({
            "kind": "cniCacheV1",
            "containerId": att.container_id,
            "config": base64::engine::general_purpose::STANDARD.encode(list.json.to_string()),
            "ifName": att.ifname,
            "networkName": list.name,
            "netns": att.netns,
            "cniArgs": att.args.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "capabilityArgs": att.capability_args,
            "result": result,
        });
        let file = self.cache_file(list, att);
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&file, entry.to_string()));
        written.map_err(|e| setup(format!("caching {}: {e}", file.display())))?;
        Ok(result)
    }

    /// CHECK: every plugin with the cached result.
    pub fn check(&self, list: &Conflist, att: &Attachment) -> Result<()> {
        let version = list.effective_version(&self.max_version);
        if version_rank(&version) < version_rank("0.4.0") {
            return Err(setup(format!(
                "configuration version {version} does not support CHECK"
            )));
        }
        if list.json["disableCheck"].as_bool() == Some(true) {
            return Ok(());
        }
        let cached = self.cached_result(list, att).ok_or_else(|| {
            setup(format!(
                "no cached result for {} {} {}",
                list.name, att.container_id, att.ifname
            ))
        })?;
        for p in list.plugins() {
            let conf = Runtime::plugin_conf(list, &version, p, Some(att), Some(&cached));
            self.exec(
                "CHECK",
                p["type"].as_str().unwrap_or_default(),
                &conf,
                Some(att),
            )?;
        }
        Ok(())
    }

    /// DEL: the chain in reverse, each with the cached result when there is
    /// one (none before 0.4.0); then the cache entry goes.
    pub fn del(&self, list: &Conflist, att: &Attachment) -> Result<()> {
        let version = list.effective_version(&self.max_version);
        let cached = if version_rank(&version) >= version_rank("0.4.0") {
            self.cached_result(list, att)
        } else {
            None
        };
        for p in list.plugins().iter().rev() {
            let conf = Runtime::plugin_conf(list, &version, p, Some(att), cached.as_ref());
            self.exec(
                "DEL",
                p["type"].as_str().unwrap_or_default(),
                &conf,
                Some(att),
            )?;
        }
        let file = self.cache_file(list, att);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(setup(format!("removing {}: {e}", file.display()))),
        }
    }

    /// The attachments cached for this network (libcni's
    /// GetCachedAttachments).
    pub fn cached_attachments(&self, list: &Conflist) -> Vec<Attachment> {
        let Ok(dir) = std::fs::read_dir(self.cache_dir.join("results")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in dir.flatten() {
            let Some(v) = std::fs::read(e.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            else {
                continue;
            };
            if v["kind"] != "cniCacheV1" || v["networkName"] != list.name.as_str() {
                continue;
            }
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let args = v["cniArgs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|kv| Some((kv[0].as_str()?.into(), kv[1].as_str()?.into())))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Attachment {
                container_id: s("containerId"),
                netns: s("netns"),
                ifname: s("ifName"),
                args,
                capability_args: v["capabilityArgs"].as_object().cloned().unwrap_or_default(),
            });
        }
        out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        out
    }

    /// GC with the attachments the runtime still knows, `(containerID,
    /// ifname)`; returns the cached attachments it DELeted. Every step runs
    /// even after a failure; the failures come back together.
    pub fn gc(&self, list: &Conflist, valid: &[(String, String)]) -> Result<Vec<Attachment>> {
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for att in self.cached_attachments(list) {
            let key = (att.container_id.clone(), att.ifname.clone());
            if !valid.contains(&key) {
                match self.del(list, &att) {
                    Ok(()) => deleted.push(att),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        let version = list.effective_version(&self.max_version);
        if version_rank(&version) >= version_rank("1.1.0")
            && list.json["disableGC"].as_bool() != Some(true)
        {
            let attachments: Vec<Value> = valid
                .iter()
                .map(|(c, i)| json!({"containerID": c, "ifname": i}))
                .collect();
            for p in list.plugins() {
                let mut conf = Runtime::plugin_conf(list, &version, p, None, None);
                conf["cni.dev/valid-attachments"] = json!(attachments);
                conf["cni.dev/attachments"] = json!(attachments);
                if let Err(e) = self.exec("GC", p["type"].as_str().unwrap_or_default(), &conf, None)
                {
                    errors.push(e.to_string());
                }
            }
        }
        if errors.is_empty() {
            Ok(deleted)
        } else {
            Err(setup(format!("GC of {}: {}", list.name, errors.join("; "))))
        }
    }

    /// STATUS to every plugin (1.1.0; earlier lists have none).
    pub fn status(&self, list: &Conflist) -> Result<()> {
        let version = list.effective_version(&self.max_version);
        if version_rank(&version) < version_rank("1.1.0") {
            return Ok(());
        }
        for p in list.plugins() {
            let conf = Runtime::plugin_conf(list, &version, p, None, None);
            self.exec(
                "STATUS",
                p["type"].as_str().unwrap_or_default(),
                &conf,
                None,
            )?;
        }
        Ok(())
    }
}
