//! What ADD did to an attachment, on disk, so DEL, CHECK and GC can undo or
//! verify it without rediscovering anything.
//!
//! Ours: `<stateDir>/attachments/<containerID>:<ifname>.json` (':' cannot
//! occur in either part, so names never collide). sriov-cni's cache,
//! `<stateDir>/<containerID>-<ifname>`, is read too, so a node upgraded in
//! place can still release pods the Go plugin set up.

use std::path::PathBuf;

use libcni::Error;
use libcni::ids::{ContainerId, IfName, MacAddr, PciAddr};
use libcni::netdev::NetdevOrigin;
use libcni::state::{Lifetime, StateDir};
use libcni::vf::{LinkState, TxRate, VfHwState, VfSettings, Vlan, VlanProto};
use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A kernel netdev moved into the pod.
    Netdev,
    /// Bound to a userspace driver (vfio-pci...): PF side only.
    Userspace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Written before the first change: a crash mid-ADD leaves enough for DEL.
    Adding,
    Ready,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SriovRecord {
    pub version: u32,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub netns: Option<PathBuf>,
    #[serde(rename = "deviceID")]
    pub device_id: PciAddr,
    pub mode: Mode,
    pub phase: Phase,
    /// The VF's netdev as the host had it (netdev mode).
    pub host: Option<NetdevOrigin>,
    /// PF-side state before ADD, and what ADD changed.
    #[serde(rename = "origVf")]
    pub orig_vf: VfHwState,
    pub applied: VfSettings,
    /// What CHECK expects inside the pod.
    #[serde(rename = "podMac", default)]
    pub pod_mac: Option<MacAddr>,
    #[serde(rename = "podMtu", default)]
    pub pod_mtu: Option<u32>,
    /// The final ADD result (spec 1.1.0 layout).
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// The network (config `name`) that made the attachment: GC is per network.
    #[serde(default)]
    pub network: Option<String>,
    /// Set for records read from sriov-cni's cache: its file name.
    #[serde(skip)]
    pub legacy_file: Option<String>,
}

impl SriovRecord {
    pub fn new(
        container_id: &ContainerId,
        ifname: &IfName,
        netns: Option<PathBuf>,
        device_id: PciAddr,
        mode: Mode,
        orig_vf: VfHwState,
    ) -> SriovRecord {
        SriovRecord {
            version: VERSION,
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            netns,
            device_id,
            mode,
            phase: Phase::Adding,
            host: None,
            orig_vf,
            applied: VfSettings::default(),
            pod_mac: None,
            pod_mtu: None,
            result: None,
            network: None,
            legacy_file: None,
        }
    }

    /// The PF-side values that put the VF back as it was. When the PF
    /// reported the VF's own MAC (the host netdev's, as igb does for a VF
    /// no one gave a MAC), writing it back would make it administratively
    /// set and lock an untrusted VF out of changing it; all-zero clears the
    /// admin MAC instead, and the netdev keeps or regains its own.
    pub fn restore_target(&self) -> VfHwState {
        let mut target = self.orig_vf.clone();
        let own = self.host.as_ref().and_then(|h| h.mac);
        if !target.mac.is_zero() && own == Some(target.mac) {
            target.mac = MacAddr([0; 6]);
        }
        target
    }

    pub fn belongs_to(&self, container_id: &str, ifname: &str) -> bool {
        match &self.legacy_file {
            Some(name) => legacy_owner(name) == Some((container_id, ifname)),
            None => self.container_id == container_id && self.ifname == ifname,
        }
    }
}

pub struct Records {
    ours: StateDir,
    legacy: StateDir,
}

fn file_name(container_id: &str, ifname: &str) -> String {
    format!("{container_id}:{ifname}.json")
}

/// The attachment a sriov-cni cache name `<containerID>-<ifname>` stands
/// for. The name alone is ambiguous when a '-' could end either part
/// (`ctrx-b-net1`: ctrx/b-net1 or ctrx-b/net1); like GC, take the split at
/// the last '-', so interface names with '-' are never matched (kubelet's
/// IDs are hex, Multus names interfaces net1, net2...).
fn legacy_owner(name: &str) -> Option<(&str, &str)> {
    name.rsplit_once('-')
}

