//! Routes, in any table (ids above 255 travel in RTA_TABLE).

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::error::NetlinkError;
use super::socket::RouteSocket;

pub const MAIN_TABLE: u32 = 254;

/// A unicast route as we install and read it back (recorded in state files).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteSpec {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    pub metric: Option<u32>,
    pub mtu: Option<u32>,
    /// The gateway is on the link even without a covering prefix (Calico's
    /// `default via 169.254.1.1 dev eth0 onlink`).
    pub onlink: bool,
    /// Preferred source address.
    pub src: Option<IpAddr>,
}

impl RouteSpec {
    pub fn new(dst: IpNet, gateway: Option<IpAddr>, oif: u32) -> RouteSpec {
        RouteSpec {
            dst: dst.trunc(),
            gateway,
            oif: Some(oif),
            table: MAIN_TABLE,
            metric: None,
            mtu: None,
            onlink: false,
            src: None,
        }
    }

    /// The same route in another table.
    pub fn in_table(&self, table: u32) -> RouteSpec {
        RouteSpec {
            table,
            ..self.clone()
        }
    }

    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }
}

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn route_message(spec: &RouteSpec) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = match spec.dst {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    msg.header.destination_prefix_length = spec.dst.prefix_len();
    msg.header.table = u8::try_from(spec.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = if spec.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(RouteAttribute::Table(spec.table));
    if spec.dst.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(route_address(spec.dst.addr())));
    }
    if let Some(gw) = spec.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(route_address(gw)));
    }
    if let Some(oif) = spec.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(metric) = spec.metric {
        msg.attributes.push(RouteAttribute::Priority(metric));
    }
    if let Some(src) = spec.src {
        msg.attributes
            .push(RouteAttribute::PrefSource(route_address(src)));
    }
    if spec.onlink {
        msg.header.flags = RouteFlags::Onlink;
    }
    if let Some(mtu) = spec.mtu {
        msg.attributes.push(RouteAttribute::Metrics(vec![
            netlink_packet_route::route::RouteMetric::Mtu(mtu),
        ]));
    }
    msg
}

fn describe(spec: &RouteSpec) -> String {
    let mut s = format!("{}", spec.dst);
    if let Some(gw) = spec.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if spec.table != MAIN_TABLE {
        s.push_str(&format!(" table {}", spec.table));
    }
    s
}

impl RouteSocket {
    pub fn add_route(&self, spec: &RouteSpec) -> Result<(), NetlinkError> {
        self.execute(
            || format!("add route {}", describe(spec)),
            RouteNetlinkMessage::NewRoute(route_message(spec)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_route(&self, spec: &RouteSpec) -> Result<(), NetlinkError> {
        let mut msg = route_message(spec);
        // IPv4 deletion matches the scope exactly unless it is "nowhere"
        // (what iproute2 sends): a universe scope would never find a
        // scope-link route.
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        self.execute(
            || format!("remove route {}", describe(spec)),
            RouteNetlinkMessage::DelRoute(msg),
            0,
        )
    }

    /// Unicast routes of one family in one table.
    pub fn routes(&self, ipv6: bool, table: u32) -> Result<Vec<RouteSpec>, NetlinkError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let replies = self.dump(
            || format!("list routes of table {table}"),
            RouteNetlinkMessage::GetRoute(msg),
        )?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRoute(m) = reply else {
                continue;
            };
            if m.header.kind != RouteType::Unicast {
                continue;
            }
            // The header holds only 8 bits of table id; RTA_TABLE is authoritative.
            let mut route_table = u32::from(m.header.table);
            let mut dst = None;
            let mut spec = RouteSpec {
                dst: IpNet::default(),
                gateway: None,
                oif: None,
                table: 0,
                metric: None,
                mtu: None,
                onlink: m.header.flags.contains(RouteFlags::Onlink),
                src: None,
            };
            for attr in &m.attributes {
                match attr {
                    RouteAttribute::Table(t) => route_table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                        dst = Some(IpAddr::V4(*a))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                        dst = Some(IpAddr::V6(*a))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(a)) => {
                        spec.gateway = Some(IpAddr::V4(*a))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet6(a)) => {
                        spec.gateway = Some(IpAddr::V6(*a))
                    }
                    RouteAttribute::Oif(o) => spec.oif = Some(*o),
                    RouteAttribute::PrefSource(RouteAddress::Inet(a)) => {
                        spec.src = Some(IpAddr::V4(*a))
                    }
                    RouteAttribute::PrefSource(RouteAddress::Inet6(a)) => {
                        spec.src = Some(IpAddr::V6(*a))
                    }
                    RouteAttribute::Priority(p) => spec.metric = Some(*p),
                    _ => {}
                }
            }
            if route_table != table {
                continue;
            }
            let unspecified: IpAddr = if ipv6 {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            let Ok(net) = IpNet::new(
                dst.unwrap_or(unspecified),
                m.header.destination_prefix_length,
            ) else {
                continue;
            };
            spec.dst = net;
            spec.table = route_table;
            out.push(spec);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::NetNs;

    /// A route added to a table, in every shape policy routing uses, can be
    /// deleted with the same spec (and only then is it gone).
    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn routes_in_a_table_delete_with_the_spec_they_were_added_with() {
        let ns = NetNs::temporary().expect("netns");
        let sock = ns.route_socket().expect("socket");
        let lo = sock.link_by_name("lo").expect("lo").expect("lo exists");
        sock.set_up(&lo, true).expect("up");
        let addr: IpNet = "10.244.1.5/32".parse().expect("net");
        sock.add_address(&lo, &addr).expect("address");
        let mut scoped = RouteSpec::new(addr, None, lo.index).in_table(100);
        scoped.src = Some(addr.addr());
        let mut gw_link =
            RouteSpec::new("169.254.1.1/32".parse().expect("net"), None, lo.index).in_table(100);
        gw_link.metric = None;
        for spec in [scoped, gw_link] {
            sock.add_route(&spec).expect("add");
            assert_eq!(sock.routes(false, 100).expect("dump").len(), 1, "{spec:?}");
            sock.del_route(&spec).expect("delete");
            assert!(
                sock.routes(false, 100).expect("dump").is_empty(),
                "still there: {spec:?}"
            );
        }
    }
}
