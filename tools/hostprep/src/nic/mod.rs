//! A host RDMA NIC's address, MTU and policy routing (the seed's setNicAddr):
//! the address on the NIC, its MTU, a route table holding the subnet route
//! and `default via <gateway>`, and a `from <address> lookup <table>` rule.
//!
//! What was set is recorded (`<state-dir>/nic-<name>.json`, written before
//! the first change) so that setting it again converges, a changed request
//! removes what the old one added, and `unset` undoes exactly that and
//! restores the MTU the NIC had before.

mod args;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use libcni::ids::IfName;
use libcni::netlink::{Link, RouteSocket, RouteSpec, RuleSpec};
use libcni::state::{FileLock, StateDir};
use serde::{Deserialize, Serialize};

pub use args::{NicArgs, NicConfig, parse_nic};

use crate::error::HostprepError;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/rdma-hostprep";
const RECORD_VERSION: u32 = 1;
/// One lock for the whole state directory: `set-nic-addr` compares its table
/// with every other NIC's record, so two runs must not interleave.
const LOCK_NAME: &str = "hostprep.lock";
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Takes the state directory's lock (released when dropped).
pub fn lock(state: &StateDir) -> Result<FileLock, HostprepError> {
    Ok(FileLock::acquire(state, LOCK_NAME, LOCK_TIMEOUT)?)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NicRecord {
    version: u32,
    config: NicConfig,
    /// The NIC's MTU before the first `set-nic-addr`.
    original_mtu: u32,
}

fn record_name(nic: &IfName) -> String {
    format!("nic-{}.json", nic.as_str())
}

fn load_record(state: &StateDir, nic: &IfName) -> Result<Option<NicRecord>, HostprepError> {
    let name = record_name(nic);
    let Some(bytes) = state.read(&name)? else {
        return Ok(None);
    };
    let rec: NicRecord = serde_json::from_slice(&bytes).map_err(|e| {
        HostprepError::Conflict(format!(
            "record {} is not valid: {e}; remove it to start over",
            state.path().join(&name).display()
        ))
    })?;
    if rec.version != RECORD_VERSION || rec.config.nic != *nic {
        return Err(HostprepError::Conflict(format!(
            "record {} has version {} for NIC {}; expected version {RECORD_VERSION} for {nic}",
            state.path().join(&name).display(),
            rec.version,
            rec.config.nic
        )));
    }
    Ok(Some(rec))
}

/// Refuses a table another NIC's record already uses: the two NICs' default
/// routes would replace each other.
fn check_table_free(state: &StateDir, cfg: &NicConfig) -> Result<(), HostprepError> {
    for name in state.list()? {
        let Some(other) = name
            .strip_prefix("nic-")
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(|n| IfName::parse(n).ok())
        else {
            continue;
        };
        if other == cfg.nic {
            continue;
        }
        if let Some(rec) = load_record(state, &other)?
            && rec.config.table == cfg.table
        {
            return Err(HostprepError::Conflict(format!(
                "table {} is already {}'s (recorded in {}): give {} another --table",
                cfg.table,
                other,
                state.path().join(&name).display(),
                cfg.nic
            )));
        }
    }
    Ok(())
}

fn save_record(state: &StateDir, rec: &NicRecord) -> Result<(), HostprepError> {
    let bytes = serde_json::to_vec_pretty(rec)
        .map_err(|e| HostprepError::Conflict(format!("cannot encode record: {e}")))?;
    state.write(&record_name(&rec.config.nic), &bytes)?;
    Ok(())
}

/// One thing `set-nic-addr` puts in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Address(IpNet),
    Route(RouteSpec),
    Rule(RuleSpec),
}

fn host_net(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(a) => IpNet::V4(ipnet::Ipv4Net::from(a)),
        IpAddr::V6(a) => IpNet::V6(ipnet::Ipv6Net::from(a)),
    }
}

fn default_net(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
        IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
    }
}

/// Address, subnet route, default route and rule, in the order they are added.
fn items(cfg: &NicConfig, ifindex: u32) -> Vec<Item> {
    let ip = cfg.address.addr();
    let mut subnet = RouteSpec::new(cfg.address.trunc(), None, ifindex).in_table(cfg.table);
    // IPv6 refuses a preferred source that is still tentative (DAD running,
    // or no carrier yet): the kernel picks the NIC's address anyway.
    if ip.is_ipv4() {
        subnet.src = Some(ip);
    }
    let default = RouteSpec::new(default_net(ip), Some(cfg.gateway), ifindex).in_table(cfg.table);
    vec![
        Item::Address(cfg.address),
        Item::Route(subnet),
        Item::Route(default),
        Item::Rule(RuleSpec {
            from: host_net(ip),
            table: cfg.table,
            priority: cfg.priority,
        }),
    ]
}

fn describe(item: &Item, nic: &str) -> String {
    match item {
        Item::Address(a) => format!("address {a} on {nic}"),
        Item::Route(r) => {
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            let src = r.src.map(|s| format!(" src {s}")).unwrap_or_default();
            let dst = if r.is_default() {
                "default".to_string()
            } else {
                r.dst.to_string()
            };
            format!("route {dst}{via} dev {nic}{src} table {}", r.table)
        }
        Item::Rule(r) => format!(
            "rule from {} lookup {} priority {}",
            r.from.addr(),
            r.table,
            r.priority
        ),
    }
}

