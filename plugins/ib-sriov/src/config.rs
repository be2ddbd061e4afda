//! The `ib-sriov` config: upstream ib-sriov-cni's keys, validated up front.

use std::collections::HashMap;
use std::path::PathBuf;

use libcni::Error;
use libcni::config::{self, NetConf};
use libcni::env::CniArgs;
use libcni::ids::PciAddr;
use libcni::vf::{Guid, LinkState};
use serde::Deserialize;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/ib-sriov";

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(rename = "infinibandGUID")]
    infiniband_guid: Option<String>,
    #[serde(rename = "deviceID")]
    device_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Args {
    /// Multus `cni-args`: map keys are matched exactly.
    cni: Option<HashMap<String, serde_json::Value>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawConf {
    #[serde(rename = "deviceID")]
    device_id: Option<String>,
    guid: Option<String>,
    pkey: Option<serde_json::Value>,
    link_state: Option<String>,
    #[serde(rename = "rdmaIsolation")]
    rdma_isolation: Option<bool>,
    #[serde(rename = "ibKubernetesEnabled")]
    ib_kubernetes_enabled: Option<bool>,
    #[serde(rename = "vfioPciMode")]
    vfio_pci_mode: Option<bool>,
    #[serde(rename = "runtimeConfig")]
    runtime_config: Option<RuntimeConfig>,
    args: Option<Args>,
    #[serde(rename = "stateDir")]
    state_dir: Option<String>,
    #[serde(rename = "sysfsRoot")]
    sysfs_root: Option<String>,
}

/// Where state and sysfs are: all DEL needs.
#[derive(Clone, Debug)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub sysfs_root: PathBuf,
}

#[derive(Clone, Debug)]
pub struct IbConf {
    pub device_id: PciAddr,
    pub guid: Option<Guid>,
    /// Recorded for ib-kubernetes (it adds the GUID to the partition in the SM).
    pub pkey: Option<u16>,
    pub link_state: Option<LinkState>,
    pub rdma_isolation: bool,
    /// None = decide from the VF's driver.
    pub vfio_pci_mode: Option<bool>,
    pub paths: Paths,
}

fn paths(state_dir: Option<String>, sysfs_root: Option<String>) -> Result<Paths, Error> {
    Ok(Paths {
        state_dir: config::abs_path("stateDir", state_dir, DEFAULT_STATE_DIR)?,
        sysfs_root: config::abs_path("sysfsRoot", sysfs_root, "/sys")?,
    })
}

/// DEL, GC and STATUS: paths only, so an invalid config never blocks release.
pub fn load_paths(raw: &serde_json::Value) -> Result<Paths, Error> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(rename = "stateDir")]
        state_dir: Option<String>,
        #[serde(rename = "sysfsRoot")]
        sysfs_root: Option<String>,
    }
    let o: Only = config::decode(raw)?;
    paths(o.state_dir, o.sysfs_root)
}

/// `0x7fff`, `32767`, or with the full-membership bit `0xffff`.
fn pkey(v: &serde_json::Value) -> Result<u16, Error> {
    let n = match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            }
        }
        _ => None,
    };
    match n {
        Some(n) if n <= 0xffff && (n & 0x7fff) >= 1 => Ok(n as u16),
        _ => Err(Error::config(
            "pkey",
            format!(
                "{v} is not a partition key 0x0001-0x7fff (optionally with the full-membership bit 0x8000)"
            ),
        )),
    }
}

fn guid(key: &str, s: &str) -> Result<Guid, Error> {
    Guid::parse(s).ok_or_else(|| {
        Error::config(key, format!("{s:?} is not a GUID of 8 hex bytes like 02:00:00:00:00:00:00:01 (all-zero and all-F are not assignable)"))
    })
}

