//! PF-side VF attributes: what a config asks for and what the PF reports.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::MacAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Auto,
    Enable,
    Disable,
}

impl LinkState {
    pub fn parse(s: &str) -> Option<LinkState> {
        match s {
            "auto" => Some(LinkState::Auto),
            "enable" => Some(LinkState::Enable),
            "disable" => Some(LinkState::Disable),
            _ => None,
        }
    }

    /// The `link_state` config key (sriov-cni, ib-sriov-cni): unset or empty
    /// leaves the link state alone.
    pub fn from_config(value: Option<&str>) -> Result<Option<LinkState>, crate::Error> {
        match value {
            None | Some("") => Ok(None),
            Some(s) => LinkState::parse(s).map(Some).ok_or_else(|| {
                crate::Error::config(
                    "link_state",
                    format!("{s:?} is not one of auto, enable, disable"),
                )
            }),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Auto => "auto",
            LinkState::Enable => "enable",
            LinkState::Disable => "disable",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VlanProto {
    #[default]
    #[serde(rename = "802.1Q")]
    Dot1Q,
    #[serde(rename = "802.1ad")]
    Dot1Ad,
}

impl VlanProto {
    /// Case-insensitive, as sriov-cni lower-cases the value.
    pub fn parse(s: &str) -> Option<VlanProto> {
        match s.to_ascii_lowercase().as_str() {
            "802.1q" => Some(VlanProto::Dot1Q),
            "802.1ad" => Some(VlanProto::Dot1Ad),
            _ => None,
        }
    }

    pub fn ethertype(self) -> u16 {
        match self {
            VlanProto::Dot1Q => 0x8100,
            VlanProto::Dot1Ad => 0x88a8,
        }
    }
}

impl fmt::Display for VlanProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VlanProto::Dot1Q => "802.1Q",
            VlanProto::Dot1Ad => "802.1ad",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vlan {
    pub id: u16,
    pub qos: u8,
    pub proto: VlanProto,
}

/// An InfiniBand GUID: 8 bytes, written `xx:xx:xx:xx:xx:xx:xx:xx`, held as
/// the big-endian u64 the kernel's `ifla_vf_guid` carries (as Go's netlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid(pub u64);

impl Guid {
    /// The value restored for a VF that had no GUID: mlx5 refuses all-zero.
    pub const ALL_ONES: Guid = Guid(u64::MAX);

    /// Parses 8 colon-separated hex bytes; all-zero and all-F are refused
    /// (not assignable).
    pub fn parse(s: &str) -> Option<Guid> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 8 || parts.iter().any(|p| p.len() != 2) {
            return None;
        }
        let mut b = [0u8; 8];
        for (x, p) in b.iter_mut().zip(&parts) {
            *x = u8::from_str_radix(p, 16).ok()?;
        }
        let g = u64::from_be_bytes(b);
        (g != 0 && g != u64::MAX).then_some(Guid(g))
    }

    /// From raw bytes (e.g. bytes 12..20 of an IPoIB hardware address).
    pub fn from_bytes(b: &[u8]) -> Option<Guid> {
        <[u8; 8]>::try_from(b)
            .ok()
            .map(|a| Guid(u64::from_be_bytes(a)))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0.to_be_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
}

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Guid, D::Error> {
        let s = String::deserialize(d)?;
        // Stored GUIDs may be all-zero or all-F (originals): parse bytes only.
        let bytes: Result<Vec<u8>, _> = s.split(':').map(|p| u8::from_str_radix(p, 16)).collect();
        bytes
            .ok()
            .and_then(|b| Guid::from_bytes(&b))
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a GUID")))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRate {
    pub min: u32,
    pub max: u32,
}

/// A VF's PF-side state as the PF reports it; the snapshot restored on DEL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfHwState {
    pub mac: MacAddr,
    pub vlan: Vlan,
    pub spoofchk: bool,
    pub trust: bool,
    pub link_state: LinkState,
    pub rate: TxRate,
    /// InfiniBand VFs (when the PF reports them).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub node_guid: Option<Guid>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub port_guid: Option<Guid>,
}

impl Default for VfHwState {
    /// A freshly created VF: no MAC, no VLAN, spoof checking on, untrusted.
    fn default() -> VfHwState {
        VfHwState {
            mac: MacAddr([0; 6]),
            vlan: Vlan::default(),
            spoofchk: true,
            trust: false,
            link_state: LinkState::Auto,
            rate: TxRate::default(),
            node_guid: None,
            port_guid: None,
        }
    }
}

/// What a config asks to program; None leaves the attribute untouched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfSettings {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub vlan: Option<Vlan>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mac: Option<MacAddr>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rate: Option<TxRate>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub spoofchk: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trust: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub link_state: Option<LinkState>,
    /// InfiniBand: node and port GUID, set together (ib-sriov).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub guid: Option<Guid>,
}

/// One PF-side write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfOp {
    Vlan(Vlan),
    Mac(MacAddr),
    Rate(TxRate),
    SpoofChk(bool),
    Trust(bool),
    LinkState(LinkState),
    NodeGuid(Guid),
    PortGuid(Guid),
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

impl fmt::Display for VfOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VfOp::Vlan(v) => write!(f, "vlan {} qos {} proto {}", v.id, v.qos, v.proto),
            VfOp::Mac(m) => write!(f, "mac {m}"),
            VfOp::Rate(r) => write!(f, "min_tx_rate {} max_tx_rate {}", r.min, r.max),
            VfOp::SpoofChk(b) => write!(f, "spoofchk {}", on_off(*b)),
            VfOp::Trust(b) => write!(f, "trust {}", on_off(*b)),
            VfOp::LinkState(s) => write!(f, "link_state {}", s.as_str()),
            VfOp::NodeGuid(g) => write!(f, "node_guid {g}"),
            VfOp::PortGuid(g) => write!(f, "port_guid {g}"),
        }
    }
}

