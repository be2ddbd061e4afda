//! Node names: the identity an allocation is recorded with, so that a node's
//! GC only judges its own node's allocations.

/// Kubernetes' limit for a DNS-1123 subdomain (a Node object's name).
pub const MAX_NODE_NAME: usize = 253;

/// A Kubernetes node name: a DNS-1123 subdomain (lowercase letters, digits,
/// '-' and '.'; dot-separated labels that start and end with a letter or
/// digit; at most 253 characters), as kubelet registers nodes.
pub fn valid_node_name(name: &str) -> bool {
    name.len() <= MAX_NODE_NAME
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
            b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || *c == b'-')
        })
}

/// What kubelet makes of a hostname when no `--hostname-override` is given:
/// trimmed and lowercased.
pub fn node_name_from_hostname(hostname: &str) -> String {
    hostname.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_1123_subdomains() {
        for ok in [
            "node1",
            "gpu-worker-07",
            "ip-10-0-0-1.ec2.internal",
            "a",
            "0",
        ] {
            assert!(valid_node_name(ok), "{ok}");
        }
        let long_ok = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        assert_eq!(long_ok.len(), 253);
        assert!(valid_node_name(&long_ok));
        for bad in [
            "", "Node1", "node_1", "-node", "node-", "a..b", ".a", "a.", "a/b", "a b", "nöde",
            "a\u{0}",
        ] {
            assert!(!valid_node_name(bad), "{bad:?}");
        }
        assert!(!valid_node_name(&"a".repeat(254)));
    }

    #[test]
    fn hostnames_become_node_names_as_kubelet_makes_them() {
        assert_eq!(node_name_from_hostname(" GPU-Node1\n"), "gpu-node1");
    }
}
