//! The CNI_* environment, validated per command.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::ids::{ContainerId, IfName, InvalidId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// ADD, DEL and CHECK act on one attachment.
    pub fn has_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error(
        "environment variable CNI_COMMAND={0:?} is not one of ADD, DEL, CHECK, GC, STATUS, VERSION"
    )]
    UnknownCommand(String),
    #[error("environment variable {var}: {source}")]
    Invalid {
        var: &'static str,
        #[source]
        source: InvalidId,
    },
    #[error("environment variable CNI_NETNS={0:?} must be an absolute path")]
    BadNetns(String),
    #[error("CNI_ARGS: {0}")]
    Args(String),
}

/// One runtime invocation's environment.
#[derive(Clone, Debug)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: Option<ContainerId>,
    /// None when CNI_NETNS is missing or empty (allowed on DEL).
    pub netns: Option<PathBuf>,
    pub ifname: Option<IfName>,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads the environment through `get` (std::env::var in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, EnvError> {
        let command_str = get("CNI_COMMAND").ok_or(EnvError::Missing("CNI_COMMAND"))?;
        let command = Command::parse(&command_str).ok_or(EnvError::UnknownCommand(command_str))?;
        let nonempty = |var| get(var).filter(|v| !v.is_empty());
        let mut env = CniEnv {
            command,
            container_id: None,
            netns: None,
            ifname: None,
            args: CniArgs::default(),
            path: nonempty("CNI_PATH")
                .map(|p| {
                    p.split(':')
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        };
        if !command.has_attachment() {
            return Ok(env);
        }
        let cid = nonempty("CNI_CONTAINERID").ok_or(EnvError::Missing("CNI_CONTAINERID"))?;
        env.container_id = Some(
            ContainerId::parse(&cid).map_err(|source| EnvError::Invalid {
                var: "CNI_CONTAINERID",
                source,
            })?,
        );
        let ifname = nonempty("CNI_IFNAME").ok_or(EnvError::Missing("CNI_IFNAME"))?;
        env.ifname = Some(IfName::parse(&ifname).map_err(|source| EnvError::Invalid {
            var: "CNI_IFNAME",
            source,
        })?);
        match nonempty("CNI_NETNS") {
            Some(ns) if !ns.starts_with('/') || ns.contains('\0') => {
                return Err(EnvError::BadNetns(ns));
            }
            Some(ns) => env.netns = Some(PathBuf::from(ns)),
            None if command == Command::Del => {}
            None => return Err(EnvError::Missing("CNI_NETNS")),
        }
        env.args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        Ok(env)
    }

    pub fn from_process() -> Result<CniEnv, EnvError> {
        CniEnv::from_lookup(|k| std::env::var(k).ok())
    }

    /// (container ID, ifname); present for ADD/DEL/CHECK by construction.
    pub fn attachment(&self) -> Option<(&ContainerId, &IfName)> {
        Some((self.container_id.as_ref()?, self.ifname.as_ref()?))
    }
}

/// Keys Kubernetes runtimes always send; every plugin knows them.
const RUNTIME_KEYS: [&str; 5] = [
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// CNI_ARGS: `K=V;K=V`. Keys are case-sensitive, as in Go's LoadArgs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs(BTreeMap<String, String>);

impl CniArgs {
    pub fn parse(s: &str) -> Result<CniArgs, EnvError> {
        let mut map = BTreeMap::new();
        for pair in s.split(';').filter(|p| !p.is_empty()) {
            let mut kv = pair.split('=');
            match (kv.next(), kv.next(), kv.next()) {
                (Some(k), Some(v), None) if !k.is_empty() => {
                    map.insert(k.to_string(), v.to_string());
                }
                _ => {
                    return Err(EnvError::Args(format!(
                        "invalid pair {pair:?} (want KEY=VALUE)"
                    )));
                }
            }
        }
        Ok(CniArgs(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn ignore_unknown(&self) -> bool {
        self.get("IgnoreUnknown")
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }

    /// Fails on keys the plugin does not know unless IgnoreUnknown is set.
    pub fn check_known(&self, plugin_keys: &[&str]) -> Result<(), EnvError> {
        if self.ignore_unknown() {
            return Ok(());
        }
        let unknown: Vec<&str> = self
            .0
            .keys()
            .map(String::as_str)
            .filter(|k| !plugin_keys.contains(k) && !RUNTIME_KEYS.contains(k))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(EnvError::Args(format!(
                "unknown args {unknown:?} (known: {plugin_keys:?}; set IgnoreUnknown=1 to ignore)"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, EnvError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(|k| map.get(k).cloned())
    }

    const ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
    ];

    #[test]
    fn add_environment_is_parsed() {
        let e = env(&ADD).expect("valid");
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.ifname.as_ref().map(IfName::as_str), Some("net1"));
        assert_eq!(
            e.path,
            [PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn each_required_variable_is_named_when_missing() {
        for var in ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            let pairs: Vec<_> = ADD.iter().copied().filter(|(k, _)| *k != var).collect();
            let err = env(&pairs).expect_err(var).to_string();
            assert!(err.contains(var), "{err}");
        }
    }

    #[test]
    fn del_tolerates_missing_or_empty_netns() {
        let mut pairs: Vec<_> = ADD.to_vec();
        pairs[0] = ("CNI_COMMAND", "DEL");
        pairs[2] = ("CNI_NETNS", "");
        assert!(env(&pairs).expect("empty netns").netns.is_none());
        pairs.remove(2);
        assert!(env(&pairs).expect("no netns").netns.is_none());
    }

    #[test]
    fn hostile_values_are_rejected() {
        for (var, bad) in [
            ("CNI_CONTAINERID", "../../etc"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_IFNAME", "sixteen-chars-xx"),
            ("CNI_IFNAME", ".."),
            ("CNI_NETNS", "relative/path"),
            ("CNI_COMMAND", "add"),
        ] {
            let mut pairs: Vec<_> = ADD.to_vec();
            for p in pairs.iter_mut() {
                if p.0 == var {
                    p.1 = bad;
                }
            }
            assert!(env(&pairs).is_err(), "{var}={bad}");
        }
    }

    #[test]
    fn version_needs_only_the_command() {
        let e = env(&[("CNI_COMMAND", "VERSION")]).expect("version");
        assert!(e.container_id.is_none());
    }

    #[test]
    fn cni_args() {
        let a = CniArgs::parse("IgnoreUnknown=1;MAC=02:00:00:00:00:01;K8S_POD_NAME=p").expect("ok");
        assert_eq!(a.get("MAC"), Some("02:00:00:00:00:01"));
        assert!(a.ignore_unknown());
        assert!(CniArgs::parse("A=1=2").is_err());
        assert!(CniArgs::parse("novalue").is_err());
        assert!(CniArgs::parse("=x").is_err());
        assert!(CniArgs::parse("").expect("empty").get("x").is_none());
        let strict = CniArgs::parse("MAC=x;K8S_POD_NAME=p;FOO=1").expect("ok");
        let err = strict
            .check_known(&["MAC"])
            .expect_err("FOO unknown")
            .to_string();
        assert!(err.contains("FOO"), "{err}");
        assert!(
            CniArgs::parse("MAC=x;K8S_POD_NAME=p")
                .expect("ok")
                .check_known(&["MAC"])
                .is_ok()
        );
        // Keys are case-sensitive, as in Go.
        assert!(
            CniArgs::parse("mac=x")
                .expect("ok")
                .check_known(&["MAC"])
                .is_err()
        );
    }
}