impl Records {
    /// Ours last the boot (the VF settings they restore do not outlive
    /// it); sriov-cni's are read where it left them, `state` itself.
    pub fn open(state: &StateDir, lifetime: &Lifetime) -> Result<Records, Error> {
        Ok(Records {
            ours: state.subdir_with("attachments", lifetime)?,
            legacy: state.clone(),
        })
    }

    pub fn load(
        &self,
        container_id: &ContainerId,
        ifname: &IfName,
    ) -> Result<Option<SriovRecord>, Error> {
        let name = file_name(container_id.as_str(), ifname.as_str());
        if let Some(r) = self.ours.read_json(&name, VERSION)? {
            return Ok(Some(r));
        }
        let legacy = format!("{container_id}-{ifname}");
        if legacy_owner(&legacy) != Some((container_id.as_str(), ifname.as_str())) {
            // Taking it could release another pod's VF (it is most likely
            // container ...-<first part of ifname>'s); leaving it strands at
            // most this one's.
            if self.legacy.read(&legacy)?.is_some() {
                tracing::warn!(
                    file = %self.legacy.path().join(&legacy).display(),
                    "not using a sriov-cni state file that may belong to another container (an interface name with '-' makes its name ambiguous); remove it by hand once its pod is gone"
                );
            }
            return Ok(None);
        }
        Ok(self.legacy.read(&legacy)?.and_then(|bytes| {
            from_sriov_cni_cache(&bytes, &legacy, container_id.as_str(), ifname.as_str())
        }))
    }

    pub fn save(&self, r: &SriovRecord) -> Result<(), Error> {
        Ok(self
            .ours
            .write_json(&file_name(&r.container_id, &r.ifname), r)?)
    }

    pub fn remove(&self, r: &SriovRecord) -> Result<(), Error> {
        match &r.legacy_file {
            Some(name) => self.legacy.remove(name)?,
            None => self.ours.remove(&file_name(&r.container_id, &r.ifname))?,
        };
        Ok(())
    }

    /// Every record, ours and sriov-cni's; unreadable files are logged and skipped.
    pub fn all(&self) -> Result<Vec<SriovRecord>, Error> {
        let mut out = Vec::new();
        for name in self.ours.list()? {
            match self.ours.read_json::<SriovRecord>(&name, VERSION) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "skipping unreadable state file")
                }
            }
        }
        for name in self.legacy.list()? {
            let Some(bytes) = self.legacy.read(&name)? else {
                continue;
            };
            // Without the pod's ifname in the file, split at the last '-'.
            let (cid, ifname) = legacy_owner(&name).unwrap_or((name.as_str(), ""));
            match from_sriov_cni_cache(&bytes, &name, cid, ifname) {
                Some(r) => out.push(r),
                None => {
                    tracing::warn!(file = %name, "skipping a file that is not a sriov-cni cache")
                }
            }
        }
        Ok(out)
    }
}

/// sriov-cni's cached NetConf (Go field names; only what DEL needs).
#[derive(Deserialize)]
struct GoCache {
    /// sriov-cni caches its whole NetConf, the network's `name` included.
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "deviceID")]
    device_id: String,
    #[serde(rename = "OrigVfState")]
    orig: GoVfState,
    #[serde(rename = "MAC", default)]
    mac: String,
    vlan: Option<i64>,
    #[serde(rename = "vlanQoS")]
    vlan_qos: Option<i64>,
    #[serde(rename = "vlanProto")]
    vlan_proto: Option<String>,
    #[serde(default)]
    spoofchk: String,
    #[serde(default)]
    trust: String,
    #[serde(default)]
    link_state: String,
    min_tx_rate: Option<i64>,
    max_tx_rate: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GoVfState {
    #[serde(rename = "HostIFName")]
    host_ifname: String,
    #[serde(rename = "SpoofChk")]
    spoofchk: bool,
    #[serde(rename = "Trust")]
    trust: bool,
    #[serde(rename = "AdminMAC")]
    admin_mac: String,
    #[serde(rename = "EffectiveMAC")]
    effective_mac: String,
    #[serde(rename = "Vlan")]
    vlan: i64,
    #[serde(rename = "VlanQoS")]
    vlan_qos: i64,
    /// An ethertype (0x8100 / 0x88a8), or 0 meaning 802.1Q.
    #[serde(rename = "VlanProto")]
    vlan_proto: i64,
    #[serde(rename = "MinTxRate")]
    min_tx_rate: i64,
    #[serde(rename = "MaxTxRate")]
    max_tx_rate: i64,
    #[serde(rename = "LinkState")]
    link_state: u32,
    #[serde(rename = "MTU")]
    mtu: i64,
}

