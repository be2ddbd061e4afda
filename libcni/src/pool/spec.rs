//! IP pool definitions (Spiderpool's field names) and their validation.
//! Every failure is an invalid-config error naming the pool and the field.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

use super::ranges::{RangeSet, parse_range, to_u128};
use crate::config;
use crate::error::Error;

/// A pool as written in a pool file or inline (`ipam.pools`).
#[derive(Clone, Debug, Default, Deserialize)]
struct PoolSpec {
    name: Option<String>,
    #[serde(rename = "ipVersion")]
    ip_version: Option<u8>,
    subnet: Option<String>,
    ips: Option<Vec<String>>,
    #[serde(rename = "excludeIPs")]
    exclude_ips: Option<Vec<String>>,
    gateway: Option<String>,
    routes: Option<Vec<RouteSpec>>,
    vlan: Option<i64>,
    #[serde(rename = "nodeName")]
    node_name: Option<Vec<String>>,
    default: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct RouteSpec {
    dst: Option<String>,
    gw: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRoute {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

/// A validated pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub subnet: IpNet,
    pub gateway: Option<IpAddr>,
    pub routes: Vec<PoolRoute>,
    pub vlan: Option<u16>,
    pub node_names: Vec<String>,
    pub default: bool,
    /// What can be handed out: `ips` minus `excludeIPs` minus the gateway.
    pub addresses: RangeSet,
    /// Where it was defined, for messages ("inline", a file path).
    pub origin: String,
}

impl Pool {
    pub fn is_v6(&self) -> bool {
        self.addresses.is_v6()
    }

    /// Empty `nodeName` = every node.
    pub fn serves_node(&self, node: &str) -> bool {
        self.node_names.is_empty() || self.node_names.iter().any(|n| n == node)
    }

    pub fn size(&self) -> u128 {
        self.addresses.len()
    }
}

/// Pool names become file names and etcd keys: keep them plain.
pub fn valid_pool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn bad(pool: &str, field: &str, reason: impl Into<String>) -> Error {
    Error::config(format!("pool {pool}: {field}"), reason)
}

fn ip_in(pool: &str, field: &str, s: &str, subnet: &IpNet) -> Result<IpAddr, Error> {
    let ip: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| bad(pool, field, format!("{s:?} is not an IP address")))?;
    if !subnet.contains(&ip) {
        return Err(bad(pool, field, format!("{ip} is outside subnet {subnet}")));
    }
    Ok(ip)
}

fn range_set(pool: &str, field: &str, list: &[String], subnet: &IpNet) -> Result<RangeSet, Error> {
    let mut ranges = Vec::new();
    for entry in list {
        let (a, b) = parse_range(entry).ok_or_else(|| {
            bad(
                pool,
                field,
                format!("{entry:?} is not an address or a range a-b"),
            )
        })?;
        for ip in [a, b] {
            if !subnet.contains(&ip) {
                return Err(bad(
                    pool,
                    field,
                    format!("{entry:?}: {ip} is outside subnet {subnet}"),
                ));
            }
        }
        if to_u128(a) > to_u128(b) {
            return Err(bad(pool, field, format!("{entry:?}: start is after end")));
        }
        ranges.push((to_u128(a), to_u128(b)));
    }
    Ok(RangeSet::new(subnet.addr().is_ipv6(), ranges))
}

/// The whole subnet minus its network address (and, for IPv4 wider than
/// /31, its broadcast address).
fn default_addresses(subnet: &IpNet) -> RangeSet {
    let (net, last) = (to_u128(subnet.network()), to_u128(subnet.broadcast()));
    let range = match subnet {
        IpNet::V4(n) if n.prefix_len() >= 31 => (net, last),
        IpNet::V4(_) => (net + 1, last - 1),
        IpNet::V6(n) if n.prefix_len() == 128 => (net, last),
        IpNet::V6(_) => (net + 1, last),
    };
    RangeSet::new(subnet.addr().is_ipv6(), vec![range])
}

impl Pool {
    fn from_spec(spec: PoolSpec, origin: &str) -> Result<Pool, Error> {
        let name = spec.name.unwrap_or_default();
        if !valid_pool_name(&name) {
            return Err(Error::config(
                format!("pool name in {origin}"),
                format!(
                    "{name:?} must be 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
                ),
            ));
        }
        let n = name.as_str();
        let subnet_s = spec.subnet.ok_or_else(|| bad(n, "subnet", "is required"))?;
        let subnet: IpNet = subnet_s
            .parse()
            .map_err(|_| bad(n, "subnet", format!("{subnet_s:?} is not a CIDR")))?;
        if subnet.trunc() != subnet {
            return Err(bad(
                n,
                "subnet",
                format!(
                    "{subnet} has host bits set (did you mean {}?)",
                    subnet.trunc()
                ),
            ));
        }
        match (spec.ip_version, subnet) {
            (None, _) | (Some(4), IpNet::V4(_)) | (Some(6), IpNet::V6(_)) => {}
            (Some(v), _) => {
                return Err(bad(
                    n,
                    "ipVersion",
                    format!("{v} does not match subnet {subnet}"),
                ));
            }
        }
        let mut addresses = match &spec.ips {
            Some(list) if !list.is_empty() => range_set(n, "ips", list, &subnet)?,
            _ => default_addresses(&subnet),
        };
        if let Some(list) = &spec.exclude_ips {
            addresses = addresses.subtract(&range_set(n, "excludeIPs", list, &subnet)?);
        }
        let gateway = match spec.gateway.as_deref().filter(|g| !g.is_empty()) {
            None => None,
            Some(g) => {
                let gw = ip_in(n, "gateway", g, &subnet)?;
                if gw == subnet.network() && subnet.prefix_len() < subnet.max_prefix_len() - 1 {
                    return Err(bad(
                        n,
                        "gateway",
                        format!("{gw} is the network address of {subnet}"),
                    ));
                }
                addresses = addresses.subtract(&RangeSet::new(
                    gw.is_ipv6(),
                    vec![(to_u128(gw), to_u128(gw))],
                ));
                Some(gw)
            }
        };
        if addresses.is_empty() {
            return Err(bad(n, "ips", "no address is left to allocate"));
        }
        let mut routes = Vec::new();
        for (i, r) in spec.routes.unwrap_or_default().into_iter().enumerate() {
            let field = format!("routes[{i}]");
            let dst_s = r.dst.unwrap_or_default();
            let dst: IpNet = dst_s
                .parse()
                .map_err(|_| bad(n, &field, format!("dst {dst_s:?} is not a CIDR")))?;
            let gw = match r.gw.as_deref().filter(|g| !g.is_empty()) {
                None => None,
                Some(g) => {
                    let gw: IpAddr = g
                        .parse()
                        .map_err(|_| bad(n, &field, format!("gw {g:?} is not an IP address")))?;
                    if gw.is_ipv6() != dst.addr().is_ipv6() {
                        return Err(bad(
                            n,
                            &field,
                            format!("gw {gw} and dst {dst} are of different families"),
                        ));
                    }
                    Some(gw)
                }
            };
            if dst.addr().is_ipv6() != subnet.addr().is_ipv6() {
                return Err(bad(
                    n,
                    &field,
                    format!("dst {dst} is not of the pool's family"),
                ));
            }
            routes.push(PoolRoute {
                dst: dst.trunc(),
                gw,
            });
        }
        let vlan = match spec.vlan {
            None => None,
            Some(v) if (0..=4094).contains(&v) => Some(v as u16),
            Some(v) => return Err(bad(n, "vlan", format!("{v} is out of range 0-4094"))),
        };
        Ok(Pool {
            name,
            subnet,
            gateway,
            routes,
            vlan,
            node_names: spec.node_name.unwrap_or_default(),
            default: spec.default.unwrap_or(false),
            addresses,
            origin: origin.to_string(),
        })
    }
}

fn specs_from_value(v: &serde_json::Value, origin: &str) -> Result<Vec<PoolSpec>, Error> {
    let list = match v {
        serde_json::Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            config::decode::<PoolSpec>(item).map_err(|e| match e {
                Error::Config { key, reason } => Error::Config {
                    key: format!("{origin} pool #{i}: {key}"),
                    reason,
                },
                other => other,
            })
        })
        .collect()
}