impl IbConf {
    pub fn load(raw: &serde_json::Value, net: &NetConf, args: &CniArgs) -> Result<IbConf, Error> {
        let mut c: RawConf = config::decode(raw)?;
        let rc = c.runtime_config.take().unwrap_or_default();
        let cni_args = c.args.take().and_then(|a| a.cni).unwrap_or_default();
        let arg_str = |k: &str| cni_args.get(k).and_then(|v| v.as_str()).map(str::to_string);
        // GUID precedence: runtimeConfig > args (args.cni.guid, then CNI_ARGS GUID) > config.
        let guid = [
            ("runtimeConfig.infinibandGUID", rc.infiniband_guid.clone()),
            ("args.cni.guid", arg_str("guid")),
            ("CNI_ARGS GUID", args.get("GUID").map(str::to_string)),
            ("guid", c.guid.clone()),
        ]
        .into_iter()
        .find_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
        .map(|(k, v)| guid(k, &v))
        .transpose()?;
        if c.ib_kubernetes_enabled == Some(true) {
            match arg_str("mellanox.infiniband.app").as_deref() {
                Some("configured") => {}
                other => {
                    return Err(Error::config(
                        "ibKubernetesEnabled",
                        format!(
                            "args.cni[\"mellanox.infiniband.app\"] is {other:?}, not \"configured\": ib-kubernetes has not set up this pod (is it running?)"
                        ),
                    ));
                }
            }
            if guid.is_none() {
                return Err(Error::config(
                    "ibKubernetesEnabled",
                    "no GUID was given (ib-kubernetes provides it in args.cni.guid)",
                ));
            }
        }
        if net.ipam_type() == Some("dhcp") {
            return Err(Error::config(
                "ipam.type",
                "dhcp is not supported on InfiniBand VFs",
            ));
        }
        let (key, device) = match (rc.device_id, c.device_id.take()) {
            (Some(d), _) if !d.is_empty() => ("runtimeConfig.deviceID", d),
            (_, Some(d)) if !d.is_empty() => ("deviceID", d),
            _ => {
                return Err(Error::config(
                    "deviceID",
                    "the VF's PCI address is required",
                ));
            }
        };
        Ok(IbConf {
            device_id: PciAddr::parse(&device).map_err(|e| Error::config(key, e.to_string()))?,
            guid,
            pkey: c.pkey.as_ref().map(pkey).transpose()?,
            link_state: LinkState::from_config(c.link_state.as_deref())?,
            rdma_isolation: c.rdma_isolation.unwrap_or(false),
            vfio_pci_mode: c.vfio_pci_mode,
            paths: paths(c.state_dir, c.sysfs_root)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load(v: serde_json::Value, args: &str) -> Result<IbConf, Error> {
        let net: NetConf = config::decode(&v).expect("netconf");
        IbConf::load(&v, &net, &CniArgs::parse(args).expect("args"))
    }

    #[test]
    fn guid_precedence_runtime_args_config() {
        let mut v = json!({"deviceID": "0000:af:06.0", "guid": "02:00:00:00:00:00:00:04",
                           "args": {"cni": {"guid": "02:00:00:00:00:00:00:02"}},
                           "runtimeConfig": {"infinibandGUID": "02:00:00:00:00:00:00:01"}});
        let g = |v: &serde_json::Value, a: &str| {
            load(v.clone(), a)
                .expect("valid")
                .guid
                .map(|g| g.to_string())
        };
        assert_eq!(
            g(&v, "GUID=02:00:00:00:00:00:00:03").as_deref(),
            Some("02:00:00:00:00:00:00:01")
        );
        v["runtimeConfig"] = json!({});
        assert_eq!(
            g(&v, "GUID=02:00:00:00:00:00:00:03").as_deref(),
            Some("02:00:00:00:00:00:00:02")
        );
        v["args"] = json!({});
        assert_eq!(
            g(&v, "GUID=02:00:00:00:00:00:00:03").as_deref(),
            Some("02:00:00:00:00:00:00:03")
        );
        assert_eq!(g(&v, "").as_deref(), Some("02:00:00:00:00:00:00:04"));
    }

    #[test]
    fn validation_names_the_key() {
        for (v, key) in [
            (json!({}), "deviceID"),
            (json!({"deviceID": "nope"}), "deviceID"),
            (
                json!({"deviceID": "0000:af:06.0", "guid": "00:00:00:00:00:00:00:00"}),
                "guid",
            ),
            (
                json!({"deviceID": "0000:af:06.0", "guid": "ff:ff:ff:ff:ff:ff:ff:ff"}),
                "guid",
            ),
            (
                json!({"deviceID": "0000:af:06.0", "runtimeConfig": {"infinibandGUID": "zz"}}),
                "runtimeConfig.infinibandGUID",
            ),
            (
                json!({"deviceID": "0000:af:06.0", "pkey": "0x8000"}),
                "pkey",
            ),
            (
                json!({"deviceID": "0000:af:06.0", "pkey": "0x10000"}),
                "pkey",
            ),
            (
                json!({"deviceID": "0000:af:06.0", "link_state": "up"}),
                "link_state",
            ),
            (
                json!({"deviceID": "0000:af:06.0", "ipam": {"type": "dhcp"}}),
                "ipam.type",
            ),
            (
                json!({"deviceID": "0000:af:06.0", "ibKubernetesEnabled": true, "guid": "02:00:00:00:00:00:00:01"}),
                "ibKubernetesEnabled",
            ),
            (
                json!({"deviceID": "0000:af:06.0", "ibKubernetesEnabled": true,
                    "args": {"cni": {"mellanox.infiniband.app": "configured"}}}),
                "ibKubernetesEnabled",
            ),
        ] {
            match load(v.clone(), "") {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        let ok = load(
            json!({"deviceID": "0000:af:06.0", "pkey": "0xffff", "ibKubernetesEnabled": true, "rdmaIsolation": true,
                   "args": {"cni": {"mellanox.infiniband.app": "configured", "guid": "02:00:00:00:00:00:00:09"}}}),
            "",
        )
        .expect("valid");
        assert_eq!((ok.pkey, ok.rdma_isolation), (Some(0xffff), true));
    }
}
