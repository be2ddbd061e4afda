//! Everything a plugin run could change, for before/after equality: files
//! under the test's directories (type, mode, owner, content hash, symlink
//! target) and, per network namespace, links, addresses, routes and rules.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

#[derive(Clone, Debug, Default)]
pub struct Watch {
    pub dirs: Vec<PathBuf>,
    /// Named network namespaces (`ip netns` names).
    pub netns: Vec<String>,
    /// Links of the test's own netns (the "host") to watch by name.
    pub host_links: Vec<String>,
}

pub type Snapshot = BTreeMap<String, String>;

fn content_hash(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            format!("len={} hash={:016x}", bytes.len(), h.finish())
        }
        Err(e) => format!("unreadable: {e}"),
    }
}

fn walk(dir: &Path, out: &mut Snapshot) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = meta.file_type();
        let perms = format!("{:o} uid={}", meta.mode() & 0o7777, meta.uid());
        let key = format!("file {}", p.display());
        if ft.is_symlink() {
            let target = std::fs::read_link(&p).unwrap_or_default();
            out.insert(key, format!("symlink -> {}", target.display()));
        } else if ft.is_dir() {
            out.insert(key, format!("dir {perms}"));
            walk(&p, out);
        } else if !ft.is_file() {
            // A FIFO or device a case planted: never read it (it would block).
            out.insert(key, format!("special {perms}"));
        } else if p.extension().is_some_and(|x| x == "lock") {
            // Lock files persist by design (as sriov-cni's); their
            // targets, if symlinked, are what matters.
        } else {
            out.insert(key, format!("file {perms} {}", content_hash(&p)));
        }
    }
}

/// IPv6 link-local addresses and their routes come and go with the kernel's
/// duplicate address detection, whatever a plugin does: not compared.
fn is_link_local(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.starts_with("fe80:"))
}

fn ip_json(ns: Option<&str>, args: &[&str]) -> Value {
    let mut cmd = Command::new("ip");
    cmd.arg("-j");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(args).output().expect("run ip");
    if !out.status.success() {
        return Value::String(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Links with their addresses: what a plugin configures, not counters or
/// carrier state, which the kernel changes on its own.
fn links(ns: Option<&str>, only: Option<&[String]>, out: &mut Snapshot, tag: &str) {
    let all = ip_json(ns, &["-d", "addr", "show"]);
    let mut seen = Vec::new();
    for l in all.as_array().cloned().unwrap_or_default() {
        let name = l["ifname"].as_str().unwrap_or_default().to_string();
        if only.is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let up = l["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"));
        let mut addrs: Vec<String> = l["addr_info"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|a| !is_link_local(&a["local"]))
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
            .collect();
        addrs.sort();
        out.insert(
            format!("{tag} link {name}"),
            format!(
                "mac={} mtu={} up={up} kind={} altnames={} addrs={}",
                l["address"],
                l["mtu"],
                l["linkinfo"]["info_kind"],
                l["altnames"],
                addrs.join(",")
            ),
        );
        seen.push(name);
    }
    for name in only.unwrap_or_default() {
        if !seen.contains(name) {
            out.insert(format!("{tag} link {name}"), "absent".into());
        }
    }
}

fn routing(ns: &str, out: &mut Snapshot) {
    for fam in ["-4", "-6"] {
        let routes = ip_json(Some(ns), &[fam, "route", "show", "table", "all"]);
        let mut r: Vec<String> = routes
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|r| !is_link_local(&r["dst"]))
            .map(Value::to_string)
            .collect();
        r.sort();
        out.insert(format!("netns {ns} routes {fam}"), r.join("\n"));
        let rules = ip_json(Some(ns), &[fam, "rule", "show"]);
        out.insert(format!("netns {ns} rules {fam}"), rules.to_string());
    }
}

pub fn take(w: &Watch) -> Snapshot {
    let mut s = Snapshot::new();
    for d in &w.dirs {
        walk(d, &mut s);
    }
    for ns in &w.netns {
        links(Some(ns), None, &mut s, &format!("netns {ns}"));
        routing(ns, &mut s);
    }
    if !w.host_links.is_empty() {
        links(None, Some(&w.host_links), &mut s, "host");
    }
    s
}

/// Waits until two snapshots 300 ms apart agree (IPv6 DAD, link-local
/// routes and carrier settle after a link comes up), at most 10 s.
pub fn settled(w: &Watch) -> Snapshot {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut last = take(w);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = take(w);
        if now == last || std::time::Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The differences, one line each ("- before" / "+ after").
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => out.push(format!("- {k}: {v}")),
            Some(w) if w != v => out.push(format!("~ {k}: {v}  =>  {w}")),
            _ => {}
        }
    }
    for (k, v) in after {
        if !before.contains_key(k) {
            out.push(format!("+ {k}: {v}"));
        }
    }
    out
}
