//! Helpers of the crash-consistency tests (tests/crash_matrix.rs and
//! tests/soak.rs): running a plugin and telling a SIGKILL from an ordinary
//! failure, listing the failpoints the source defines, snapshotting what an
//! attachment may change (files with their content, a netns's links,
//! addresses, routes and rules), and a seeded RNG for reproducible runs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use serde_json::Value;

/// One plugin invocation as a runtime makes it: a clean environment with
/// the CNI_* variables, the config on stdin.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub command: String,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    /// CNI_PATH: where delegated plugins (IPAM) are found.
    pub cni_path: String,
    pub env: Vec<(String, String)>,
}

/// What one run did.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn succeeded(&self) -> bool {
        self.status.success()
    }

    /// Died of SIGKILL: what `FAILPOINTS=<name>=return(kill)` does, and only
    /// when the failpoint was reached (an ordinary error exits with 1).
    pub fn killed(&self) -> bool {
        self.status.signal() == Some(SIGKILL)
    }

    /// The parsed result (Null for empty output).
    pub fn result(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or(Value::Null)
    }

    /// One line saying how it ended, for reports.
    pub fn describe(&self) -> String {
        if let Some(sig) = self.status.signal() {
            return format!("killed by signal {sig}");
        }
        let r = self.result();
        let msg = r["msg"].as_str().unwrap_or_else(|| self.stdout.trim());
        format!(
            "exit {} (code {}): {}",
            self.status.code().unwrap_or(-1),
            r["code"],
            msg.chars().take(300).collect::<String>()
        )
    }
}

/// SIGKILL's number (9 on every Linux architecture).
const SIGKILL: i32 = 9;

impl Invocation {
    pub fn new(command: &str, container_id: &str, netns: &str, ifname: &str) -> Invocation {
        Invocation {
            command: command.into(),
            container_id: container_id.into(),
            netns: Some(netns.into()),
            ifname: ifname.into(),
            cni_path: String::new(),
            env: Vec::new(),
        }
    }

    /// The same attachment, another command.
    pub fn with(&self, command: &str) -> Invocation {
        let mut c = self.clone();
        c.command = command.into();
        c
    }

    /// This invocation with `FAILPOINTS=<failpoint>=return(kill)`.
    pub fn killed_at(&self, failpoint: &str) -> Invocation {
        let mut c = self.clone();
        c.env
            .push(("FAILPOINTS".into(), format!("{failpoint}=return(kill)")));
        c
    }

    pub fn run(&self, bin: &Path, conf: &Value) -> Run {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_PATH", &self.cni_path);
        if let Some(ns) = &self.netns {
            cmd.env("CNI_NETNS", ns);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin killed before reading stdin closes the pipe: not our error.
            let _ = pipe.write_all(conf.to_string().as_bytes());
        }
        let out = child.wait_with_output().expect("wait for plugin");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// The workspace root (tests/ is one of its members).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Prefixes of failpoint names: a plugin's own (`<plugin>.<add|del>.after_<step>`)
/// and libcni's shared steps (`vf.`, `netdev.`, `state.`).
pub const FAILPOINT_PREFIXES: [&str; 8] = [
    "sriov",
    "ib-sriov",
    "rdma",
    "ippool",
    "coordinator",
    "vf",
    "netdev",
    "state",
];

fn looks_like_failpoint(lit: &str) -> bool {
    let Some((prefix, rest)) = lit.split_once('.') else {
        return false;
    };
    FAILPOINT_PREFIXES.contains(&prefix)
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        && (rest.contains("after_") || rest.contains("before_") || rest.contains("torn_"))
}

/// Every failpoint name the source defines: the string literals of
/// libcni/src and plugins/*/src that have a failpoint's shape (names are
/// always literals, never formatted, so this finds them all). Comment lines
/// are skipped.
pub fn failpoints_in_source(root: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root.join("libcni/src"), &mut files);
    walk(&root.join("plugins"), &mut files);
    assert!(
        !files.is_empty(),
        "no sources under {}: cannot list failpoints",
        root.display()
    );
    let mut names = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            // Odd-numbered pieces between quotes are literals (names hold no
            // escaped quotes).
            for (i, piece) in line.split('"').enumerate() {
                if i % 2 == 1 && looks_like_failpoint(piece) {
                    names.insert(piece.to_string());
                }
            }
        }
    }
    names
}

