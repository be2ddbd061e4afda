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
    node_name(configured, std::env::var(NODE_NAME_ENV).ok(), || {
        std::fs::read_to_string(HOSTNAME_FILE)
    })
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
}
