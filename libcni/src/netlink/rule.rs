//! Policy routing rules: `from <prefix> lookup <table> priority <n>`.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::error::NetlinkError;
use super::socket::RouteSocket;

/// A source-based rule.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleSpec {
    pub from: IpNet,
    pub table: u32,
    pub priority: u32,
}

fn rule_message(spec: &RuleSpec) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = match spec.from {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    msg.header.src_len = spec.from.prefix_len();
    msg.header.table = u8::try_from(spec.table).unwrap_or(0);
    // Without an explicit action the kernel accepts the rule but fails every
    // lookup that matches it with EINVAL.
    msg.header.action = RuleAction::ToTable;
    if spec.from.prefix_len() > 0 {
        msg.attributes.push(RuleAttribute::Source(spec.from.addr()));
    }
    msg.attributes.push(RuleAttribute::Table(spec.table));
    msg.attributes.push(RuleAttribute::Priority(spec.priority));
    msg
}

fn describe(spec: &RuleSpec) -> String {
    format!(
        "from {} lookup {} priority {}",
        spec.from, spec.table, spec.priority
    )
}

impl RouteSocket {
    pub fn add_rule(&self, spec: &RuleSpec) -> Result<(), NetlinkError> {
        self.execute(
            || format!("add rule {}", describe(spec)),
            RouteNetlinkMessage::NewRule(rule_message(spec)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_rule(&self, spec: &RuleSpec) -> Result<(), NetlinkError> {
        self.execute(
            || format!("remove rule {}", describe(spec)),
            RouteNetlinkMessage::DelRule(rule_message(spec)),
            0,
        )
    }

    /// Table-lookup rules of one family (source prefix, table, priority).
    pub fn rules(&self, ipv6: bool) -> Result<Vec<RuleSpec>, NetlinkError> {
        let mut msg = RuleMessage::default();
        msg.header.family = if ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let replies = self.dump(
            || "list rules".to_string(),
            RouteNetlinkMessage::GetRule(msg),
        )?;
        let mut out = Vec::new();
        for reply in replies {
            let RouteNetlinkMessage::NewRule(m) = reply else {
                continue;
            };
            if m.header.action != RuleAction::ToTable {
                continue;
            }
            let mut table = u32::from(m.header.table);
            let mut priority = 0;
            let mut src: Option<IpAddr> = None;
            for a in &m.attributes {
                match a {
                    RuleAttribute::Table(t) => table = *t,
                    RuleAttribute::Priority(p) => priority = *p,
                    RuleAttribute::Source(ip) => src = Some(*ip),
                    _ => {}
                }
            }
            let any: IpAddr = if ipv6 {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            if let Ok(from) = IpNet::new(src.unwrap_or(any), m.header.src_len) {
                out.push(RuleSpec {
                    from,
                    table,
                    priority,
                });
            }
        }
        Ok(out)
    }
}
