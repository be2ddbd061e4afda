//! Per-interface policy routing: a table per interface holding its subnet
//! and default routes, `from <address> lookup <table>` rules, and default
//! routes moved out of (or into) the main table. Planned from what the
//! interface and the main table hold, applied with an undo for each change,
//! recorded so DEL and CHECK act on exactly what was done.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, StepExt};
use crate::netlink::{Link, MAIN_TABLE, NetlinkError, RouteSocket, RouteSpec, RuleSpec};
use crate::undo::Undo;

/// What was changed, in the order it was done.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub rules: Vec<RuleSpec>,
    /// Routes added (to the interface's table, or to main).
    pub added: Vec<RouteSpec>,
    /// Routes taken out of the main table.
    pub removed: Vec<RouteSpec>,
}

/// What to change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub rules: Vec<RuleSpec>,
    pub add: Vec<RouteSpec>,
    pub remove: Vec<RouteSpec>,
}

impl Plan {
    pub fn extend(&mut self, other: Plan) {
        self.rules.extend(other.rules);
        self.add.extend(other.add);
        self.remove.extend(other.remove);
    }
}

fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Main-table routes through `link` (both families), link-local ones aside.
pub fn main_routes_via(sock: &RouteSocket, link: &Link) -> Result<Vec<RouteSpec>, Error> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        for r in sock.routes(v6, MAIN_TABLE)? {
            let link_local =
                matches!(r.dst, IpNet::V6(n) if n.network().segments()[0] & 0xffc0 == 0xfe80);
            if r.oif == Some(link.index) && !link_local {
                out.push(r);
            }
        }
    }
    Ok(out)
}

/// One interface's routing, as planned by `plan_interface`.
pub struct InterfaceRouting<'a> {
    pub link: &'a Link,
    /// Its addresses (with prefix lengths).
    pub addrs: &'a [IpNet],
    /// At most one per family.
    pub gateways: &'a [IpAddr],
    pub table: u32,
    pub priority: u32,
    /// False: default routes through the link leave the main table.
    pub keep_default_in_main: bool,
    /// More routes for the table (policyRoutes).
    pub extra: &'a [RouteSpec],
}

/// The table for the link: its subnet routes (with the address as source),
/// its non-default main routes, a default via each family's gateway, plus
/// `extra`; and one rule per address.
pub fn plan_interface(sock: &RouteSocket, it: &InterfaceRouting<'_>) -> Result<Plan, Error> {
    let InterfaceRouting {
        link,
        addrs,
        gateways,
        table,
        priority,
        keep_default_in_main,
        extra,
    } = *it;
    let mut plan = Plan::default();
    let main = main_routes_via(sock, link)?;
    for a in addrs {
        let mut subnet = RouteSpec::new(a.trunc(), None, link.index).in_table(table);
        // IPv4 only: the kernel refuses a tentative (DAD) IPv6 address as a
        // route's preferred source, and IPv6 source selection needs no hint.
        subnet.src = a.addr().is_ipv4().then_some(a.addr());
        if !plan.add.iter().any(|r| r.dst == subnet.dst) {
            plan.add.push(subnet);
        }
        plan.rules.push(RuleSpec {
            from: host_prefix(a.addr()),
            table,
            priority,
        });
    }
    for r in &main {
        if !r.is_default() && !plan.add.iter().any(|p| p.dst == r.dst) {
            let mut copy = r.in_table(table);
            copy.metric = None;
            plan.add.push(copy);
        }
    }
    for gw in gateways.iter() {
        let any = if gw.is_ipv6() {
            IpNet::V6(Default::default())
        } else {
            IpNet::V4(Default::default())
        };
        let onlink = !addrs.iter().any(|a| a.contains(gw));
        let mut default = RouteSpec::new(any, Some(*gw), link.index).in_table(table);
        default.onlink = onlink;
        plan.add.push(default);
    }
    for r in extra {
        plan.add.push(r.in_table(table));
    }
    if !keep_default_in_main {
        plan.remove
            .extend(main.into_iter().filter(RouteSpec::is_default));
    }
    Ok(plan)
}

