//! The hostile-input corpus (tests/corpus/hostile): one JSON file per case,
//! `common/` for cases every plugin gets, `<plugin>/` for the rest. The
//! format is described in tests/corpus/hostile/README.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

pub const PLUGINS: [&str; 5] = ["sriov", "ib-sriov", "rdma", "ippool", "coordinator"];
pub const COMMANDS: [&str; 6] = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"];

/// What one command of a case must end with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A CNI error with this code, a non-zero exit.
    Code(u64),
    /// Success (exit 0, no error JSON): tolerated input, e.g. DEL of a
    /// config that became invalid, or a GC keep list with foreign entries.
    Ok,
}

/// Where the stdin of a case comes from.
#[derive(Clone, Debug)]
pub enum Stdin {
    /// The plugin's valid base config with `config` merged in (RFC 7396).
    Patched(Value),
    /// Exactly these bytes (placeholders substituted in text).
    Text(String),
    Bytes(Vec<u8>),
    /// `prefix` + `unit` x `times` + `suffix`: huge or deeply nested input.
    Repeat {
        prefix: String,
        unit: String,
        times: usize,
        suffix: String,
    },
}

#[derive(Clone, Debug)]
pub struct Case {
    /// `common/invalid-json.json`
    pub name: String,
    pub about: String,
    pub expect: BTreeMap<String, Expect>,
    /// Per command: substrings its error message must contain.
    pub msg: BTreeMap<String, Vec<String>>,
    /// Changes allowed (substrings of snapshot lines), each with a reason in
    /// the case's `about`: a simulator's call log that a rollback grows.
    pub tolerate: Vec<String>,
    /// Substrings that must appear nowhere in stdout or stderr (secrets).
    pub never: Vec<String>,
    /// Variables to set (string) or remove (null); hex values for bytes
    /// that are not UTF-8 go in `env_hex`.
    pub env: Map<String, Value>,
    pub env_hex: BTreeMap<String, Vec<u8>>,
    pub stdin: Stdin,
    pub setup: Vec<Value>,
}

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/hostile")
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.split_whitespace().collect();
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd hex length in {s:?}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("{s:?}: {e}")))
        .collect()
}

fn expect_map(v: &Value, name: &str) -> Result<BTreeMap<String, Expect>, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{name}: expect must be an object"))?;
    let mut out = BTreeMap::new();
    for (cmd, e) in obj {
        if !COMMANDS.contains(&cmd.as_str()) {
            return Err(format!("{name}: unknown command {cmd}"));
        }
        let e = match e {
            Value::String(s) if s == "ok" => Expect::Ok,
            Value::Number(n) => Expect::Code(n.as_u64().ok_or(format!("{name}: bad code {n}"))?),
            other => return Err(format!("{name}: {cmd}: want a code or \"ok\", got {other}")),
        };
        out.insert(cmd.clone(), e);
    }
    if out.is_empty() {
        return Err(format!("{name}: expect names no command"));
    }
    Ok(out)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Parses one case file for `plugin` (None: the case does not apply).
