//! rtnetlink over a synchronous socket, one typed method per operation.
//!
//! A `RouteSocket` acts on the network namespace it was opened in; open it
//! inside the target netns with `NetNs::route_socket`.

mod addr;
mod error;
mod link;
mod neigh;
mod route;
mod rule;
mod socket;

pub use error::NetlinkError;
pub use link::{Link, format_hw};
pub use neigh::Neighbour;
pub use route::{MAIN_TABLE, RouteSpec};
pub use rule::RuleSpec;
pub use socket::{ReplyReader, RouteSocket};

/// Re-exported so callers can build VF attributes without naming the crate.
pub use netlink_packet_route::link::{
    VfInfo, VfInfoLinkState, VfInfoMac, VfInfoRate, VfInfoSpoofCheck, VfInfoTrust, VfLinkState,
    VfVlan, VfVlanInfo, VlanProtocol,
};