impl VfOp {
    /// A stable name of the attribute (failpoints, logs).
    pub fn attribute(&self) -> &'static str {
        match self {
            VfOp::Vlan(_) => "vlan",
            VfOp::Mac(_) => "mac",
            VfOp::Rate(_) => "rate",
            VfOp::SpoofChk(_) => "spoofchk",
            VfOp::Trust(_) => "trust",
            VfOp::LinkState(_) => "link_state",
            VfOp::NodeGuid(_) => "node_guid",
            VfOp::PortGuid(_) => "port_guid",
        }
    }

    /// The failpoint after this write (test builds; literal names, so the
    /// crash matrix can list every failpoint from the source).
    pub fn failpoint_after(&self) -> &'static str {
        match self {
            VfOp::Vlan(_) => "vf.after_vlan",
            VfOp::Mac(_) => "vf.after_mac",
            VfOp::Rate(_) => "vf.after_rate",
            VfOp::SpoofChk(_) => "vf.after_spoofchk",
            VfOp::Trust(_) => "vf.after_trust",
            VfOp::LinkState(_) => "vf.after_link_state",
            VfOp::NodeGuid(_) => "vf.after_node_guid",
            VfOp::PortGuid(_) => "vf.after_port_guid",
        }
    }

    /// The config key this write comes from, for error messages.
    pub fn key(&self) -> &'static str {
        match self {
            VfOp::Vlan(_) => "vlan",
            VfOp::Mac(_) => "mac",
            // One write sets both rates; a refusal usually concerns min (igb).
            VfOp::Rate(r) if r.min > 0 => "min_tx_rate",
            VfOp::Rate(_) => "max_tx_rate",
            VfOp::SpoofChk(_) => "spoofchk",
            VfOp::Trust(_) => "trust",
            VfOp::LinkState(_) => "link_state",
            VfOp::NodeGuid(_) | VfOp::PortGuid(_) => "guid",
        }
    }

    /// The same attribute with the value `state` holds: the write that
    /// puts `state` back.
    pub fn value_in(self, state: &VfHwState) -> VfOp {
        match self {
            VfOp::Vlan(_) => VfOp::Vlan(state.vlan),
            VfOp::Mac(_) => VfOp::Mac(state.mac),
            VfOp::Rate(_) => VfOp::Rate(state.rate),
            VfOp::SpoofChk(_) => VfOp::SpoofChk(state.spoofchk),
            VfOp::Trust(_) => VfOp::Trust(state.trust),
            VfOp::LinkState(_) => VfOp::LinkState(state.link_state),
            VfOp::NodeGuid(g) => VfOp::NodeGuid(state.node_guid.unwrap_or(g)),
            VfOp::PortGuid(g) => VfOp::PortGuid(state.port_guid.unwrap_or(g)),
        }
    }

    /// Does `state` already show this write's effect?
    pub fn is_reflected_in(&self, state: &VfHwState) -> bool {
        match self {
            VfOp::Vlan(v) => state.vlan == *v,
            VfOp::Mac(m) => state.mac == *m,
            VfOp::Rate(r) => state.rate == *r,
            VfOp::SpoofChk(b) => state.spoofchk == *b,
            VfOp::Trust(b) => state.trust == *b,
            VfOp::LinkState(s) => state.link_state == *s,
            VfOp::NodeGuid(g) => state.node_guid == Some(*g),
            VfOp::PortGuid(g) => state.port_guid == Some(*g),
        }
    }
}

impl VfSettings {
    /// Writes in sriov-cni's ADD order: vlan, MAC, rate, spoofchk, trust, link state.
    pub fn add_order(&self) -> Vec<VfOp> {
        let mut ops = Vec::new();
        ops.extend(self.vlan.map(VfOp::Vlan));
        ops.extend(self.mac.map(VfOp::Mac));
        ops.extend(self.rate.map(VfOp::Rate));
        ops.extend(self.spoofchk.map(VfOp::SpoofChk));
        ops.extend(self.trust.map(VfOp::Trust));
        ops.extend(self.link_state.map(VfOp::LinkState));
        ops.extend(self.guid.map(VfOp::NodeGuid));
        ops.extend(self.guid.map(VfOp::PortGuid));
        ops
    }

