//! The `sriov` network config: every key of upstream sriov-cni, matched
//! case-insensitively, validated up front. Each failure names its key.

use std::path::PathBuf;

use libcni::Error;
use libcni::config;
use libcni::env::CniArgs;
use libcni::ids::{MacAddr, PciAddr};
use libcni::vf::{LinkState, TxRate, VfSettings, Vlan, VlanProto};
use serde::Deserialize;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/sriov";
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    mac: Option<String>,
    #[serde(rename = "deviceID")]
    device_id: Option<String>,
}

/// The keys as written; numbers are wide so range errors name our limits.
#[derive(Debug, Default, Deserialize)]
struct RawConf {
    #[serde(rename = "deviceID")]
    device_id: Option<String>,
    vlan: Option<i64>,
    #[serde(rename = "vlanQoS")]
    vlan_qos: Option<i64>,
    #[serde(rename = "vlanProto")]
    vlan_proto: Option<String>,
    mac: Option<String>,
    spoofchk: Option<String>,
    trust: Option<String>,
    link_state: Option<String>,
    min_tx_rate: Option<i64>,
    max_tx_rate: Option<i64>,
    mtu: Option<i64>,
    #[serde(rename = "runtimeConfig")]
    runtime_config: Option<RuntimeConfig>,
    #[serde(rename = "stateDir")]
    state_dir: Option<String>,
    #[serde(rename = "sysfsRoot")]
    sysfs_root: Option<String>,
}

/// Where this plugin keeps state and reads sysfs; all DEL needs to find things.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub sysfs_root: PathBuf,
}

/// A validated `sriov` config.
#[derive(Debug, Clone)]
pub struct SriovConf {
    pub device_id: PciAddr,
    pub vf: VfSettings,
    pub mtu: Option<u32>,
    pub paths: Paths,
}

fn in_range(key: &str, v: i64, lo: i64, hi: i64) -> Result<i64, Error> {
    if (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(Error::config(key, format!("{v} is out of range {lo}-{hi}")))
    }
}

fn on_off(key: &str, v: Option<&str>) -> Result<Option<bool>, Error> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(None),
        Some("on") => Ok(Some(true)),
        Some("off") => Ok(Some(false)),
        Some(_) => Err(Error::config(
            key,
            format!("{:?} is not \"on\" or \"off\"", v.unwrap_or_default()),
        )),
    }
}

fn paths(raw: &mut RawConf) -> Result<Paths, Error> {
    Ok(Paths {
        state_dir: config::abs_path("stateDir", raw.state_dir.take(), DEFAULT_STATE_DIR)?,
        sysfs_root: config::abs_path("sysfsRoot", raw.sysfs_root.take(), DEFAULT_SYSFS_ROOT)?,
    })
}

/// DEL, GC and STATUS need only the paths: a config that became invalid must
/// never stop a VF from being released.
pub fn load_paths(raw: &serde_json::Value) -> Result<Paths, Error> {
    #[derive(Deserialize)]
    struct PathKeys {
        #[serde(rename = "stateDir")]
        state_dir: Option<serde_json::Value>,
        #[serde(rename = "sysfsRoot")]
        sysfs_root: Option<serde_json::Value>,
    }
    let keys: PathKeys = config::decode(raw)?;
    let text = |key: &str, v: Option<serde_json::Value>| match v {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::config(key, format!("{other} is not a string"))),
    };
    paths(&mut RawConf {
        state_dir: text("stateDir", keys.state_dir)?,
        sysfs_root: text("sysfsRoot", keys.sysfs_root)?,
        ..Default::default()
    })
}

impl SriovConf {
    pub fn load(raw: &serde_json::Value, args: &CniArgs) -> Result<SriovConf, Error> {
        let mut c: RawConf = config::decode(raw)?;
        let rc = c.runtime_config.take().unwrap_or_default();
        let (key, device) = match (rc.device_id, c.device_id.take()) {
            (Some(d), _) if !d.is_empty() => ("runtimeConfig.deviceID", d),
            (_, Some(d)) if !d.is_empty() => ("deviceID", d),
            _ => {
                return Err(Error::config(
                    "deviceID",
                    "the VF's PCI address is required (deviceID or runtimeConfig.deviceID)",
                ));
            }
        };
        let device_id = PciAddr::parse(&device).map_err(|e| Error::config(key, e.to_string()))?;

        // MAC precedence: runtimeConfig.mac > CNI_ARGS MAC > config mac.
        let mac_source = [
            ("runtimeConfig.mac", rc.mac.as_deref()),
            ("CNI_ARGS MAC", args.get("MAC")),
            ("mac", c.mac.as_deref()),
        ]
        .into_iter()
        .find(|(_, v)| v.is_some_and(|v| !v.is_empty()));
        let mac = match mac_source {
            Some((key, Some(v))) => {
                Some(MacAddr::parse_unicast(v).map_err(|e| Error::config(key, e.to_string()))?)
            }
            _ => None,
        };

        let vf = VfSettings {
            vlan: vlan(&c)?,
            mac,
            rate: rate(&c)?,
            spoofchk: on_off("spoofchk", c.spoofchk.as_deref())?,
            trust: on_off("trust", c.trust.as_deref())?,
            link_state: LinkState::from_config(c.link_state.as_deref())?,
            // InfiniBand only (ib-sriov).
            guid: None,
        };
        let mtu = match c.mtu {
            None => None,
            Some(m) => Some(in_range("mtu", m, 68, 65535)? as u32),
        };
        Ok(SriovConf {
            device_id,
            vf,
            mtu,
            paths: paths(&mut c)?,
        })
    }
}