fn same_next_hop(a: &RouteSpec, b: &RouteSpec) -> bool {
    a.dst == b.dst && a.gateway == b.gateway && a.oif == b.oif
}

/// The kernel's copy of `item` (for a route: same destination, any next hop).
enum Found {
    Same(Option<RouteSpec>),
    Other(RouteSpec),
    Absent,
}

fn find(sock: &RouteSocket, link: &Link, item: &Item) -> Result<Found, HostprepError> {
    Ok(match item {
        Item::Address(a) => {
            let addrs = sock.addresses(link)?;
            if addrs.contains(a) {
                Found::Same(None)
            } else if let Some(other) = addrs.iter().find(|x| x.addr() == a.addr()) {
                return Err(HostprepError::Conflict(format!(
                    "{} already has {other}, not {a}: remove it or give that prefix length",
                    link.name
                )));
            } else {
                Found::Absent
            }
        }
        Item::Route(r) => {
            let routes = sock.routes(r.dst.addr().is_ipv6(), r.table)?;
            if let Some(same) = routes.iter().find(|x| same_next_hop(x, r)) {
                Found::Same(Some(same.clone()))
            } else if let Some(other) = routes.into_iter().find(|x| x.dst == r.dst) {
                if other.oif != r.oif {
                    let device = match other.oif {
                        Some(i) => sock
                            .link_by_index(i)?
                            .map_or_else(|| format!("ifindex {i}"), |l| l.name),
                        None => "no device".into(),
                    };
                    return Err(HostprepError::Conflict(format!(
                        "table {} already routes {} through {device}: another NIC uses this \
                         table; give {} another --table",
                        r.table, r.dst, link.name
                    )));
                }
                Found::Other(other)
            } else {
                Found::Absent
            }
        }
        Item::Rule(r) => {
            if sock.rules(r.from.addr().is_ipv6())?.contains(r) {
                Found::Same(None)
            } else {
                Found::Absent
            }
        }
    })
}

fn add(sock: &RouteSocket, link: &Link, item: &Item) -> Result<(), HostprepError> {
    match item {
        Item::Address(a) => sock.add_address(link, a)?,
        Item::Route(r) => sock.add_route(r)?,
        Item::Rule(r) => sock.add_rule(r)?,
    }
    Ok(())
}

/// Makes `item` present; returns what was done.
fn ensure(sock: &RouteSocket, link: &Link, item: &Item) -> Result<String, HostprepError> {
    let what = describe(item, &link.name);
    match find(sock, link, item)? {
        Found::Same(_) => Ok(format!("{what}: already present")),
        Found::Absent => {
            add(sock, link, item)?;
            Ok(format!("{what}: added"))
        }
        Found::Other(old) => {
            sock.del_route(&old)?;
            add(sock, link, item)?;
            let via = old.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            Ok(format!("{what}: replaced {}{via}", old.dst))
        }
    }
}

/// Removes `item` if present; returns what was done.
fn remove(
    sock: &RouteSocket,
    link: Option<&Link>,
    nic: &str,
    item: &Item,
) -> Result<String, HostprepError> {
    let what = describe(item, nic);
    let gone = || Ok(format!("{what}: not present"));
    match (item, link) {
        (Item::Rule(r), _) => {
            if !sock.rules(r.from.addr().is_ipv6())?.contains(r) {
                return gone();
            }
            sock.del_rule(r)?;
        }
        // Without the link its addresses and routes went with it.
        (_, None) => return gone(),
        (_, Some(link)) => match find(sock, link, item) {
            Ok(Found::Same(Some(route))) => sock.del_route(&route)?,
            Ok(Found::Same(None)) => {
                if let Item::Address(a) = item {
                    sock.del_address(link, a)?;
                }
            }
            Ok(Found::Other(_) | Found::Absent) | Err(HostprepError::Conflict(_)) => {
                return gone();
            }
            Err(e) => return Err(e),
        },
    }
    Ok(format!("{what}: removed"))
}

fn link_of(sock: &RouteSocket, nic: &IfName) -> Result<Option<Link>, HostprepError> {
    Ok(sock.link_by_name(nic.as_str())?)
}

