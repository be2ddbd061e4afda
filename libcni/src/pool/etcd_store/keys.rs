//! Key components of the etcd store (the layout is in the parent module's
//! docs): escaping, address keys and owner keys.

use std::net::IpAddr;

use super::super::ranges::to_u128;

/// Keeps key components free of '/' and control bytes.
pub(super) fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub(super) fn unescape(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The address as a fixed-width hex number: etcd's key order is address order.
pub(super) fn addr_key(ip: IpAddr) -> String {
    format!("{:032x}", to_u128(ip))
}

/// `owner/<network>/`: every owner key of the network, both layouts.
pub(super) fn owner_prefix(network: &str) -> String {
    format!("owner/{}/", escape(network))
}

/// `owner/<network>/<node>/<containerID>/<ifname>`.
pub(super) fn scoped_owner(network: &str, node: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "{}{}/{}/{}",
        owner_prefix(network),
        escape(node),
        escape(container_id),
        escape(ifname)
    )
}

/// `owner/<network>/<containerID>/<ifname>`: the layout before allocations
/// carried their node; read, never written.
pub(super) fn unscoped_owner(network: &str, container_id: &str, ifname: &str) -> String {
    format!(
        "{}{}/{}",
        owner_prefix(network),
        escape(container_id),
        escape(ifname)
    )
}

/// An owner key, from what follows [`owner_prefix`]. Components are escaped,
/// so the number of '/' tells the layouts apart.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum OwnerKey {
    Scoped {
        node: String,
        container_id: String,
        ifname: String,
    },
    Unscoped {
        container_id: String,
        ifname: String,
    },
}

impl OwnerKey {
    pub(super) fn parse(rest: &str) -> Option<OwnerKey> {
        let parts: Vec<&str> = rest.split('/').collect();
        match parts[..] {
            [node, cid, ifname] => Some(OwnerKey::Scoped {
                node: unescape(node),
                container_id: unescape(cid),
                ifname: unescape(ifname),
            }),
            [cid, ifname] => Some(OwnerKey::Unscoped {
                container_id: unescape(cid),
                ifname: unescape(ifname),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_and_sort_by_address() {
        assert_eq!(escape("rail/1 x"), "rail%2F1%20x");
        assert_eq!(unescape(&escape("n%et/1")), "n%et/1");
        let a = addr_key("10.0.0.9".parse().expect("ip"));
        let b = addr_key("10.0.0.10".parse().expect("ip"));
        assert!(a < b, "key order must be address order");
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn owner_keys_of_both_layouts_parse_back() {
        let scoped = scoped_owner("rail/1", "node1", "c/1", "net1");
        assert_eq!(scoped, "owner/rail%2F1/node1/c%2F1/net1");
        let rest = scoped
            .strip_prefix(&owner_prefix("rail/1"))
            .expect("prefix");
        assert_eq!(
            OwnerKey::parse(rest),
            Some(OwnerKey::Scoped {
                node: "node1".into(),
                container_id: "c/1".into(),
                ifname: "net1".into()
            })
        );
        let old = unscoped_owner("rail1", "c1", "net1");
        assert_eq!(old, "owner/rail1/c1/net1");
        assert_eq!(
            OwnerKey::parse("c1/net1"),
            Some(OwnerKey::Unscoped {
                container_id: "c1".into(),
                ifname: "net1".into()
            })
        );
        for bad in ["", "a", "a/b/c/d"] {
            assert_eq!(OwnerKey::parse(bad), None, "{bad:?}");
        }
    }
}
