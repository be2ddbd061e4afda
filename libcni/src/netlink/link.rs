//! Links: lookup, up/down, rename, MTU, MAC, netns moves, altnames, and the
//! VF table of a PF.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage, LinkVfInfo, Prop, VfInfo,
};

use super::error::NetlinkError;
use super::socket::RouteSocket;

/// What we need to know about a link, read from one RTM_NEWLINK reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
    pub running: bool,
    pub altnames: Vec<String>,
    /// rtnl_link_ops kind ("veth", "vlan"...); None for hardware netdevs.
    pub kind: Option<String>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: Vec::new(),
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            running: msg.header.flags.contains(LinkFlags::Running),
            altnames: Vec::new(),
            kind: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name.clone_from(n),
                LinkAttribute::Address(a) => link.mac.clone_from(a),
                LinkAttribute::Mtu(m) => link.mtu = *m,
                LinkAttribute::PropList(props) => {
                    for p in props {
                        if let Prop::AltIfName(n) = p {
                            link.altnames.push(n.clone());
                        }
                    }
                }
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// Formats a MAC (or any hardware address) as lower-case colon-separated hex.
pub fn format_hw(addr: &[u8]) -> String {
    addr.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn link_message(index: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes = attributes;
    msg
}

fn first_link(reply: Option<RouteNetlinkMessage>) -> Option<LinkMessage> {
    match reply {
        Some(RouteNetlinkMessage::NewLink(m)) => Some(m),
        _ => None,
    }
}

impl RouteSocket {
    /// Looks a link up by name. The kernel also resolves altnames, so the
    /// returned `name` may differ from `name`.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let msg = link_message(0, vec![LinkAttribute::IfName(name.to_string())]);
        let reply = self.get(
            || format!("look up link {name}"),
            RouteNetlinkMessage::GetLink(msg),
        )?;
        Ok(first_link(reply).map(|m| Link::from_message(&m)))
    }

    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        let reply = self.get(
            || format!("look up link index {index}"),
            RouteNetlinkMessage::GetLink(link_message(index, vec![])),
        )?;
        Ok(first_link(reply).map(|m| Link::from_message(&m)))
    }

    pub fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self.dump(
            || "list links".to_string(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(replies
            .iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(m) => Some(Link::from_message(m)),
                _ => None,
            })
            .collect())
    }

    fn set_link(&self, op: impl FnOnce() -> String, msg: LinkMessage) -> Result<(), NetlinkError> {
        self.execute(op, RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_up(&self, link: &Link, up: bool) -> Result<(), NetlinkError> {
        let mut msg = link_message(link.index, vec![]);
        msg.header.change_mask = LinkFlags::Up;
        if up {
            msg.header.flags = LinkFlags::Up;
        }
        let state = if up { "up" } else { "down" };
        self.set_link(|| format!("set link {} {state}", link.name), msg)
    }

    pub fn set_mtu(&self, link: &Link, mtu: u32) -> Result<(), NetlinkError> {
        self.set_link(
            || format!("set MTU {mtu} on {}", link.name),
            link_message(link.index, vec![LinkAttribute::Mtu(mtu)]),
        )
    }

    pub fn set_txqlen(&self, link: &Link, len: u32) -> Result<(), NetlinkError> {
        self.set_link(
            || format!("set txqueuelen {len} on {}", link.name),
            link_message(link.index, vec![LinkAttribute::TxQueueLen(len)]),
        )
    }

    pub fn set_mac(&self, link: &Link, mac: &[u8]) -> Result<(), NetlinkError> {
        self.set_link(
            || format!("set MAC {} on {}", format_hw(mac), link.name),
            link_message(link.index, vec![LinkAttribute::Address(mac.to_vec())]),
        )
    }

    pub fn rename(&self, link: &Link, new_name: &str) -> Result<(), NetlinkError> {
        self.set_link(
            || format!("rename link {} to {new_name}", link.name),
            link_message(
                link.index,
                vec![LinkAttribute::IfName(new_name.to_string())],
            ),
        )
    }

    /// Moves the link into the netns referred to by `netns` (an nsfs fd).
    pub fn move_to_netns(&self, link: &Link, netns: BorrowedFd<'_>) -> Result<(), NetlinkError> {
        self.set_link(
            || format!("move link {} to another network namespace", link.name),
            link_message(link.index, vec![LinkAttribute::NetNsFd(netns.as_raw_fd())]),
        )
    }

    /// Moves the link into the netns of `netns` and names it `name` there,
    /// in one request: the kernel renames it before it releases the RTNL, so
    /// no one can take the name in between, and the link crosses namespaces
    /// once (each crossing waits for an rcu_barrier, tens of milliseconds
    /// on a busy machine). On EEXIST (name taken there) the link has moved
    /// but kept its old name.
    pub fn move_to_netns_as(
        &self,
        link: &Link,
        netns: BorrowedFd<'_>,
        name: &str,
    ) -> Result<(), NetlinkError> {
        self.set_link(
            || {
                format!(
                    "move link {} to another network namespace as {name}",
                    link.name
                )
            },
            link_message(
                link.index,
                vec![
                    LinkAttribute::NetNsFd(netns.as_raw_fd()),
                    LinkAttribute::IfName(name.to_string()),
                ],
            ),
        )
    }

    pub fn del_altname(&self, link: &Link, altname: &str) -> Result<(), NetlinkError> {
        let msg = link_message(
            link.index,
            vec![LinkAttribute::PropList(vec![Prop::AltIfName(
                altname.to_string(),
            )])],
        );
        self.execute(
            || format!("remove altname {altname} from {}", link.name),
            RouteNetlinkMessage::DelLinkProp(msg),
            0,
        )
    }

    /// Reads a PF's VF table (RTM_GETLINK with IFLA_EXT_MASK = RTEXT_FILTER_VF).
    pub fn vf_table(&self, pf: &Link) -> Result<Vec<Vec<VfInfo>>, NetlinkError> {
        let msg = link_message(
            pf.index,
            vec![LinkAttribute::ExtMask(vec![LinkExtentMask::Vf])],
        );
        let reply = self.get(
            || format!("read VF table of {}", pf.name),
            RouteNetlinkMessage::GetLink(msg),
        )?;
        let Some(reply) = first_link(reply) else {
            return Err(NetlinkError::Kernel {
                op: format!("read VF table of {}", pf.name),
                errno: libc::ENODEV,
                reason: None,
            });
        };
        Ok(reply
            .attributes
            .into_iter()
            .filter_map(|a| match a {
                LinkAttribute::VfInfoList(list) => Some(list),
                _ => None,
            })
            .flatten()
            .map(|LinkVfInfo(infos)| infos)
            .collect())
    }

    /// Programs one VF attribute on its PF (RTM_SETLINK + IFLA_VFINFO_LIST).
    pub fn set_vf(
        &self,
        pf: &Link,
        op: impl FnOnce() -> String,
        info: VfInfo,
    ) -> Result<(), NetlinkError> {
        let msg = link_message(
            pf.index,
            vec![LinkAttribute::VfInfoList(vec![LinkVfInfo(vec![info])])],
        );
        self.execute(op, RouteNetlinkMessage::SetLink(msg), 0)
    }
}