/// Every file under `dir`, relative path -> content: JSON records verbatim,
/// lock files as "(lock)", per-boot markers as "(boot marker)", the ippool file store's pools as their usage
/// (`FileStore::inspect`; the raw bytes hold a next-fit cursor and commit
/// sequence numbers that move on every operation by design), anything else
/// as text. Temporary files are included: a leftover one is a leak.
pub fn files_with_content(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
            let meta = std::fs::symlink_metadata(&p);
            if meta.as_ref().is_ok_and(|m| m.is_dir()) {
                out.insert(format!("{rel}/"), "(dir)".into());
                walk(base, &p, out);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let content = if name.ends_with(".lock") {
                "(lock)".to_string()
            } else if crate::harness::is_boot_marker(&name) {
                "(boot marker)".to_string()
            } else if let Some(pool) = name.strip_suffix(".state") {
                pool_usage(dir, pool)
            } else {
                match std::fs::read(&p) {
                    Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                    Err(e) => format!("(unreadable: {e})"),
                }
            };
            out.insert(rel, content);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A pool's usage as the file store reports it (no cursor).
pub fn pool_usage(data_dir: &Path, pool: &str) -> String {
    match libcni::pool::FileStore::open(data_dir).and_then(|s| s.inspect(pool)) {
        Ok(Some(v)) => v.to_string(),
        Ok(None) => "(no pool state)".into(),
        Err(e) => format!("(pool unreadable: {e})"),
    }
}

fn ip_json(ns: &str, args: &[&str]) -> Value {
    let mut full = vec!["-j", "-n", ns];
    full.extend_from_slice(args);
    let out = Command::new("ip").args(&full).output().expect("run ip");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// What a network namespace holds that a plugin may change: links (name,
/// MAC, MTU, up or down), global and link-local addresses, the routes of
/// every table and the rules, each family.
pub fn netns_view(ns: &str) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    for l in ip_json(ns, &["link", "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let up = l["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"));
        v.insert(
            format!("{ns} link {}", l["ifname"].as_str().unwrap_or("?")),
            format!("mac={} mtu={} up={up}", l["address"], l["mtu"]),
        );
    }
    for l in ip_json(ns, &["addr", "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let mut addrs: Vec<String> = l["addr_info"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or("?"), a["prefixlen"]))
            .collect();
        addrs.sort();
        v.insert(
            format!("{ns} addrs {}", l["ifname"].as_str().unwrap_or("?")),
            addrs.join(" "),
        );
    }
    for fam in ["-4", "-6"] {
        let mut routes: Vec<String> = ip_json(ns, &[fam, "route", "show", "table", "all"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| r.to_string())
            .collect();
        routes.sort();
        v.insert(format!("{ns} routes {fam}"), routes.join("\n"));
        let mut rules: Vec<String> = ip_json(ns, &[fam, "rule", "show"])
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| r.to_string())
            .collect();
        rules.sort();
        v.insert(format!("{ns} rules {fam}"), rules.join("\n"));
    }
    v
}

/// The keys whose values differ (or exist on one side only), with both values.
pub fn diff(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| {
            format!(
                "{k}: {:?} -> {:?}",
                before.get(k).map(String::as_str).unwrap_or("(none)"),
                after.get(k).map(String::as_str).unwrap_or("(none)")
            )
        })
        .collect()
}

/// splitmix64: a small seeded generator, so a soak run is reproduced from
/// the seed it prints (no crate needed for a test's coin flips).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed from `$name` when set (decimal or 0x-hex), else from the clock.
    pub fn seed_from_env(name: &str) -> u64 {
        if let Ok(s) = std::env::var(name) {
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            return parsed.unwrap_or_else(|e| panic!("{name}={s:?} is not a number: {e}"));
        }
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failpoint_shapes() {
        assert!(looks_like_failpoint("sriov.add.after_move"));
        assert!(looks_like_failpoint("ib-sriov.del.after_rdma"));
        assert!(looks_like_failpoint("state.double.torn_write"));
        assert!(looks_like_failpoint("vf.after_link_state"));
        assert!(!looks_like_failpoint("sriov.add.after_move=return"));
        assert!(!looks_like_failpoint("sriov"));
        assert!(!looks_like_failpoint("rdma.json"));
    }

    #[test]
    fn the_source_defines_failpoints_of_every_plugin() {
        let names = failpoints_in_source(&workspace_root());
        for p in ["sriov", "ib-sriov", "rdma", "ippool", "coordinator"] {
            for phase in ["add", "del"] {
                assert!(
                    names
                        .iter()
                        .any(|n| n.starts_with(&format!("{p}.{phase}."))),
                    "no {p}.{phase}.* failpoint in {names:?}"
                );
            }
        }
    }

    #[test]
    fn rng_is_reproducible() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert!((0..100).all(|_| a.below(3) < 3));
    }
}
