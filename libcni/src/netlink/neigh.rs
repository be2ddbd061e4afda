//! Neighbour (ARP/NDP) cache entries: reading one, and asking the kernel to
//! resolve an address (NTF_USE), which is how the gateway probe avoids a
//! packet socket (closing one waits for an RCU grace period, ~16 ms).

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::error::NetlinkError;
use super::socket::RouteSocket;

/// A neighbour entry as a probe sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Neighbour {
    /// Resolution under way (INCOMPLETE).
    Resolving,
    /// Resolved: the link-layer address (REACHABLE, STALE, DELAY, PROBE).
    Resolved(Vec<u8>),
    /// Resolution gave up (FAILED).
    Failed,
    /// Anything else: PERMANENT, NOARP, NONE (set or kept by someone else).
    Other,
}

fn message(index: u32, ip: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(ip)));
    msg
}

impl RouteSocket {
    /// The entry for `ip` on link `index`; None when there is none.
    pub fn neighbour(&self, index: u32, ip: IpAddr) -> Result<Option<Neighbour>, NetlinkError> {
        let reply = match self.get(
            || format!("look up neighbour {ip} on link {index}"),
            RouteNetlinkMessage::GetNeighbour(message(index, ip)),
        ) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(RouteNetlinkMessage::NewNeighbour(m)) = reply else {
            return Ok(None);
        };
        let lladdr = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) => Some(l.clone()),
            _ => None,
        });
        Ok(Some(match (m.header.state, lladdr) {
            (NeighbourState::Incomplete, _) => Neighbour::Resolving,
            (NeighbourState::Failed, _) => Neighbour::Failed,
            (
                NeighbourState::Reachable
                | NeighbourState::Stale
                | NeighbourState::Delay
                | NeighbourState::Probe,
                Some(l),
            ) => Neighbour::Resolved(l),
            _ => Neighbour::Other,
        }))
    }

    /// Creates an entry for `ip` on link `index` and has the kernel start
    /// resolving it at once (an ARP request or neighbour solicitation).
    /// Fails with EEXIST when an entry is already there.
    pub fn resolve_neighbour(&self, index: u32, ip: IpAddr) -> Result<(), NetlinkError> {
        let mut msg = message(index, ip);
        msg.header.flags = NeighbourFlags::Use;
        self.execute(
            || format!("resolve neighbour {ip} on link {index}"),
            RouteNetlinkMessage::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Removes the entry for `ip` on link `index`; missing is fine.
    pub fn del_neighbour(&self, index: u32, ip: IpAddr) -> Result<(), NetlinkError> {
        match self.execute(
            || format!("remove neighbour {ip} on link {index}"),
            RouteNetlinkMessage::DelNeighbour(message(index, ip)),
            0,
        ) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }
}
