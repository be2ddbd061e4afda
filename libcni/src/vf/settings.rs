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
    fn parsing() {
        assert_eq!(VlanProto::parse("802.1Q"), Some(VlanProto::Dot1Q));
        assert_eq!(VlanProto::parse("802.1AD"), Some(VlanProto::Dot1Ad));
        assert_eq!(VlanProto::parse("802"), None);
        assert_eq!(LinkState::parse("enable"), Some(LinkState::Enable));
        assert_eq!(LinkState::parse("Enable"), None);
    }
}
