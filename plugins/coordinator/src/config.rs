//! The `coordinator` config: Spiderpool's keys (existing NADs work
//! unchanged) plus the table, probe and state keys of this suite.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use libcni::Error;
use libcni::config;
use libcni::ids::{IfName, MacAddr};
use serde::Deserialize;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/coordinator";

#[derive(Clone, Debug, Default, Deserialize)]
struct RawRoute {
    dst: Option<String>,
    gw: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Raw {
    mode: Option<String>,
    #[serde(rename = "podDefaultCniNic")]
    pod_default_cni_nic: Option<String>,
    #[serde(rename = "podDefaultRouteNic")]
    pod_default_route_nic: Option<String>,
    #[serde(rename = "tableBase")]
    table_base: Option<i64>,
    table: Option<i64>,
    #[serde(rename = "hijackCIDR")]
    hijack_cidr: Option<Vec<String>>,
    #[serde(rename = "serviceCIDR")]
    service_cidr: Option<Vec<String>>,
    #[serde(rename = "overlayPodCIDR")]
    overlay_pod_cidr: Option<Vec<String>>,
    #[serde(rename = "podMACPrefix")]
    pod_mac_prefix: Option<String>,
    #[serde(rename = "txQueueLen")]
    tx_queue_len: Option<i64>,
    #[serde(rename = "podRPFilter")]
    pod_rp_filter: Option<i64>,
    mtu: Option<i64>,
    #[serde(rename = "detectGateway")]
    detect_gateway: Option<bool>,
    #[serde(rename = "detectIPConflict")]
    detect_ip_conflict: Option<bool>,
    #[serde(rename = "probeTimeoutMs")]
    probe_timeout_ms: Option<i64>,
    #[serde(rename = "probeRetries")]
    probe_retries: Option<i64>,
    #[serde(rename = "tunePodRoutes")]
    tune_pod_routes: Option<bool>,
    #[serde(rename = "policyRoutes")]
    policy_routes: Option<Vec<RawRoute>>,
    #[serde(rename = "stateDir")]
    state_dir: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Overlay,
    /// `disable`: pass prevResult through untouched.
    Disabled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyRoute {
    pub dst: IpNet,
    pub gw: IpAddr,
}

#[derive(Clone, Debug)]
pub struct CoordConf {
    pub mode: Mode,
    pub default_cni_nic: IfName,
    /// The NIC that keeps the main table's default route.
    pub default_route_nic: IfName,
    pub table_base: u32,
    pub table: Option<u32>,
    pub hijack: Vec<IpNet>,
    pub mac_prefix: Option<[u8; 2]>,
    pub tx_queue_len: Option<u32>,
    /// None = leave rp_filter alone (-1).
    pub rp_filter: Option<u8>,
    pub mtu: Option<u32>,
    pub detect_gateway: bool,
    pub detect_conflict: bool,
    pub probe_timeout: Duration,
    pub probe_retries: u32,
    pub tune_routes: bool,
    pub policy_routes: Vec<PolicyRoute>,
    pub state_dir: PathBuf,
}

/// Tables the kernel reserves (unspec, default, main, local).
pub fn reserved_table(t: u32) -> bool {
    matches!(t, 0 | 253..=255)
}

/// Highest table we hand out; keeps rule priorities (1000 + table) below
/// the main table's 32766.
pub const MAX_TABLE: u32 = 30000;

fn ifname(key: &str, v: Option<String>, default: &str) -> Result<IfName, Error> {
    let s = v
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_string());
    IfName::parse(&s).map_err(|e| Error::config(key, e.to_string()))
}

fn range(key: &str, v: i64, lo: i64, hi: i64) -> Result<i64, Error> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(Error::config(key, format!("{v} is out of range {lo}-{hi}")))
    }
}

fn cidrs(key: &str, list: Option<Vec<String>>) -> Result<Vec<IpNet>, Error> {
    list.unwrap_or_default()
        .into_iter()
        .map(|c| {
            // A bare address is a host route, as Spiderpool's webhook does.
            c.parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| Error::config(key, format!("{c:?} is not a CIDR or an address")))
        })
        .collect()
}

/// `xx:xx`, whose first byte is unicast (the MAC built from it must be).
fn mac_prefix(v: &str) -> Result<[u8; 2], Error> {
    let parsed = MacAddr::parse(&format!("{v}:00:00:00:00")).map_err(|_| {
        Error::config(
            "podMACPrefix",
            format!("{v:?} is not two hex bytes like \"0a:1b\""),
        )
    })?;
    if parsed.0[0] & 1 == 1 {
        return Err(Error::config(
            "podMACPrefix",
            format!("{v:?} would make multicast MACs (lowest bit of the first byte set)"),
        ));
    }
    Ok([parsed.0[0], parsed.0[1]])
}

