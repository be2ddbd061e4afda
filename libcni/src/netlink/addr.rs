//! Interface addresses.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::error::NetlinkError;
use super::link::Link;
use super::socket::RouteSocket;

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn address_message(link: &Link, addr: &IpNet) -> AddressMessage {
    let ip = addr.addr();
    let mut msg = AddressMessage::default();
    msg.header.family = family(&ip);
    msg.header.prefix_len = addr.prefix_len();
    msg.header.scope = AddressScope::Universe;
    msg.header.index = link.index;
    // iproute2 sets IFA_LOCAL and IFA_ADDRESS alike for non point-to-point links.
    if ip.is_ipv4() {
        msg.attributes.push(AddressAttribute::Local(ip));
    }
    msg.attributes.push(AddressAttribute::Address(ip));
    msg
}

impl RouteSocket {
    pub fn add_address(&self, link: &Link, addr: &IpNet) -> Result<(), NetlinkError> {
        self.execute(
            || format!("add address {addr} to {}", link.name),
            RouteNetlinkMessage::NewAddress(address_message(link, addr)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_address(&self, link: &Link, addr: &IpNet) -> Result<(), NetlinkError> {
        self.execute(
            || format!("remove address {addr} from {}", link.name),
            RouteNetlinkMessage::DelAddress(address_message(link, addr)),
            0,
        )
    }

    /// Global and link-local addresses of one link, with their prefix lengths.
    pub fn addresses(&self, link: &Link) -> Result<Vec<IpNet>, NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.index = link.index;
        let replies = self.dump(
            || format!("list addresses of {}", link.name),
            RouteNetlinkMessage::GetAddress(msg),
        )?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(m) = reply else {
                continue;
            };
            if m.header.index != link.index {
                continue;
            }
            // IFA_LOCAL is the interface's own address on IPv4; IPv6 only has IFA_ADDRESS.
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let address = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(address)
                && let Ok(net) = IpNet::new(ip, m.header.prefix_len)
            {
                out.push(net);
            }
        }
        Ok(out)
    }
}