fn clamp_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// Converts sriov-cni's cache into a record DEL can act on, with sriov-cni's
/// DEL semantics: restore what was configured, and the admin MAC whenever one
/// was recorded.
fn from_sriov_cni_cache(
    bytes: &[u8],
    file: &str,
    container_id: &str,
    ifname: &str,
) -> Option<SriovRecord> {
    let go: GoCache = serde_json::from_slice(bytes).ok()?;
    let device_id = PciAddr::parse(&go.device_id).ok()?;
    let o = &go.orig;
    let orig_vf = VfHwState {
        mac: MacAddr::parse(&o.admin_mac).unwrap_or(MacAddr([0; 6])),
        vlan: Vlan {
            id: u16::try_from(o.vlan).unwrap_or(0),
            qos: u8::try_from(o.vlan_qos).unwrap_or(0),
            proto: if o.vlan_proto == 0x88a8 {
                VlanProto::Dot1Ad
            } else {
                VlanProto::Dot1Q
            },
        },
        spoofchk: o.spoofchk,
        trust: o.trust,
        link_state: match o.link_state {
            1 => LinkState::Enable,
            2 => LinkState::Disable,
            _ => LinkState::Auto,
        },
        rate: TxRate {
            min: clamp_u32(o.min_tx_rate),
            max: clamp_u32(o.max_tx_rate),
        },
        node_guid: None,
        port_guid: None,
    };
    let set = |s: &str| (!s.is_empty()).then_some(s == "on");
    let applied = VfSettings {
        vlan: go.vlan.map(|id| Vlan {
            id: u16::try_from(id).unwrap_or(0),
            qos: go.vlan_qos.and_then(|q| u8::try_from(q).ok()).unwrap_or(0),
            proto: go
                .vlan_proto
                .as_deref()
                .and_then(VlanProto::parse)
                .unwrap_or_default(),
        }),
        mac: (!go.mac.is_empty() || !o.admin_mac.is_empty())
            .then(|| MacAddr::parse(&go.mac).unwrap_or(orig_vf.mac)),
        rate: (go.min_tx_rate.is_some() || go.max_tx_rate.is_some()).then(|| TxRate {
            min: clamp_u32(go.min_tx_rate.unwrap_or(0)),
            max: clamp_u32(go.max_tx_rate.unwrap_or(0)),
        }),
        spoofchk: set(&go.spoofchk),
        trust: set(&go.trust),
        link_state: LinkState::parse(&go.link_state),
        guid: None,
    };
    let host = IfName::parse(&o.host_ifname).ok().map(|name| NetdevOrigin {
        name,
        mac: MacAddr::parse(&o.effective_mac).ok(),
        mtu: clamp_u32(o.mtu),
        index: 0,
    });
    Some(SriovRecord {
        version: VERSION,
        container_id: container_id.to_string(),
        ifname: ifname.to_string(),
        netns: None,
        device_id,
        mode: if host.is_some() {
            Mode::Netdev
        } else {
            Mode::Userspace
        },
        phase: Phase::Ready,
        host,
        orig_vf,
        applied,
        pod_mac: None,
        pod_mtu: None,
        result: None,
        network: go.name.clone(),
        legacy_file: Some(file.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache as sriov-cni master writes it (Go field names, NetConf merged in).
    const GO_CACHE: &str = r#"{"cniVersion":"1.0.0","name":"sriov-net","type":"sriov",
      "ipam":{"type":"host-local"},"OrigVfState":{"HostIFName":"enp175s6","SpoofChk":true,
      "Trust":false,"AdminMAC":"00:00:00:00:00:00","EffectiveMAC":"6e:1c:54:be:aa:01","Vlan":0,
      "VlanQoS":0,"VlanProto":33024,"MinTxRate":0,"MaxTxRate":0,"LinkState":0,"MTU":1500},
      "Master":"enp175s0f1","MAC":"02:00:00:00:00:07","MTU":1500,"vlan":100,"vlanQoS":2,
      "vlanProto":"802.1q","deviceID":"0000:af:06.0","VFID":0,"spoofchk":"off","trust":"on",
      "link_state":"enable","runtimeConfig":{},"logLevel":"info"}"#;

    #[test]
    fn sriov_cni_cache_becomes_a_record_with_its_del_semantics() {
        let r = from_sriov_cni_cache(GO_CACHE.as_bytes(), "c1-net1", "c1", "net1").expect("parsed");
        assert_eq!(r.device_id.as_str(), "0000:af:06.0");
        assert_eq!(r.mode, Mode::Netdev);
        let host = r.host.as_ref().expect("host");
        assert_eq!(host.name.as_str(), "enp175s6");
        assert_eq!(
            host.mac.map(|m| m.to_string()).as_deref(),
            Some("6e:1c:54:be:aa:01")
        );
        assert_eq!(host.mtu, 1500);
        assert_eq!(
            r.applied.vlan,
            Some(Vlan {
                id: 100,
                qos: 2,
                proto: VlanProto::Dot1Q
            })
        );
        assert_eq!(r.applied.spoofchk, Some(false));
        assert_eq!(r.applied.trust, Some(true));
        assert_eq!(r.applied.link_state, Some(LinkState::Enable));
        assert_eq!(r.applied.rate, None);
        assert!(r.orig_vf.spoofchk && !r.orig_vf.trust);
        // Restore order puts back the originals.
        let ops: Vec<String> = r
            .applied
            .restore_order(&r.orig_vf)
            .iter()
            .map(|o| o.to_string())
            .collect();
        assert_eq!(
            ops,
            [
                "vlan 0 qos 0 proto 802.1Q",
                "spoofchk on",
                "mac 00:00:00:00:00:00",
                "trust off",
                "link_state auto"
            ]
        );
        assert!(r.belongs_to("c1", "net1") && !r.belongs_to("c1", "net2"));
    }

    #[test]
    fn records_round_trip_and_list_both_formats() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("state");
        let records = Records::open(&state, &Lifetime::this_boot()).expect("records");
        let cid = ContainerId::parse("c-2").expect("cid");
        let ifname = IfName::parse("net1").expect("ifname");
        let pci = PciAddr::parse("0000:af:06.1").expect("pci");
        let rec = SriovRecord::new(
            &cid,
            &ifname,
            None,
            pci,
            Mode::Userspace,
            VfHwState::default(),
        );
        records.save(&rec).expect("save");
        assert_eq!(
            records.load(&cid, &ifname).expect("load"),
            Some(rec.clone())
        );
        state.write("c1-net1", GO_CACHE.as_bytes()).expect("legacy");
        state.write("not-a-cache", b"{}").expect("junk");
        let all = records.all().expect("all");
        assert_eq!(all.len(), 2);
        let legacy = all
            .iter()
            .find(|r| r.legacy_file.is_some())
            .expect("legacy listed");
        assert!(legacy.belongs_to("c1", "net1"));
        for r in &all {
            records.remove(r).expect("remove");
        }
        assert!(records.all().expect("all").is_empty());
        assert!(
            state.read("not-a-cache").expect("read").is_some(),
            "unknown files are left alone"
        );
    }

    #[test]
    fn a_sriov_cni_file_is_never_taken_for_another_container() {
        // tests/corpus/hostile/sriov/legacy-record-prefix-collision.json: DEL
        // of ctrx/b-net1 used to release the VF of pod ctrx-b (file ctrx-b-net1).
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("state");
        let records = Records::open(&state, &Lifetime::this_boot()).expect("records");
        state
            .write("ctrx-b-net1", GO_CACHE.as_bytes())
            .expect("legacy");
        let id = |c: &str, i: &str| {
            (
                ContainerId::parse(c).expect("cid"),
                IfName::parse(i).expect("if"),
            )
        };
        let (c, i) = id("ctrx", "b-net1");
        assert_eq!(records.load(&c, &i).expect("load"), None);
        let (c, i) = id("ctrx-b", "net1");
        let r = records.load(&c, &i).expect("load").expect("its owner's");
        assert!(r.belongs_to("ctrx-b", "net1") && !r.belongs_to("ctrx", "b-net1"));
    }
}