fn vlan(c: &RawConf) -> Result<Option<Vlan>, Error> {
    let Some(id) = c.vlan else {
        if c.vlan_qos.is_some() {
            return Err(Error::config("vlanQoS", "requires vlan to be set"));
        }
        if c.vlan_proto.is_some() {
            return Err(Error::config("vlanProto", "requires vlan to be set"));
        }
        return Ok(None);
    };
    let id = in_range("vlan", id, 0, 4094)? as u16;
    let qos = in_range("vlanQoS", c.vlan_qos.unwrap_or(0), 0, 7)? as u8;
    let proto = match c.vlan_proto.as_deref() {
        None => VlanProto::Dot1Q,
        Some(p) => VlanProto::parse(p).ok_or_else(|| {
            Error::config(
                "vlanProto",
                format!("{p:?} is not \"802.1Q\" or \"802.1ad\""),
            )
        })?,
    };
    if id == 0 && qos != 0 {
        return Err(Error::config(
            "vlanQoS",
            format!("{qos} needs a non-zero vlan"),
        ));
    }
    if id == 0 && proto == VlanProto::Dot1Ad {
        return Err(Error::config("vlanProto", "802.1ad needs a non-zero vlan"));
    }
    Ok(Some(Vlan { id, qos, proto }))
}

