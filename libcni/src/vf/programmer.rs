//! Reading and writing a VF's PF-side attributes.
//!
//! `VfProgrammer` is the seam between our logic and the PF driver: production
//! uses `NetlinkVfs` (rtnetlink on the PF), host-lane tests inject the
//! simulated PF of `vf::sim` through the plugin's constructor.

use netlink_packet_route::link::{
    VfInfo, VfInfoGuid, VfInfoLinkState, VfInfoMac, VfInfoRate, VfInfoSpoofCheck, VfInfoTrust,
    VfInfoVlan, VfLinkState, VfVlan, VfVlanInfo, VlanProtocol,
};

use super::settings::{Guid, LinkState, TxRate, VfHwState, VfOp, Vlan, VlanProto};
use crate::error::Error;
use crate::ids::MacAddr;
use crate::netlink::{Link, RouteSocket};
use crate::sysfs::VfRef;

pub trait VfProgrammer {
    /// The VF's current PF-side state.
    fn read(&self, vf: &VfRef) -> Result<VfHwState, Error>;
    /// One PF-side write.
    fn write(&self, vf: &VfRef, op: VfOp) -> Result<(), Error>;
}

/// Programs VFs through rtnetlink on their PF, in the host netns.
pub struct NetlinkVfs {
    sock: RouteSocket,
}

impl NetlinkVfs {
    pub fn new(sock: RouteSocket) -> NetlinkVfs {
        NetlinkVfs { sock }
    }

    fn pf_link(&self, vf: &VfRef) -> Result<Link, Error> {
        self.sock
            .link_by_name(vf.pf.name.as_str())?
            .ok_or_else(|| Error::Device {
                device: vf.pf.name.to_string(),
                reason: "PF network device not found in the host network namespace".into(),
            })
    }
}

/// Decodes one VF's entry of IFLA_VFINFO_LIST.
pub fn hw_state_from_infos(index: u32, table: &[Vec<VfInfo>]) -> Option<VfHwState> {
    let entry = table.iter().find(|infos| {
        infos
            .iter()
            .any(|i| matches!(i, VfInfo::Mac(m) if m.vf_id == index))
    })?;
    let mut state = VfHwState::default();
    for info in entry {
        match info {
            VfInfo::Mac(m) => {
                state.mac = MacAddr::from_slice(&m.mac[..6]).unwrap_or(MacAddr([0; 6]));
            }
            VfInfo::Vlan(v) => {
                state.vlan.id = u16::try_from(v.vlan_id).unwrap_or(0);
                state.vlan.qos = u8::try_from(v.qos).unwrap_or(0);
            }
            VfInfo::VlanList(list) => {
                for entry in list {
                    if let VfVlan::Info(v) = entry {
                        state.vlan = Vlan {
                            id: u16::try_from(v.vlan_id).unwrap_or(0),
                            qos: u8::try_from(v.qos).unwrap_or(0),
                            proto: match v.protocol {
                                VlanProtocol::Ieee8021Ad => VlanProto::Dot1Ad,
                                _ => VlanProto::Dot1Q,
                            },
                        };
                    }
                }
            }
            VfInfo::Rate(r) => {
                state.rate = TxRate {
                    min: r.min_tx_rate,
                    max: r.max_tx_rate,
                }
            }
            VfInfo::IbNodeGuid(g) => state.node_guid = Some(Guid(g.guid)),
            VfInfo::IbPortGuid(g) => state.port_guid = Some(Guid(g.guid)),
            VfInfo::SpoofCheck(s) => state.spoofchk = s.enabled,
            VfInfo::Trust(t) => state.trust = t.enabled,
            VfInfo::LinkState(l) => {
                state.link_state = match l.state {
                    VfLinkState::Enable => LinkState::Enable,
                    VfLinkState::Disable => LinkState::Disable,
                    _ => LinkState::Auto,
                }
            }
            _ => {}
        }
    }
    Some(state)
}