/// Configures the NIC; idempotent. Returns one line per step.
pub fn set_nic_addr(
    sock: &RouteSocket,
    state: &StateDir,
    cfg: &NicConfig,
) -> Result<Vec<String>, HostprepError> {
    let link = link_of(sock, &cfg.nic)?.ok_or_else(|| HostprepError::NoNic(cfg.nic.to_string()))?;
    let previous = load_record(state, &cfg.nic)?;
    check_table_free(state, cfg)?;
    let new_items = items(cfg, link.index);
    // Conflicts (the address with another prefix, the table routing through
    // another device) are refused before anything changes; the previous
    // request's own address is no conflict: it is replaced below.
    for item in &new_items {
        match find(sock, &link, item) {
            Err(HostprepError::Conflict(_)) if matches!((item, &previous), (Item::Address(a), Some(p)) if p.config.address.addr() == a.addr()) =>
                {}
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    let mut report = Vec::new();
    if let Some(prev) = &previous
        && prev.config != *cfg
    {
        // Drop what the previous request added and this one does not want.
        for old in items(&prev.config, link.index).iter().rev() {
            if !new_items.contains(old) {
                report.push(remove(sock, Some(&link), &link.name, old)?);
            }
        }
    }
    let record = NicRecord {
        version: RECORD_VERSION,
        config: cfg.clone(),
        original_mtu: previous.as_ref().map_or(link.mtu, |p| p.original_mtu),
    };
    save_record(state, &record)?;
    if link.up {
        report.push(format!("{}: already up", link.name));
    } else {
        sock.set_up(&link, true)?;
        report.push(format!("{}: set up", link.name));
    }
    if let Some(mtu) = cfg.mtu {
        if link.mtu == mtu {
            report.push(format!("{}: MTU {mtu} already", link.name));
        } else {
            sock.set_mtu(&link, mtu)?;
            report.push(format!("{}: MTU {mtu} (was {})", link.name, link.mtu));
        }
    }
    for item in &new_items {
        report.push(ensure(sock, &link, item)?);
    }
    Ok(report)
}

/// What `unset-nic-addr` removes when no record exists (given by flags).
#[derive(Clone, Debug, Default)]
pub struct UnsetArgs {
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub table: Option<String>,
    pub priority: Option<String>,
}

/// Undoes `set-nic-addr`: rule, routes, address, then the MTU the NIC had
/// before. Idempotent; keeps going past failures and reports them all.
pub fn unset_nic_addr(
    sock: &RouteSocket,
    state: &StateDir,
    nic: &IfName,
    by_hand: &UnsetArgs,
) -> Result<Vec<String>, HostprepError> {
    let record = load_record(state, nic)?;
    let link = link_of(sock, nic)?;
    let (cfg, original_mtu) = match (&record, by_hand.address.as_deref()) {
        (Some(r), None) => (r.config.clone(), Some(r.original_mtu)),
        (Some(_), Some(_)) => {
            return Err(HostprepError::Usage(format!(
                "{nic} has a record in {}: unset-nic-addr --nic {nic} undoes it; --address is for NICs without one",
                state.path().display()
            )));
        }
        (None, Some(addr)) => {
            let args = NicArgs {
                nic: Some(nic.to_string()),
                address: Some(addr.to_string()),
                gateway: by_hand.gateway.clone(),
                table: by_hand.table.clone(),
                priority: by_hand.priority.clone(),
                mtu: None,
            };
            (args.validate()?, None)
        }
        (None, None) => {
            return Ok(vec![format!(
                "{nic}: nothing recorded in {}; nothing to undo (give --address, --gateway and --table to remove a configuration made elsewhere)",
                state.path().display()
            )]);
        }
    };
    let ifindex = link.as_ref().map_or(0, |l| l.index);
    let mut report = Vec::new();
    let mut errors = Vec::new();
    for item in items(&cfg, ifindex).iter().rev() {
        match remove(sock, link.as_ref(), nic.as_str(), item) {
            Ok(line) => report.push(line),
            Err(e) => errors.push(e.step(describe(item, nic.as_str()))),
        }
    }
    match (&link, original_mtu) {
        (Some(l), Some(mtu)) if l.mtu != mtu => match sock.set_mtu(l, mtu) {
            Ok(()) => report.push(format!("{nic}: MTU {mtu} restored (was {})", l.mtu)),
            Err(e) => errors.push(HostprepError::from(e).step("restore the MTU")),
        },
        (None, _) => report.push(format!(
            "{nic}: not in this network namespace (its addresses and routes went with it)"
        )),
        _ => {}
    }
    if let Some(e) = errors.into_iter().reduce(|a, b| match a {
        HostprepError::Multiple(mut v) => {
            v.push(b);
            HostprepError::Multiple(v)
        }
        a => HostprepError::Multiple(vec![a, b]),
    }) {
        // The record stays so a retry finishes the job.
        return Err(e);
    }
    if record.is_some() {
        state.remove(&record_name(nic))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(address: &str, gateway: &str, table: &str) -> NicArgs {
        NicArgs {
            nic: Some("hp0".into()),
            address: Some(address.into()),
            gateway: Some(gateway.into()),
            table: Some(table.into()),
            ..NicArgs::default()
        }
    }

    #[test]
    fn items_are_address_subnet_default_rule() {
        let cfg = args("172.16.11.10/24", "172.16.11.254", "111")
            .validate()
            .expect("valid");
        let it = items(&cfg, 7);
        let lines: Vec<String> = it.iter().map(|i| describe(i, "hp0")).collect();
        assert_eq!(
            lines,
            [
                "address 172.16.11.10/24 on hp0",
                "route 172.16.11.0/24 dev hp0 src 172.16.11.10 table 111",
                "route default via 172.16.11.254 dev hp0 table 111",
                "rule from 172.16.11.10 lookup 111 priority 1111",
            ]
        );
    }
}