fn rate(c: &RawConf) -> Result<Option<TxRate>, Error> {
    if c.min_tx_rate.is_none() && c.max_tx_rate.is_none() {
        return Ok(None);
    }
    let max_mbps = i64::from(u32::MAX);
    let min = in_range("min_tx_rate", c.min_tx_rate.unwrap_or(0), 0, max_mbps)? as u32;
    let max = in_range("max_tx_rate", c.max_tx_rate.unwrap_or(0), 0, max_mbps)? as u32;
    if max != 0 && min > max {
        return Err(Error::config(
            "min_tx_rate",
            format!("{min} is greater than max_tx_rate {max} (use max_tx_rate 0 for no limit)"),
        ));
    }
    Ok(Some(TxRate { min, max }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(v: serde_json::Value) -> Result<SriovConf, Error> {
        SriovConf::load(&v, &CniArgs::default())
    }

    fn err_key(v: serde_json::Value) -> String {
        match load(v) {
            Err(Error::Config { key, .. }) => key,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn full_config_with_go_style_keys() {
        let c = load(json!({
            "DeviceID": "0000:AF:06.0", "vlan": 100, "VLANQOS": 3, "vlanproto": "802.1AD",
            "MAC": "02:00:00:00:00:01", "spoofchk": "off", "trust": "on", "link_state": "enable",
            "min_tx_rate": 10, "max_tx_rate": 100, "MTU": 9000
        }))
        .expect("valid");
        assert_eq!(c.device_id.as_str(), "0000:af:06.0");
        assert_eq!(
            c.vf.vlan,
            Some(Vlan {
                id: 100,
                qos: 3,
                proto: VlanProto::Dot1Ad
            })
        );
        assert_eq!(
            c.vf.mac.map(|m| m.to_string()).as_deref(),
            Some("02:00:00:00:00:01")
        );
        assert_eq!((c.vf.spoofchk, c.vf.trust), (Some(false), Some(true)));
        assert_eq!(c.vf.link_state, Some(LinkState::Enable));
        assert_eq!(c.vf.rate, Some(TxRate { min: 10, max: 100 }));
        assert_eq!(c.mtu, Some(9000));
        assert_eq!(c.paths.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    }

    #[test]
    fn minimal_config_changes_nothing() {
        let c = load(json!({"deviceID": "0000:af:06.0"})).expect("valid");
        assert_eq!(c.vf, VfSettings::default());
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn every_key_is_validated_and_named() {
        let base = |extra: serde_json::Value| {
            let mut v = json!({"deviceID": "0000:af:06.0"});
            for (k, x) in extra.as_object().expect("object") {
                v[k] = x.clone();
            }
            v
        };
        for (extra, key) in [
            (json!({"deviceID": null}), "deviceID"),
            (json!({"deviceID": "af:06.0"}), "deviceID"),
            (json!({"deviceID": "../../etc"}), "deviceID"),
            (
                json!({"runtimeConfig": {"deviceID": "bogus"}}),
                "runtimeConfig.deviceID",
            ),
            (json!({"vlan": 4095}), "vlan"),
            (json!({"vlan": -1}), "vlan"),
            (json!({"vlan": "100"}), "vlan"),
            (json!({"vlan": 10, "vlanQoS": 8}), "vlanQoS"),
            (json!({"vlanQoS": 1}), "vlanQoS"),
            (json!({"vlan": 0, "vlanQoS": 1}), "vlanQoS"),
            (json!({"vlan": 10, "vlanProto": "802"}), "vlanProto"),
            (json!({"vlanProto": "802.1q"}), "vlanProto"),
            (json!({"vlan": 0, "vlanProto": "802.1ad"}), "vlanProto"),
            (json!({"mac": "02:00:00:00:00"}), "mac"),
            (json!({"mac": "01:00:5e:00:00:01"}), "mac"),
            (json!({"runtimeConfig": {"mac": "zz"}}), "runtimeConfig.mac"),
            (json!({"spoofchk": "yes"}), "spoofchk"),
            (json!({"trust": "true"}), "trust"),
            (json!({"link_state": "up"}), "link_state"),
            (json!({"min_tx_rate": -5}), "min_tx_rate"),
            (json!({"max_tx_rate": 5000000000i64}), "max_tx_rate"),
            (
                json!({"min_tx_rate": 200, "max_tx_rate": 100}),
                "min_tx_rate",
            ),
            (json!({"mtu": 67}), "mtu"),
            (json!({"mtu": 70000}), "mtu"),
            (json!({"stateDir": "relative"}), "stateDir"),
            (json!({"sysfsRoot": "/a/../b"}), "sysfsRoot"),
        ] {
            assert_eq!(err_key(base(extra.clone())), key, "{extra}");
        }
        // Valid edges.
        for extra in [
            json!({"vlan": 0}),
            json!({"vlan": 4094, "vlanQoS": 7, "vlanProto": "802.1Q"}),
            json!({"min_tx_rate": 200, "max_tx_rate": 0}),
            json!({"spoofchk": "ON", "trust": "Off"}),
            json!({"mtu": 68}),
        ] {
            assert!(load(base(extra.clone())).is_ok(), "{extra}");
        }
    }

    #[test]
    fn mac_precedence_runtime_then_args_then_config() {
        let v = json!({"deviceID": "0000:af:06.0", "mac": "02:00:00:00:00:03",
                       "runtimeConfig": {"mac": "02:00:00:00:00:01"}});
        let args = CniArgs::parse("MAC=02:00:00:00:00:02").expect("args");
        let mac = |v: &serde_json::Value, a: &CniArgs| {
            SriovConf::load(v, a)
                .expect("valid")
                .vf
                .mac
                .map(|m| m.to_string())
        };
        assert_eq!(mac(&v, &args).as_deref(), Some("02:00:00:00:00:01"));
        let mut no_rc = v.clone();
        no_rc["runtimeConfig"] = json!({});
        assert_eq!(mac(&no_rc, &args).as_deref(), Some("02:00:00:00:00:02"));
        assert_eq!(
            mac(&no_rc, &CniArgs::default()).as_deref(),
            Some("02:00:00:00:00:03")
        );
        let bad_args = CniArgs::parse("MAC=nope").expect("args");
        match SriovConf::load(&no_rc, &bad_args) {
            Err(Error::Config { key, .. }) => assert_eq!(key, "CNI_ARGS MAC"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn runtime_device_id_wins_and_del_paths_ignore_other_keys() {
        let v = json!({"deviceID": "0000:af:06.0", "runtimeConfig": {"deviceID": "0000:af:06.1"},
                       "vlan": 99999, "stateDir": "/tmp/s"});
        assert!(load(v.clone()).is_err());
        let p = load_paths(&v).expect("paths");
        assert_eq!(p.state_dir, PathBuf::from("/tmp/s"));
        let mut ok = v.clone();
        ok["vlan"] = json!(1);
        assert_eq!(load(ok).expect("valid").device_id.as_str(), "0000:af:06.1");
    }
}