    /// The writes that put back `orig` for every configured attribute, in
    /// sriov-cni's DEL order: vlan, spoofchk, MAC, trust, rate, link state.
    /// (MAC before trust: some drivers refuse a MAC change from an untrusted VF.)
    pub fn restore_order(&self, orig: &VfHwState) -> Vec<VfOp> {
        let mut ops = Vec::new();
        if self.vlan.is_some() {
            ops.push(VfOp::Vlan(orig.vlan));
        }
        if self.spoofchk.is_some() {
            ops.push(VfOp::SpoofChk(orig.spoofchk));
        }
        if self.mac.is_some() {
            ops.push(VfOp::Mac(orig.mac));
        }
        if self.trust.is_some() {
            ops.push(VfOp::Trust(orig.trust));
        }
        if self.rate.is_some() {
            ops.push(VfOp::Rate(orig.rate));
        }
        if self.link_state.is_some() {
            ops.push(VfOp::LinkState(orig.link_state));
        }
        if self.guid.is_some() {
            // A VF that had no GUID gets all-F back (mlx5 refuses zero).
            let back = |o: Option<Guid>| match o.unwrap_or(Guid(0)) {
                Guid(0) => Guid::ALL_ONES,
                other => other,
            };
            ops.push(VfOp::NodeGuid(back(orig.node_guid)));
            ops.push(VfOp::PortGuid(back(orig.port_guid)));
        }
        ops
    }

    /// Differences between what was programmed and what the PF reports now.
    pub fn mismatches(&self, now: &VfHwState) -> Vec<String> {
        self.add_order()
            .into_iter()
            .filter(|op| !op.is_reflected_in(now))
            .map(|op| format!("{} is not set (PF reports {})", op, op.value_in(now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> VfSettings {
        VfSettings {
            vlan: Some(Vlan {
                id: 100,
                qos: 3,
                proto: VlanProto::Dot1Q,
            }),
            mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            rate: Some(TxRate { min: 0, max: 1000 }),
            spoofchk: Some(false),
            trust: Some(true),
            link_state: Some(LinkState::Enable),
            guid: None,
        }
    }

    #[test]
    fn add_and_restore_orders_match_sriov_cni() {
        let keys: Vec<_> = all().add_order().iter().map(VfOp::key).collect();
        assert_eq!(
            keys,
            [
                "vlan",
                "mac",
                "max_tx_rate",
                "spoofchk",
                "trust",
                "link_state"
            ]
        );
        let orig = VfHwState::default();
        let keys: Vec<_> = all().restore_order(&orig).iter().map(VfOp::key).collect();
        assert_eq!(
            keys,
            [
                "vlan",
                "spoofchk",
                "mac",
                "trust",
                "max_tx_rate",
                "link_state"
            ]
        );
        assert!(VfSettings::default().restore_order(&orig).is_empty());
    }

    #[test]
    fn mismatches_name_the_attribute_and_current_value() {
        let now = VfHwState {
            vlan: Vlan {
                id: 100,
                qos: 3,
                proto: VlanProto::Dot1Q,
            },
            ..Default::default()
        };
        let want = VfSettings {
            vlan: now.vlan.into(),
            trust: Some(true),
            ..Default::default()
        };
        assert_eq!(
            want.mismatches(&now),
            ["trust on is not set (PF reports trust off)"]
        );
    }

    #[test]
    fn guids() {
        let g = Guid::parse("00:11:22:33:44:55:66:77").expect("guid");
        assert_eq!(g.0, 0x0011_2233_4455_6677);
        assert_eq!(g.to_string(), "00:11:22:33:44:55:66:77");
        for bad in [
            "00:00:00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff:ff:ff",
            "00:11:22",
            "0g:11:22:33:44:55:66:77",
            "0011:22:33:44:55:66:77",
        ] {
            assert!(Guid::parse(bad).is_none(), "{bad}");
        }
        let want = VfSettings {
            guid: Some(g),
            ..Default::default()
        };
        let ops: Vec<String> = want
            .restore_order(&VfHwState::default())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ops,
            [
                "node_guid ff:ff:ff:ff:ff:ff:ff:ff",
                "port_guid ff:ff:ff:ff:ff:ff:ff:ff"
            ]
        );
        let json = serde_json::to_string(&Guid(0)).expect("ser");
        assert_eq!(serde_json::from_str::<Guid>(&json).expect("de"), Guid(0));
    }

    #[test]
    fn parsing() {
        assert_eq!(VlanProto::parse("802.1Q"), Some(VlanProto::Dot1Q));
        assert_eq!(VlanProto::parse("802.1AD"), Some(VlanProto::Dot1Ad));
        assert_eq!(VlanProto::parse("802"), None);
        assert_eq!(LinkState::parse("enable"), Some(LinkState::Enable));
        assert_eq!(LinkState::parse("Enable"), None);
    }
}