impl CoordConf {
    pub fn load(raw: &serde_json::Value, current_ifname: &IfName) -> Result<CoordConf, Error> {
        let r: Raw = config::decode(raw)?;
        let default_cni_nic = ifname("podDefaultCniNic", r.pod_default_cni_nic.clone(), "eth0")?;
        let mode = match r.mode.as_deref().unwrap_or("auto") {
            "overlay" => Mode::Overlay,
            "auto" if current_ifname != &default_cni_nic => Mode::Overlay,
            "disable" | "disabled" => Mode::Disabled,
            m @ ("underlay" | "auto") => {
                return Err(Error::UnsupportedField {
                    key: "mode".into(),
                    reason: format!(
                        "{m:?} on {current_ifname}: underlay mode (the pod's {default_cni_nic} itself an SR-IOV/macvlan interface, with a veth to the host) is not supported yet; use overlay, chained on the extra interfaces"
                    ),
                });
            }
            other => {
                return Err(Error::config(
                    "mode",
                    format!("{other:?} is not one of auto, overlay, underlay, disable"),
                ));
            }
        };
        if mode == Mode::Overlay && current_ifname == &default_cni_nic {
            return Err(Error::config(
                "mode",
                format!(
                    "overlay mode routes the extra interfaces; it must not be chained on podDefaultCniNic {default_cni_nic}"
                ),
            ));
        }
        let table_base = range(
            "tableBase",
            r.table_base.unwrap_or(100),
            1,
            i64::from(MAX_TABLE) - 64,
        )? as u32;
        let table = r
            .table
            .map(|t| range("table", t, 1, i64::from(MAX_TABLE)).map(|t| t as u32))
            .transpose()?;
        for (key, t) in [("tableBase", Some(table_base)), ("table", table)] {
            if let Some(t) = t
                && reserved_table(t)
            {
                return Err(Error::config(
                    key,
                    format!(
                        "{t} is a table the kernel reserves (253 default, 254 main, 255 local)"
                    ),
                ));
            }
        }
        let mut hijack = cidrs("hijackCIDR", r.hijack_cidr)?;
        hijack.extend(cidrs("serviceCIDR", r.service_cidr)?);
        hijack.extend(cidrs("overlayPodCIDR", r.overlay_pod_cidr)?);
        // The same CIDR often appears in several lists: keep the first.
        let mut seen = std::collections::HashSet::new();
        hijack.retain(|c| seen.insert(*c));
        let mut policy_routes = Vec::new();
        for (i, pr) in r.policy_routes.unwrap_or_default().into_iter().enumerate() {
            let key = format!("policyRoutes[{i}]");
            let dst = cidrs(&key, Some(vec![pr.dst.unwrap_or_default()]))?.remove(0);
            let gw_s = pr.gw.unwrap_or_default();
            let gw: IpAddr = gw_s
                .parse()
                .map_err(|_| Error::config(&key, format!("gw {gw_s:?} is not an address")))?;
            if gw.is_ipv6() != dst.addr().is_ipv6() {
                return Err(Error::config(
                    key,
                    format!("dst {dst} and gw {gw} are of different families"),
                ));
            }
            policy_routes.push(PolicyRoute { dst, gw });
        }
        Ok(CoordConf {
            mode,
            default_route_nic: ifname(
                "podDefaultRouteNic",
                r.pod_default_route_nic,
                default_cni_nic.as_str(),
            )?,
            default_cni_nic,
            table_base,
            table,
            hijack,
            mac_prefix: r
                .pod_mac_prefix
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(mac_prefix)
                .transpose()?,
            tx_queue_len: r
                .tx_queue_len
                .map(|v| range("txQueueLen", v, 0, 1 << 24).map(|v| v as u32))
                .transpose()?,
            rp_filter: match r.pod_rp_filter.unwrap_or(0) {
                -1 => None,
                v => Some(range("podRPFilter", v, -1, 2)? as u8),
            },
            mtu: r
                .mtu
                .map(|v| range("mtu", v, 68, 65535).map(|v| v as u32))
                .transpose()?,
            detect_gateway: r.detect_gateway.unwrap_or(true),
            detect_conflict: r.detect_ip_conflict.unwrap_or(false),
            probe_timeout: Duration::from_millis(range(
                "probeTimeoutMs",
                r.probe_timeout_ms.unwrap_or(200),
                1,
                60_000,
            )? as u64),
            probe_retries: range("probeRetries", r.probe_retries.unwrap_or(3), 1, 100)? as u32,
            tune_routes: r.tune_pod_routes.unwrap_or(true),
            policy_routes,
            state_dir: state_dir(r.state_dir)?,
        })
    }
}

fn state_dir(v: Option<String>) -> Result<PathBuf, Error> {
    config::abs_path("stateDir", v, DEFAULT_STATE_DIR)
}