/// Loads pools from `*.json` files in `dir` (each a pool or a list of pools;
/// a missing directory is no pools) and from `inline`, validates each, and
/// refuses a name defined twice differently or two pools sharing an address.
pub fn load_pools(dir: Option<&Path>, inline: &[serde_json::Value]) -> Result<Vec<Pool>, Error> {
    let mut specs: Vec<(PoolSpec, String)> = Vec::new();
    if let Some(dir) = dir {
        let mut files: Vec<_> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(Error::config(
                    "poolsDir",
                    format!("cannot read {}: {e}", dir.display()),
                ));
            }
        };
        files.sort();
        for f in files {
            let origin = f.display().to_string();
            let text = std::fs::read(&f)
                .map_err(|e| Error::config("poolsDir", format!("cannot read {origin}: {e}")))?;
            let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
                Error::config("poolsDir", format!("{origin} is not valid JSON: {e}"))
            })?;
            specs.extend(
                specs_from_value(&v, &origin)?
                    .into_iter()
                    .map(|s| (s, origin.clone())),
            );
        }
    }
    for (i, v) in inline.iter().enumerate() {
        let origin = format!("ipam.pools[{i}]");
        specs.extend(
            specs_from_value(v, &origin)?
                .into_iter()
                .map(|s| (s, origin.clone())),
        );
    }
    let mut by_name: BTreeMap<String, Pool> = BTreeMap::new();
    for (spec, origin) in specs {
        let pool = Pool::from_spec(spec, &origin)?;
        if let Some(seen) = by_name.get(&pool.name) {
            let same = Pool {
                origin: seen.origin.clone(),
                ..pool.clone()
            };
            if &same != seen {
                return Err(bad(
                    &pool.name,
                    "name",
                    format!(
                        "defined differently in {} and in {}",
                        seen.origin, pool.origin
                    ),
                ));
            }
            continue;
        }
        by_name.insert(pool.name.clone(), pool);
    }
    let pools: Vec<Pool> = by_name.into_values().collect();
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            if a.addresses.intersects(&b.addresses) {
                return Err(bad(
                    &b.name,
                    "ips",
                    format!(
                        "overlaps pool {} ({} and {}): an address would be handed out twice",
                        a.name, a.origin, b.origin
                    ),
                ));
            }
        }
    }
    Ok(pools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(v: serde_json::Value) -> Result<Pool, Error> {
        load_pools(None, &[v]).map(|mut p| p.remove(0))
    }

    fn err_key(v: serde_json::Value) -> String {
        match one(v) {
            Err(Error::Config { key, .. }) => key,
            other => panic!("expected config error, got {other:?}"),
        }
    }

    #[test]
    fn seed_rail_pool() {
        let p = one(json!({"name": "gpu1-net11", "subnet": "172.16.11.0/24", "ips": ["172.16.11.1-172.16.11.200"],
                           "gateway": "172.16.11.254", "routes": [{"dst": "172.16.0.0/16", "gw": "172.16.11.254"}],
                           "vlan": 0, "nodeName": ["node1"]}))
        .expect("valid");
        assert_eq!(p.size(), 200);
        assert_eq!(p.gateway, "172.16.11.254".parse().ok());
        assert!(p.serves_node("node1") && !p.serves_node("node2"));
        assert_eq!(p.routes[0].dst.to_string(), "172.16.0.0/16");
    }

    #[test]
    fn defaults_exclusions_and_gateway() {
        let p = one(json!({"name": "p", "subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "excludeIPs": ["10.0.0.2-10.0.0.11"]}))
            .expect("valid");
        // 254 hosts minus gateway minus 10 excluded.
        assert_eq!(p.size(), 243);
        assert!(!p.addresses.contains("10.0.0.1".parse().expect("ip")));
        assert!(!p.addresses.contains("10.0.0.255".parse().expect("ip")));
        let v6 = one(json!({"name": "p6", "subnet": "fd00:11::/120", "gateway": "fd00:11::1"}))
            .expect("valid");
        assert_eq!(v6.size(), 255 - 1);
        assert!(v6.is_v6());
        let p31 = one(json!({"name": "p31", "subnet": "10.9.9.0/31"})).expect("valid");
        assert_eq!(p31.size(), 2);
    }

    #[test]
    fn each_field_is_validated_and_named() {
        for (v, key) in [
            (
                json!({"subnet": "10.0.0.0/24"}),
                "pool name in ipam.pools[0]",
            ),
            (
                json!({"name": "../x", "subnet": "10.0.0.0/24"}),
                "pool name in ipam.pools[0]",
            ),
            (json!({"name": "p"}), "pool p: subnet"),
            (
                json!({"name": "p", "subnet": "10.0.0.1/24"}),
                "pool p: subnet",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/33"}),
                "pool p: subnet",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "ipVersion": 6}),
                "pool p: ipVersion",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "ips": ["10.0.1.1-10.0.1.5"]}),
                "pool p: ips",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "ips": ["10.0.0.9-10.0.0.5"]}),
                "pool p: ips",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "ips": ["x"]}),
                "pool p: ips",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "excludeIPs": ["10.1.0.1"]}),
                "pool p: excludeIPs",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}),
                "pool p: gateway",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "gateway": "10.0.0.0"}),
                "pool p: gateway",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "routes": [{"dst": "nope"}]}),
                "pool p: routes[0]",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "routes": [{"dst": "::/0"}]}),
                "pool p: routes[0]",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}),
                "pool p: routes[0]",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/24", "vlan": 5000}),
                "pool p: vlan",
            ),
            (
                json!({"name": "p", "subnet": "10.0.0.0/30", "ips": ["10.0.0.1"], "gateway": "10.0.0.1"}),
                "pool p: ips",
            ),
            (
                json!({"name": "p", "subnet": 5}),
                "ipam.pools[0] pool #0: subnet",
            ),
        ] {
            assert_eq!(err_key(v.clone()), key, "{v}");
        }
    }

    #[test]
    fn duplicates_and_overlaps() {
        let a = json!({"name": "a", "subnet": "10.0.0.0/24"});
        assert_eq!(
            load_pools(None, &[a.clone(), a.clone()])
                .expect("identical twice")
                .len(),
            1
        );
        let a2 = json!({"name": "a", "subnet": "10.0.1.0/24"});
        assert!(load_pools(None, &[a.clone(), a2]).is_err());
        let b = json!({"name": "b", "subnet": "10.0.0.0/24", "ips": ["10.0.0.250-10.0.0.254"]});
        let err = load_pools(None, &[a.clone(), b])
            .expect_err("overlap")
            .to_string();
        assert!(err.contains("overlaps pool a"), "{err}");
        let c = json!({"name": "c", "subnet": "10.0.0.0/24", "ips": ["10.0.0.1-10.0.0.100"]});
        let d = json!({"name": "d", "subnet": "10.0.0.0/24", "ips": ["10.0.0.101-10.0.0.200"]});
        assert_eq!(
            load_pools(None, &[c, d])
                .expect("disjoint ranges of one subnet")
                .len(),
            2
        );
    }

    #[test]
    fn pool_files_hold_one_pool_or_a_list() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            tmp.path().join("a.json"),
            json!({"name": "a", "subnet": "10.1.0.0/24"}).to_string(),
        )
        .expect("w");
        std::fs::write(
            tmp.path().join("bc.json"),
            json!([{"name": "b", "subnet": "10.2.0.0/24"}, {"name": "c", "subnet": "fd00::/120"}])
                .to_string(),
        )
        .expect("w");
        std::fs::write(tmp.path().join("notes.txt"), "ignored").expect("w");
        let pools = load_pools(Some(tmp.path()), &[]).expect("load");
        assert_eq!(
            pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        std::fs::write(tmp.path().join("broken.json"), "{").expect("w");
        let err = load_pools(Some(tmp.path()), &[])
            .expect_err("broken")
            .to_string();
        assert!(err.contains("broken.json"), "{err}");
        assert!(
            load_pools(Some(&tmp.path().join("missing")), &[])
                .expect("no dir")
                .is_empty()
        );
    }
}