fn parse(v: &Value, name: &str, plugin: &str) -> Result<Option<Case>, String> {
    const KEYS: [&str; 12] = [
        "about", "plugins", "expect", "msg", "env", "env_hex", "config", "stdin", "setup",
        "override", "tolerate", "never",
    ];
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{name}: not an object"))?;
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("{name}: unknown key {k:?}"));
    }
    if let Some(list) = obj.get("plugins") {
        let list = strings(Some(list));
        if let Some(p) = list.iter().find(|p| !PLUGINS.contains(&p.as_str())) {
            return Err(format!("{name}: unknown plugin {p}"));
        }
        if !list.iter().any(|p| p == plugin) {
            return Ok(None);
        }
    }
    let about = obj
        .get("about")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{name}: \"about\" is required"))?;
    let mut expect = expect_map(obj.get("expect").unwrap_or(&Value::Null), name)?;
    let mut msg_spec = obj.get("msg").cloned().unwrap_or(Value::Null);
    if let Some(o) = obj.get("override").and_then(|o| o.get(plugin)) {
        if let Some(e) = o.get("expect") {
            expect = expect_map(e, name)?;
        }
        if let Some(m) = o.get("msg") {
            msg_spec = m.clone();
        }
    }
    // `msg`: a list for every command, or {command: list}.
    let msg = expect
        .keys()
        .map(|cmd| {
            let list = match &msg_spec {
                Value::Object(per) => strings(per.get(cmd)),
                other => strings(Some(other)),
            };
            (cmd.clone(), list)
        })
        .collect();
    let mut env_hex = BTreeMap::new();
    for (k, h) in obj
        .get("env_hex")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
    {
        env_hex.insert(k, hex(h.as_str().unwrap_or_default())?);
    }
    let stdin = match (obj.get("stdin"), obj.get("config")) {
        (Some(_), Some(_)) => return Err(format!("{name}: stdin and config exclude each other")),
        (None, c) => Stdin::Patched(c.cloned().unwrap_or(Value::Null)),
        (Some(Value::String(s)), None) => Stdin::Text(s.clone()),
        (Some(Value::Object(o)), None) if o.contains_key("hex") => {
            Stdin::Bytes(hex(o["hex"].as_str().unwrap_or_default())?)
        }
        (Some(Value::Object(o)), None) if o.contains_key("repeat") => Stdin::Repeat {
            prefix: o.get("prefix").and_then(Value::as_str).unwrap_or("").into(),
            unit: o["repeat"].as_str().unwrap_or_default().into(),
            times: o.get("times").and_then(Value::as_u64).unwrap_or(1) as usize,
            suffix: o.get("suffix").and_then(Value::as_str).unwrap_or("").into(),
        },
        (Some(other), None) => return Err(format!("{name}: bad stdin {other}")),
    };
    Ok(Some(Case {
        name: name.to_string(),
        about: about.to_string(),
        expect,
        msg,
        env: obj
            .get("env")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        env_hex,
        stdin,
        tolerate: strings(obj.get("tolerate")),
        never: strings(obj.get("never")),
        setup: obj
            .get("setup")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    }))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.extension().is_some_and(|x| x == "json"));
    out.sort();
    out
}

/// Every case for `plugin`: `common/` then `<plugin>/`.
pub fn load(plugin: &str) -> Result<Vec<Case>, String> {
    let root = corpus_dir();
    let mut cases = Vec::new();
    for sub in ["common", plugin] {
        for f in files(&root.join(sub)) {
            let name = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
            let text = std::fs::read_to_string(&f).map_err(|e| format!("{name}: {e}"))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| format!("{name}: {e}"))?;
            if sub != "common" && v.get("plugins").is_some() {
                return Err(format!("{name}: \"plugins\" belongs in common/ cases only"));
            }
            if let Some(case) = parse(&v, &name, plugin)? {
                cases.push(case);
            }
        }
    }
    Ok(cases)
}

/// RFC 7396 merge patch: objects merge, null removes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Expands generators in a config patch: `{"$repeat": s, "times": n}` is s
/// repeated n times, `{"$nest": n, "leaf": v}` is v inside n arrays.
pub fn expand(v: &Value) -> Value {
    match v {
        Value::Object(o) if o.contains_key("$repeat") => {
            let unit = o["$repeat"].as_str().unwrap_or_default();
            let times = o.get("times").and_then(Value::as_u64).unwrap_or(1) as usize;
            Value::String(unit.repeat(times))
        }
        Value::Object(o) if o.contains_key("$nest") => {
            let mut leaf = o.get("leaf").cloned().unwrap_or(Value::Null);
            for _ in 0..o["$nest"].as_u64().unwrap_or(0) {
                leaf = Value::Array(vec![leaf]);
            }
            leaf
        }
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), expand(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(expand).collect()),
        other => other.clone(),
    }
}

/// Replaces `{name}` placeholders in every string of `v`.
pub fn substitute(v: &Value, vars: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(subst_str(s, vars)),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (subst_str(k, vars), substitute(v, vars)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, vars)).collect()),
        other => other.clone(),
    }
}

pub fn subst_str(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}
