//! This node's name, which selects pools and is recorded with every
//! allocation so that GC judges only this node's.

use libcni::Error;
use libcni::config;
use libcni::pool::{node_name_from_hostname, valid_node_name};

/// This node's name when `ipam.nodeName` is not set: the one per-node
/// setting a cluster-wide NetworkAttachmentDefinition cannot carry comes from
/// the environment the runtime (or Multus' daemon) runs plugins with.
pub const NODE_NAME_ENV: &str = "K8S_NODE_NAME";
/// Else the kernel's hostname: kubelet's node name unless overridden.
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

const NODE_NAME_RULE: &str =
    "a Kubernetes node name: lowercase letters, digits, '-' and '.', at most 253 characters";

/// The name from the config, the environment or the hostname, validated.
pub fn this_node(configured: Option<&str>) -> Result<String, Error> {
    node_name(configured, std::env::var(NODE_NAME_ENV).ok(), read_hostname)
}

/// The node DEL releases for: as `this_node`, except that a hostname that
/// makes no node name (unset nodeName and K8S_NODE_NAME) gives None rather
/// than an error. No allocation of this ippool can exist for such a node
/// (ADD refuses it), but an older ippool's, recorded without a node, can:
/// failing DEL would leave its pod stuck terminating, so DEL releases those
/// alone. A nodeName or K8S_NODE_NAME that is set but invalid is still an
/// error: the operator said something wrong.
pub fn node_for_release(configured: Option<&str>) -> Result<Option<String>, Error> {
    release_node(configured, std::env::var(NODE_NAME_ENV).ok(), read_hostname)
}

fn read_hostname() -> std::io::Result<String> {
    std::fs::read_to_string(HOSTNAME_FILE)
}

fn release_node(
    configured: Option<&str>,
    env: Option<String>,
    hostname: impl FnOnce() -> std::io::Result<String>,
) -> Result<Option<String>, Error> {
    let set = |v: Option<&str>| v.is_some_and(|n| !n.is_empty());
    if set(configured) || set(env.as_deref()) {
        return node_name(configured, env, hostname).map(Some);
    }
    // The caller logs it (this file is also built into the config fuzzer,
    // which has no logger).
    Ok(node_name(None, None, hostname).ok())
}

/// This node's name: `ipam.nodeName`, else `$K8S_NODE_NAME`, else the
/// hostname as kubelet makes a node name of it (empty values count as
/// unset, as kubelet's empty --hostname-override does). It selects pools
/// and scopes GC, so an invalid one is an error, never a guess.
fn node_name(
    configured: Option<&str>,
    env: Option<String>,
    hostname: impl FnOnce() -> std::io::Result<String>,
) -> Result<String, Error> {
    let invalid = |key: &str, value: &str| {
        Error::config(
            key,
            format!("{:?} is not {NODE_NAME_RULE}", config::shorten(value)),
        )
    };
    if let Some(name) = configured.filter(|n| !n.is_empty()) {
        return valid_node_name(name)
            .then(|| name.to_string())
            .ok_or_else(|| invalid("ipam.nodeName", name));
    }
    if let Some(name) = env.filter(|n| !n.is_empty()) {
        return if valid_node_name(&name) {
            Ok(name)
        } else {
            Err(invalid(NODE_NAME_ENV, &name))
        };
    }
    let host = hostname().map_err(|e| {
        Error::config(
            "ipam.nodeName",
            format!("not set, and the hostname is unreadable ({HOSTNAME_FILE}: {e}): set ipam.nodeName or {NODE_NAME_ENV}"),
        )
    })?;
    let name = node_name_from_hostname(&host);
    if valid_node_name(&name) {
        Ok(name)
    } else {
        Err(Error::config(
            "ipam.nodeName",
            format!(
                "not set, and the hostname {:?} is not {NODE_NAME_RULE}: set ipam.nodeName or {NODE_NAME_ENV}",
                config::shorten(&name)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostname(h: &'static str) -> impl FnOnce() -> std::io::Result<String> {
        move || Ok(h.to_string())
    }

    #[test]
    fn node_name_from_config_then_environment_then_hostname() {
        let name = |c: Option<&str>, env: Option<&str>, host| {
            node_name(c, env.map(str::to_string), hostname(host))
        };
        assert_eq!(name(Some("n1"), Some("e1"), "h1").expect("ok"), "n1");
        assert_eq!(name(None, Some("e1"), "h1").expect("ok"), "e1");
        assert_eq!(
            name(Some(""), Some(""), "h1").expect("ok"),
            "h1",
            "empty = unset"
        );
        // As kubelet makes a node name of the hostname.
        assert_eq!(name(None, None, "GPU-Node7\n").expect("ok"), "gpu-node7");
        let unreadable = node_name(None, None, || Err(std::io::Error::other("gone")));
        for (got, key, value) in [
            (name(Some("Node_1"), None, "h1"), "ipam.nodeName", "Node_1"),
            (name(None, Some("a/../b"), "h1"), "K8S_NODE_NAME", "a/../b"),
            (
                name(None, None, "under_score"),
                "ipam.nodeName",
                "under_score",
            ),
            (unreadable, "ipam.nodeName", "unreadable"),
        ] {
            match got {
                Err(e @ Error::Config { .. }) => {
                    assert_eq!(e.code(), 7);
                    let Error::Config { key: k, reason } = e else {
                        unreachable!()
                    };
                    assert_eq!(k, key);
                    assert!(reason.contains(value), "{reason}");
                }
                other => panic!("{key} {value}: {other:?}"),
            }
        }
        let long = "a".repeat(254);
        assert!(name(Some(&long), None, "h1").is_err());
    }

    #[test]
    fn release_tolerates_only_an_unusable_hostname() {
        let rel = |c: Option<&str>, env: Option<&str>, host| {
            release_node(c, env.map(str::to_string), hostname(host))
        };
        assert_eq!(rel(None, None, "h1").expect("ok").as_deref(), Some("h1"));
        assert_eq!(rel(None, None, "under_score").expect("ok"), None);
        let unreadable = release_node(None, None, || Err(std::io::Error::other("gone")));
        assert_eq!(unreadable.expect("ok"), None);
        assert_eq!(
            rel(Some(""), Some("e1"), "under_score")
                .expect("ok")
                .as_deref(),
            Some("e1")
        );
        // What the operator set is checked as for ADD.
        assert!(rel(Some("Node_1"), None, "h1").is_err());
        assert!(rel(None, Some("a/../b"), "h1").is_err());
    }
}