/// Encodes one write as the attribute sriov-cni sends.
pub fn vf_info_for(index: u32, op: VfOp) -> VfInfo {
    match op {
        // 802.1Q goes in the legacy IFLA_VF_VLAN, which every driver accepts;
        // only 802.1ad needs IFLA_VF_VLAN_LIST with an explicit protocol.
        VfOp::Vlan(v) if v.proto == VlanProto::Dot1Q => {
            VfInfo::Vlan(VfInfoVlan::new(index, u32::from(v.id), u32::from(v.qos)))
        }
        VfOp::Vlan(v) => VfInfo::VlanList(vec![VfVlan::Info(VfVlanInfo::new(
            index,
            u32::from(v.id),
            u32::from(v.qos),
            VlanProtocol::Ieee8021Ad,
        ))]),
        VfOp::Mac(m) => VfInfo::Mac(VfInfoMac::new(index, &m.0)),
        VfOp::Rate(r) => VfInfo::Rate(VfInfoRate::new(index, r.min, r.max)),
        VfOp::SpoofChk(b) => VfInfo::SpoofCheck(VfInfoSpoofCheck::new(index, b)),
        VfOp::Trust(b) => VfInfo::Trust(VfInfoTrust::new(index, b)),
        VfOp::NodeGuid(g) => VfInfo::IbNodeGuid(VfInfoGuid::new(index, g.0)),
        VfOp::PortGuid(g) => VfInfo::IbPortGuid(VfInfoGuid::new(index, g.0)),
        VfOp::LinkState(s) => VfInfo::LinkState(VfInfoLinkState::new(
            index,
            match s {
                LinkState::Auto => VfLinkState::Auto,
                LinkState::Enable => VfLinkState::Enable,
                LinkState::Disable => VfLinkState::Disable,
            },
        )),
    }
}

impl VfProgrammer for NetlinkVfs {
    fn read(&self, vf: &VfRef) -> Result<VfHwState, Error> {
        let pf = self.pf_link(vf)?;
        let table = self.sock.vf_table(&pf)?;
        hw_state_from_infos(vf.index, &table).ok_or_else(|| Error::Device {
            device: vf.pci.to_string(),
            reason: format!(
                "PF {} reports no VF {} in its VF table",
                vf.pf.name, vf.index
            ),
        })
    }

    fn write(&self, vf: &VfRef, op: VfOp) -> Result<(), Error> {
        let pf = self.pf_link(vf)?;
        self.sock
            .set_vf(
                &pf,
                || format!("set VF {} {op} on PF {}", vf.index, vf.pf.name),
                vf_info_for(vf.index, op),
            )
            .map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_through_the_decoder() {
        let mut state = VfHwState::default();
        let ops = [
            VfOp::Mac(MacAddr([2, 1, 2, 3, 4, 5])),
            VfOp::Vlan(Vlan {
                id: 100,
                qos: 5,
                proto: VlanProto::Dot1Ad,
            }),
            VfOp::Rate(TxRate { min: 10, max: 100 }),
            VfOp::SpoofChk(false),
            VfOp::Trust(true),
            VfOp::LinkState(LinkState::Disable),
        ];
        let infos: Vec<VfInfo> = ops.iter().map(|op| vf_info_for(3, *op)).collect();
        let decoded = hw_state_from_infos(3, &[infos]).expect("entry for VF 3");
        for op in ops {
            assert!(op.is_reflected_in(&decoded), "{op} lost in {decoded:?}");
        }
        state.vlan = Vlan {
            id: 7,
            qos: 1,
            proto: VlanProto::Dot1Q,
        };
        let legacy = vf_info_for(3, VfOp::Vlan(state.vlan));
        assert!(
            matches!(legacy, VfInfo::Vlan(_)),
            "802.1Q uses IFLA_VF_VLAN"
        );
        let mac = vf_info_for(3, VfOp::Mac(MacAddr([2, 0, 0, 0, 0, 9])));
        let decoded = hw_state_from_infos(3, &[vec![mac, legacy]]).expect("vf 3");
        assert_eq!(decoded.vlan, state.vlan);
        assert!(hw_state_from_infos(4, &[vec![vf_info_for(3, VfOp::Trust(true))]]).is_none());
    }
}