/// What `apply` is about to change, recorded before it starts (an intent
/// log): after a crash part-way, DEL reverts all of it, and reverting what
/// was never done is a no-op (`revert` skips missing objects, re-adds
/// existing routes harmlessly). Rules and routes that already exist are left
/// out, as `apply` would leave them out of what it changed: DEL must not
/// remove what someone else put there.
pub fn intent(sock: &RouteSocket, plan: &Plan) -> Result<Applied, Error> {
    let mut rules = sock.rules(false)?;
    rules.extend(sock.rules(true)?);
    let mut added = Vec::new();
    for r in &plan.add {
        let present = sock
            .routes(r.dst.addr().is_ipv6(), r.table)?
            .iter()
            .any(|x| x.dst == r.dst && x.gateway == r.gateway && x.oif == r.oif);
        if !present {
            added.push(r.clone());
        }
    }
    Ok(Applied {
        rules: plan
            .rules
            .iter()
            .filter(|r| !rules.contains(r))
            .cloned()
            .collect(),
        added,
        removed: plan.remove.clone(),
    })
}

fn exists_ok(r: Result<(), NetlinkError>) -> Result<bool, NetlinkError> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.is_exists() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Applies `plan`: removals from main first (so a default moving between
/// NICs never collides), then routes, then rules. Each change pushes its
/// inverse onto `undo`; what already existed is neither recorded nor undone.
pub fn apply<'a>(
    sock: &'a RouteSocket,
    plan: &Plan,
    undo: &mut Undo<'a>,
) -> Result<Applied, Error> {
    let mut done = Applied::default();
    for r in &plan.remove {
        match sock.del_route(r) {
            Ok(()) => {
                let back = r.clone();
                undo.push(format!("restore main route {}", r.dst), move || {
                    Ok(exists_ok(sock.add_route(&back)).map(drop)?)
                });
                done.removed.push(r.clone());
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e).step(|| format!("move route {} out of the main table", r.dst)),
        }
    }
    for r in &plan.add {
        if exists_ok(sock.add_route(r))? {
            let gone = r.clone();
            undo.push(
                format!("remove route {} table {}", r.dst, r.table),
                move || Ok(ignore_missing(sock.del_route(&gone))?),
            );
            done.added.push(r.clone());
        }
    }
    for rule in &plan.rules {
        if exists_ok(sock.add_rule(rule))? {
            let gone = rule.clone();
            undo.push(format!("remove rule from {}", rule.from), move || {
                Ok(ignore_missing(sock.del_rule(&gone))?)
            });
            done.rules.push(rule.clone());
        }
    }
    Ok(done)
}

fn ignore_missing(r: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// Undoes `applied` (DEL): rules, added routes, then routes back into main.
/// Missing objects are fine; every other failure is returned, all attempted.
pub fn revert(sock: &RouteSocket, applied: &Applied) -> Vec<Error> {
    let mut errors = Vec::new();
    for rule in applied.rules.iter().rev() {
        if let Err(e) = ignore_missing(sock.del_rule(rule)) {
            errors.push(e.into());
        }
    }
    for r in applied.added.iter().rev() {
        if let Err(e) = ignore_missing(sock.del_route(r)) {
            errors.push(e.into());
        }
    }
    for r in &applied.removed {
        // The device may be gone (its main plugin's DEL ran first): not ours to fix.
        match exists_ok(sock.add_route(r)) {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.errno() == Some(libc::ENETUNREACH) => {}
            Err(e) => errors.push(e.into()),
        }
    }
    errors
}

/// CHECK: differences between `applied` and the kernel's tables.
pub fn verify(sock: &RouteSocket, applied: &Applied) -> Result<Vec<String>, Error> {
    let mut problems = Vec::new();
    let mut rules = sock.rules(false)?;
    rules.extend(sock.rules(true)?);
    for rule in &applied.rules {
        if !rules.contains(rule) {
            problems.push(format!(
                "rule from {} lookup {} priority {} is missing",
                rule.from, rule.table, rule.priority
            ));
        }
    }
    for r in &applied.added {
        let present = sock
            .routes(r.dst.addr().is_ipv6(), r.table)?
            .iter()
            .any(|x| x.dst == r.dst && x.gateway == r.gateway && x.oif == r.oif);
        if !present {
            problems.push(format!(
                "route {} via {:?} in table {} is missing",
                r.dst, r.gateway, r.table
            ));
        }
    }
    for r in &applied.removed {
        let back = sock
            .routes(r.dst.addr().is_ipv6(), MAIN_TABLE)?
            .iter()
            .any(|x| x.dst == r.dst && x.oif == r.oif && x.gateway == r.gateway);
        if back {
            problems.push(format!(
                "route {} via {:?} is back in the main table",
                r.dst, r.gateway
            ));
        }
    }
    Ok(problems)
}
