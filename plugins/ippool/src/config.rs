//! The `ippool` IPAM config (the `ipam` section, Spiderpool's key names), the
//! pools it selects, and the addresses a runtime requests.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use libcni::Error;
use libcni::config;
use libcni::env::CniArgs;
use libcni::pool::{Pool, load_pools};
use serde::Deserialize;

use crate::node;

pub const DEFAULT_POOLS_DIR: &str = "/etc/cni/ippools.d";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/ippool";
pub const DEFAULT_ETCD_PREFIX: &str = "/rdma-cni/ippool";
pub const DEFAULT_ETCD_TIMEOUT: Duration = Duration::from_secs(3);

/// `"a"` or `["a", "b"]` (Spiderpool NADs use lists; a bare name is forgiven).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A duration as seconds (number) or a string like "500ms" / "5s".
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Timeout {
    Seconds(f64),
    Text(String),
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct EtcdConf {
    pub endpoints: Option<Vec<String>>,
    pub prefix: Option<String>,
    timeout: Option<Timeout>,
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub username: Option<String>,
    /// Any JSON, so a decode error never quotes it (serde's messages echo
    /// the value: `invalid type: integer 1234`).
    password: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct RawIpam {
    default_ipv4_ippool: Option<OneOrMany>,
    default_ipv6_ippool: Option<OneOrMany>,
    #[serde(rename = "poolsDir")]
    pools_dir: Option<String>,
    pools: Option<Vec<serde_json::Value>>,
    #[serde(rename = "nodeName")]
    node_name: Option<String>,
    store: Option<String>,
    #[serde(rename = "dataDir")]
    data_dir: Option<String>,
    etcd: Option<EtcdConf>,
    sticky: Option<bool>,
    /// Spiderpool: drop the pool's default route. We add no implicit default
    /// route, so there is nothing to drop; accepted for existing NADs.
    clean_gateway: Option<bool>,
    match_master_subnet: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct RuntimeConfig {
    ips: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct ArgsCni {
    ips: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Args {
    cni: Option<ArgsCni>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct RawConf {
    name: Option<String>,
    ipam: Option<RawIpam>,
    #[serde(rename = "runtimeConfig")]
    runtime_config: Option<RuntimeConfig>,
    args: Option<Args>,
}

/// Where allocations live.
#[derive(Clone, Debug)]
pub enum StoreConf {
    File { data_dir: PathBuf },
    Etcd(EtcdSettings),
}

#[derive(Clone, Debug)]
pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub timeout: Duration,
    pub tls: Option<EtcdTls>,
    pub user: Option<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub cacert: Option<PathBuf>,
    pub cert_key: Option<(PathBuf, PathBuf)>,
}

/// What DEL, GC and STATUS need: the network, this node, the store,
/// stickiness.
#[derive(Clone, Debug)]
pub struct StoreSide {
    pub network: String,
    /// Recorded with every allocation; GC judges only this node's. Empty
    /// only for a DEL on a node without a usable name (`load_release_side`).
    pub node: String,
    pub store: StoreConf,
    pub sticky: bool,
}

/// A validated config for ADD and CHECK.
#[derive(Clone, Debug)]
pub struct IppoolConf {
    pub side: StoreSide,
    pub pools: Vec<Pool>,
    pub v4_names: Vec<String>,
    pub v6_names: Vec<String>,
    pub requested: Vec<IpAddr>,
}

fn parse_timeout(t: Option<Timeout>) -> Result<Duration, Error> {
    let secs = match t {
        None => return Ok(DEFAULT_ETCD_TIMEOUT),
        Some(Timeout::Seconds(s)) => s,
        Some(Timeout::Text(s)) => {
            let s = s.trim();
            let parsed = if let Some(ms) = s.strip_suffix("ms") {
                ms.trim().parse::<f64>().ok().map(|v| v / 1000.0)
            } else {
                s.strip_suffix('s').unwrap_or(s).trim().parse::<f64>().ok()
            };
            parsed.ok_or_else(|| {
                Error::config(
                    "ipam.etcd.timeout",
                    format!("{s:?} is not a duration like \"5s\" or \"500ms\""),
                )
            })?
        }
    };
    if !(0.01..=300.0).contains(&secs) {
        return Err(Error::config(
            "ipam.etcd.timeout",
            format!("{secs}s is outside 10ms-300s"),
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn store_side(raw: &RawConf, ipam: &RawIpam) -> Result<StoreSide, Error> {
    store_side_with(raw, ipam, |i| node::this_node(i.node_name.as_deref()))
}

/// The store side with `node` deciding this node's name (after the
/// network and the store are validated, so errors come in key order).
fn store_side_with(
    raw: &RawConf,
    ipam: &RawIpam,
    node: impl FnOnce(&RawIpam) -> Result<String, Error>,
) -> Result<StoreSide, Error> {
    let network = raw.name.clone().filter(|n| !n.is_empty()).ok_or_else(|| {
        Error::config(
            "name",
            "the network name is required (allocations are kept per network)",
        )
    })?;
    let store = match ipam.store.as_deref().unwrap_or("file") {
        "file" => StoreConf::File {
            data_dir: config::abs_path("ipam.dataDir", ipam.data_dir.clone(), DEFAULT_DATA_DIR)?,
        },
        "etcd" => {
            let e = ipam.etcd.clone().unwrap_or_default();
            let endpoints = e.endpoints.clone().unwrap_or_default();
            if endpoints.is_empty() {
                return Err(Error::config(
                    "ipam.etcd.endpoints",
                    "at least one endpoint is required with store etcd",
                ));
            }
            for ep in &endpoints {
                let Some(rest) = ep
                    .strip_prefix("http://")
                    .or_else(|| ep.strip_prefix("https://"))
                else {
                    return Err(Error::config(
                        "ipam.etcd.endpoints",
                        format!(
                            "{:?} must start with http:// or https://",
                            config::shorten(ep)
                        ),
                    ));
                };
                // Endpoints are named in every etcd error message and log line.
                if rest
                    .split('/')
                    .next()
                    .is_some_and(|authority| authority.contains('@'))
                {
                    return Err(Error::config(
                        "ipam.etcd.endpoints",
                        "an endpoint carries credentials (user@host): put them in ipam.etcd.username and password, which are never printed",
                    ));
                }
            }
            let prefix = e
                .prefix
                .clone()
                .unwrap_or_else(|| DEFAULT_ETCD_PREFIX.to_string());
            if !prefix.starts_with('/')
                || prefix.contains("//")
                || prefix.ends_with('/') && prefix.len() > 1
            {
                return Err(Error::config(
                    "ipam.etcd.prefix",
                    format!("{prefix:?} must look like /a/b"),
                ));
            }
            let tls = if e.cacert.is_some() || e.cert.is_some() || e.key.is_some() {
                let cert_key = match (e.cert.clone(), e.key.clone()) {
                    (Some(c), Some(k)) => Some((
                        config::abs_path("ipam.etcd.cert", Some(c), "")?,
                        config::abs_path("ipam.etcd.key", Some(k), "")?,
                    )),
                    (None, None) => None,
                    _ => return Err(Error::config("ipam.etcd.cert", "cert and key go together")),
                };
                Some(EtcdTls {
                    cacert: e
                        .cacert
                        .clone()
                        .map(|c| config::abs_path("ipam.etcd.cacert", Some(c), ""))
                        .transpose()?,
                    cert_key,
                })
            } else {
                None
            };
            let password = match e.password.clone() {
                None => None,
                Some(serde_json::Value::String(p)) => Some(p),
                Some(_) => {
                    return Err(Error::config(
                        "ipam.etcd.password",
                        "must be a string (the value is not shown)",
                    ));
                }
            };
            let user = match (e.username.clone(), password) {
                (Some(u), Some(p)) => Some((u, p)),
                (None, None) => None,
                _ => {
                    return Err(Error::config(
                        "ipam.etcd.username",
                        "username and password go together",
                    ));
                }
            };
            StoreConf::Etcd(EtcdSettings {
                endpoints,
                prefix,
                timeout: parse_timeout(e.timeout.clone())?,
                tls,
                user,
            })
        }
        other => {
            return Err(Error::config(
                "ipam.store",
                format!("{other:?} is not \"file\" or \"etcd\""),
            ));
        }
    };
    let node = node(ipam)?;
    Ok(StoreSide {
        network,
        node,
        store,
        sticky: ipam.sticky.unwrap_or(false),
    })
}

fn decode(raw: &serde_json::Value) -> Result<(RawConf, RawIpam), Error> {
    let mut c: RawConf = config::decode(raw)?;
    let ipam = c.ipam.take().unwrap_or_default();
    Ok((c, ipam))
}

/// GC, STATUS: only what reaches the store.
pub fn load_store_side(raw: &serde_json::Value) -> Result<StoreSide, Error> {
    let (c, ipam) = decode(raw)?;
    store_side(&c, &ipam)
}

/// DEL: as `load_store_side`, but on a node without a usable name (see
/// `node::node_for_release`) the node is empty, which matches only
/// allocations recorded without a node.
pub fn load_release_side(raw: &serde_json::Value) -> Result<StoreSide, Error> {
    let (c, ipam) = decode(raw)?;
    store_side_with(&c, &ipam, |i| {
        Ok(node::node_for_release(i.node_name.as_deref())?.unwrap_or_default())
    })
}

/// `10.1.2.3` or `10.1.2.3/24` (the prefix is the pool's business).
fn parse_requested(source: &str, s: &str) -> Result<IpAddr, Error> {
    let s = s.trim();
    // The whole value must parse: "10.1.2.3/99/x" is garbage, not 10.1.2.3.
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<ipnet::IpNet>().map(|n| n.addr()))
        .map_err(|_| {
            Error::config(
                source,
                format!("{s:?} is not an IP address (10.1.2.3 or 10.1.2.3/24)"),
            )
        })
}

impl IppoolConf {
    pub fn load(raw: &serde_json::Value, args: &CniArgs) -> Result<IppoolConf, Error> {
        let (c, ipam) = decode(raw)?;
        let side = store_side(&c, &ipam)?;
        if ipam.match_master_subnet == Some(true) {
            return Err(Error::UnsupportedField {
                key: "ipam.match_master_subnet".into(),
                reason: "true is not supported by ippool (pick the rail's pool with default_ipv4_ippool)".into(),
            });
        }
        let _ = ipam.clean_gateway;
        let pools_dir =
            config::abs_path("ipam.poolsDir", ipam.pools_dir.clone(), DEFAULT_POOLS_DIR)?;
        let pools = load_pools(Some(&pools_dir), ipam.pools.as_deref().unwrap_or_default())?;
        let mut requested = Vec::new();
        let rc_ips = c.runtime_config.and_then(|r| r.ips).unwrap_or_default();
        for ip in &rc_ips {
            requested.push(parse_requested("runtimeConfig.ips", ip)?);
        }
        for ip in c
            .args
            .and_then(|a| a.cni)
            .and_then(|a| a.ips)
            .unwrap_or_default()
        {
            requested.push(parse_requested("args.cni.ips", &ip)?);
        }
        if let Some(list) = args.get("IP") {
            for ip in list.split(',').filter(|s| !s.is_empty()) {
                requested.push(parse_requested("CNI_ARGS IP", ip)?);
            }
        }
        requested.dedup();
        for v6 in [false, true] {
            if requested.iter().filter(|ip| ip.is_ipv6() == v6).count() > 1 {
                return Err(Error::config(
                    "runtimeConfig.ips",
                    format!("{requested:?}: at most one address per IP family"),
                ));
            }
        }
        Ok(IppoolConf {
            side,
            pools,
            v4_names: ipam
                .default_ipv4_ippool
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            v6_names: ipam
                .default_ipv6_ippool
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            requested,
        })
    }

    /// The pools to try, in order, for one family: `default_ipv4_ippool` /
    /// `default_ipv6_ippool` if given, else pools marked `default`; only those
    /// serving this node.
    pub fn candidates(&self, v6: bool) -> Result<Vec<&Pool>, Error> {
        let (key, names) = if v6 {
            ("ipam.default_ipv6_ippool", &self.v6_names)
        } else {
            ("ipam.default_ipv4_ippool", &self.v4_names)
        };
        if names.is_empty() {
            return Ok(self
                .pools
                .iter()
                .filter(|p| p.default && p.is_v6() == v6 && p.serves_node(&self.side.node))
                .collect());
        }
        let mut out = Vec::new();
        for name in names {
            let pool = self.pools.iter().find(|p| &p.name == name).ok_or_else(|| {
                Error::config(
                    key,
                    format!(
                        "pool {name:?} is not defined (known: {})",
                        self.pools
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            if pool.is_v6() != v6 {
                return Err(Error::config(
                    key,
                    format!("pool {name} is an IPv{} pool", if v6 { 4 } else { 6 }),
                ));
            }
            if pool.serves_node(&self.side.node) {
                out.push(pool);
            }
        }
        if out.is_empty() {
            return Err(Error::config(
                key,
                format!(
                    "none of {names:?} serves node {:?} (see their nodeName)",
                    self.side.node
                ),
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A config on node "n1" unless `ipam` names another: the tests do not
    /// depend on the machine's hostname.
    fn conf(ipam: serde_json::Value) -> serde_json::Value {
        let mut ipam = ipam;
        let named = ipam
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k.eq_ignore_ascii_case("nodeName")));
        if !named {
            ipam["nodeName"] = json!("n1");
        }
        json!({"cniVersion": "1.0.0", "name": "rail1", "ipam": ipam})
    }

    fn load(ipam: serde_json::Value) -> Result<IppoolConf, Error> {
        let mut ipam = ipam;
        ipam["poolsDir"] = json!("/nonexistent/pools");
        IppoolConf::load(&conf(ipam), &CniArgs::default())
    }

    const POOLS: &str = r#"[{"name":"a4","subnet":"10.1.0.0/24","default":true},
        {"name":"b4","subnet":"10.2.0.0/24","nodeName":["other"]},
        {"name":"c6","subnet":"fd00:1::/120","default":true}]"#;

    fn pools() -> serde_json::Value {
        serde_json::from_str(POOLS).expect("pools")
    }

    #[test]
    fn selection_by_name_default_and_node() {
        let c = load(json!({"type": "ippool", "pools": pools(), "nodeName": "n1"})).expect("valid");
        assert_eq!(
            c.candidates(false)
                .expect("v4")
                .iter()
                .map(|p| &p.name)
                .collect::<Vec<_>>(),
            ["a4"]
        );
        assert_eq!(
            c.candidates(true)
                .expect("v6")
                .iter()
                .map(|p| &p.name)
                .collect::<Vec<_>>(),
            ["c6"]
        );
        let c =
            load(json!({"pools": pools(), "nodeName": "n1", "default_ipv4_ippool": ["b4", "a4"]}))
                .expect("valid");
        assert_eq!(
            c.candidates(false).expect("v4").len(),
            1,
            "b4 does not serve n1"
        );
        let c = load(json!({"pools": pools(), "nodeName": "other", "default_ipv4_ippool": "b4"}))
            .expect("valid");
        assert_eq!(c.candidates(false).expect("v4")[0].name, "b4");
        for (names, needle) in [
            (json!(["zz"]), "not defined"),
            (json!(["c6"]), "IPv6 pool"),
            (json!(["b4"]), "serves node"),
        ] {
            let c = load(json!({"pools": pools(), "nodeName": "n1", "default_ipv4_ippool": names}))
                .expect("valid");
            let e = c.candidates(false).expect_err("bad").to_string();
            assert!(
                e.contains(needle) && e.contains("default_ipv4_ippool"),
                "{e}"
            );
        }
    }

    #[test]
    fn requested_addresses_from_every_source() {
        let mut v = conf(json!({"pools": pools(), "poolsDir": "/nonexistent"}));
        v["runtimeConfig"] = json!({"ips": ["10.1.0.7/24"]});
        let c =
            IppoolConf::load(&v, &CniArgs::parse("IP=fd00:1::9").expect("args")).expect("valid");
        assert_eq!(
            c.requested,
            [
                "10.1.0.7".parse::<IpAddr>().expect("ip"),
                "fd00:1::9".parse().expect("ip")
            ]
        );
        v["runtimeConfig"] = json!({"ips": ["10.1.0.7", "10.1.0.8"]});
        assert!(
            IppoolConf::load(&v, &CniArgs::default()).is_err(),
            "two IPv4 addresses"
        );
        v["runtimeConfig"] = json!({"ips": ["nope"]});
        assert!(IppoolConf::load(&v, &CniArgs::default()).is_err());
        // tests/corpus/hostile/ippool/cni-args-ip-garbage.json: the part
        // before the first '/' used to be taken (and 10.1.0.7 handed out).
        v["runtimeConfig"] = json!({});
        for bad in ["10.1.0.7/99/x", "10.1.0.7/33", "10.1.0.7/"] {
            let args = CniArgs::parse(&format!("IP={bad}")).expect("args");
            match IppoolConf::load(&v, &args) {
                Err(Error::Config { key, .. }) => assert_eq!(key, "CNI_ARGS IP", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn store_settings_are_validated() {
        for (ipam, key) in [
            (json!({"store": "redis"}), "ipam.store"),
            (json!({"store": "etcd"}), "ipam.etcd.endpoints"),
            (
                json!({"store": "etcd", "etcd": {"endpoints": ["10.0.0.1:2379"]}}),
                "ipam.etcd.endpoints",
            ),
            (
                json!({"store": "etcd", "etcd": {"endpoints": ["http://e:2379"], "timeout": "soon"}}),
                "ipam.etcd.timeout",
            ),
            (
                json!({"store": "etcd", "etcd": {"endpoints": ["http://e:2379"], "cert": "/c"}}),
                "ipam.etcd.cert",
            ),
            (
                json!({"store": "etcd", "etcd": {"endpoints": ["http://e:2379"], "username": "u"}}),
                "ipam.etcd.username",
            ),
            (json!({"dataDir": "relative"}), "ipam.dataDir"),
            (
                json!({"store": "etcd", "etcd": {"endpoints": ["https://root:pw@e:2379"]}}),
                "ipam.etcd.endpoints",
            ),
        ] {
            match load_store_side(&conf(ipam.clone())) {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key, "{ipam}"),
                other => panic!("{ipam}: {other:?}"),
            }
        }
        let s = load_store_side(&conf(json!({"store": "etcd", "etcd": {"endpoints": ["https://e:2379"], "timeout": "500ms",
            "cacert": "/ca.pem", "cert": "/c.pem", "key": "/k.pem", "username": "u", "password": "p"}})))
        .expect("valid");
        match s.store {
            StoreConf::Etcd(e) => {
                assert_eq!(e.timeout, Duration::from_millis(500));
                assert!(e.tls.is_some() && e.user.is_some());
                assert_eq!(e.prefix, DEFAULT_ETCD_PREFIX);
            }
            StoreConf::File { .. } => panic!("etcd expected"),
        }
        assert!(
            load_store_side(&json!({"ipam": {}})).is_err(),
            "network name required"
        );
        match load(json!({"pools": pools(), "match_master_subnet": true})) {
            Err(e) => assert_eq!(e.code(), 2),
            Ok(_) => panic!("match_master_subnet accepted"),
        }
    }

    #[test]
    fn node_name_reaches_the_store_side_with_any_key_case() {
        let s = load_store_side(&conf(json!({"NODENAME": "gpu-7"}))).expect("valid");
        assert_eq!(s.node, "gpu-7");
        match load_store_side(&conf(json!({"nodename": "GPU 7"}))) {
            Err(Error::Config { key, reason }) => {
                assert_eq!(key, "ipam.nodeName");
                assert!(reason.contains("GPU 7"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