/// DEL, GC, STATUS: only where the records are.
pub fn load_state_dir(raw: &serde_json::Value) -> Result<PathBuf, Error> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(rename = "stateDir")]
        state_dir: Option<serde_json::Value>,
    }
    let o: Only = config::decode(raw)?;
    match o.state_dir {
        None => state_dir(None),
        Some(serde_json::Value::String(s)) => state_dir(Some(s)),
        Some(other) => Err(Error::config(
            "stateDir",
            format!("{other} is not a string"),
        )),
    }
}

/// Spiderpool keeps log settings under `logOptions`; top-level keys win.
pub fn log_settings(raw: &serde_json::Value) -> (Option<String>, Option<String>) {
    let top = |k: &str| raw.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let nested = |k: &str| {
        raw.get("logOptions")
            .and_then(|o| o.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    (
        top("logLevel").or_else(|| nested("logLevel")),
        top("logFile").or_else(|| nested("logFile")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(v: serde_json::Value, ifname: &str) -> Result<CoordConf, Error> {
        CoordConf::load(&v, &IfName::parse(ifname).expect("ifname"))
    }

    #[test]
    fn defaults_and_spiderpool_keys() {
        let c = load(json!({"type": "coordinator"}), "net1").expect("valid");
        assert_eq!(c.mode, Mode::Overlay);
        assert_eq!(c.default_route_nic.as_str(), "eth0");
        assert_eq!(c.table_base, 100);
        assert!(c.detect_gateway && !c.detect_conflict);
        assert_eq!(c.rp_filter, Some(0));
        assert_eq!(
            (c.probe_timeout, c.probe_retries),
            (Duration::from_millis(200), 3)
        );
        let c = load(
            json!({"mode": "overlay", "podDefaultRouteNIC": "net2", "hijackCIDR": ["10.96.0.0/12", "169.254.25.10"],
                   "serviceCIDR": ["10.96.0.0/12"], "podMACPrefix": "0a:1b", "txQueueLen": 3000, "podRPFilter": -1,
                   "policyRoutes": [{"dst": "172.30.0.0/16", "gw": "172.16.11.254"}], "logOptions": {"logLevel": "debug"}}),
            "net1",
        )
        .expect("valid");
        assert_eq!(c.default_route_nic.as_str(), "net2");
        assert_eq!(
            c.hijack.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.96.0.0/12", "169.254.25.10/32"]
        );
        assert_eq!(c.mac_prefix, Some([0x0a, 0x1b]));
        assert_eq!(c.rp_filter, None);
        assert_eq!(c.policy_routes.len(), 1);
    }

    #[test]
    fn modes() {
        assert_eq!(
            load(json!({"mode": "disabled"}), "net1").expect("ok").mode,
            Mode::Disabled
        );
        for (mode, ifname) in [("underlay", "net1"), ("auto", "eth0")] {
            assert_eq!(
                load(json!({"mode": mode}), ifname).expect_err(mode).code(),
                2,
                "{mode} on {ifname}"
            );
        }
        assert_eq!(
            load(json!({"mode": "overlay"}), "eth0")
                .expect_err("eth0")
                .code(),
            7
        );
        assert_eq!(
            load(json!({"mode": "sideways"}), "net1")
                .expect_err("bad")
                .code(),
            7
        );
    }

    #[test]
    fn every_key_is_validated_and_named() {
        for (v, key) in [
            (json!({"tableBase": 0}), "tableBase"),
            (json!({"table": 254}), "table"),
            (json!({"table": 40000}), "table"),
            (json!({"hijackCIDR": ["nope"]}), "hijackCIDR"),
            (json!({"podMACPrefix": "0b:1b"}), "podMACPrefix"),
            (json!({"podMACPrefix": "zz:1b"}), "podMACPrefix"),
            (json!({"podRPFilter": 3}), "podRPFilter"),
            (json!({"txQueueLen": -5}), "txQueueLen"),
            (json!({"mtu": 20}), "mtu"),
            (json!({"probeTimeoutMs": 0}), "probeTimeoutMs"),
            (json!({"probeRetries": 0}), "probeRetries"),
            (
                json!({"policyRoutes": [{"dst": "10.0.0.0/8", "gw": "fd00::1"}]}),
                "policyRoutes[0]",
            ),
            (json!({"podDefaultRouteNic": "a/b"}), "podDefaultRouteNic"),
            (json!({"stateDir": "rel"}), "stateDir"),
        ] {
            match load(v.clone(), "net1") {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn log_settings_prefer_the_top_level() {
        let v = json!({"logOptions": {"logLevel": "debug", "logFile": "/a"}, "logFile": "/b"});
        assert_eq!(log_settings(&v), (Some("debug".into()), Some("/b".into())));
    }
}
