//! `coordinator`: chained last on each extra interface (net1..net8) of a pod,
//! overlay mode (the pod's eth0 comes from the cluster CNI). It gives the
//! interface its own route table and `from <address>` rules, so replies leave
//! through the interface the request came in on; keeps one default route in
//! the main table, on `podDefaultRouteNic`; routes `hijackCIDR` through the
//! default NIC; tunes MAC, MTU, txqueuelen and rp_filter; and proves the
//! gateway answers (and optionally that no one else has the address) before
//! it returns. No agent or API server is involved, in ADD or in DEL.

mod config;
mod record;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use libcni::error::StepExt;
use libcni::ids::{IfName, MacAddr};
use libcni::netlink::{Link, RouteSocket, RouteSpec};
use libcni::netns::NetNs;
use libcni::policy::{self, InterfaceRouting, Plan};
use libcni::probe::{self, ProbeSettings};
use libcni::result::CniResult;
use libcni::skel::{self, AttachRequest, CniPlugin, GcRequest, Request};
use libcni::undo::Undo;
use libcni::version::SpecVersion;
use libcni::{Error, announce, config::NetConf, failpoint, sysctl};
use serde_json::Value;

use config::{CoordConf, Mode, load_state_dir};
use record::{CoordRecord, Records, allocate_table, priority_of};

struct Coordinator;

/// What ADD works on; the undo stack borrows from here.
struct Ctx<'r> {
    req: &'r AttachRequest,
    conf: CoordConf,
    pod: NetNs,
    sock: RouteSocket,
    records: Records,
}

impl CniPlugin for Coordinator {
    fn name(&self) -> &'static str {
        "coordinator"
    }

    fn log_settings(&self, _conf: &NetConf, raw: &Value) -> (Option<String>, Option<String>) {
        config::log_settings(raw)
    }

    fn add(&self, req: &AttachRequest) -> Result<CniResult, Error> {
        let prev = req.req.conf.prev_result.as_ref().ok_or_else(|| {
            Error::config(
                "prevResult",
                "missing: coordinator runs chained after the interface's main plugin",
            )
        })?;
        let mut result = CniResult::parse(prev)?;
        let conf = CoordConf::load(&req.req.raw, &req.ifname)?;
        if conf.mode == Mode::Disabled {
            return Ok(result);
        }
        let netns = req
            .netns
            .as_deref()
            .ok_or_else(|| Error::Internal("ADD without CNI_NETNS".into()))?;
        let pod = NetNs::open(netns)?;
        let sock = pod.route_socket()?;
        let records = Records::open(&conf.state_dir)?;
        let pod_lock = records.lock_pod(&req.container_id)?;
        let ctx = Ctx {
            req,
            conf,
            pod,
            sock,
            records,
        };
        let mut undo = Undo::new();
        match add_steps(&ctx, &mut result, &mut undo) {
            Ok(addrs) => {
                undo.commit();
                announce_all(&ctx, &addrs);
                Ok(result)
            }
            Err(e) => {
                let e = undo.rollback(e);
                if let Err(u) = ctx.records.unlock_pod(pod_lock, req.container_id.as_str()) {
                    tracing::warn!(error = %u, "could not remove the pod's lock file");
                }
                Err(e)
            }
        }
    }

    fn del(&self, req: &AttachRequest) -> Result<(), Error> {
        let records = Records::open(&load_state_dir(&req.req.raw)?)?;
        let pod_lock = records.lock_pod(&req.container_id)?;
        let cid = req.container_id.as_str();
        let Some(rec) = records.load(cid, req.ifname.as_str())? else {
            return records.unlock_pod(pod_lock, cid);
        };
        // A pod that is gone took its rules and tables with it.
        if let Some(pod) = req.netns.as_deref().and_then(|p| NetNs::open(p).ok()) {
            let sock = pod.route_socket()?;
            let mut errors = policy::revert(&sock, &rec.applied);
            if let Some(d) = &rec.default_nic {
                errors.extend(policy::revert(&sock, d));
            }
            if let Some(e) = Error::from_many(errors) {
                return Err(e.step(format!("remove the routing of {}", req.ifname)));
            }
        }
        failpoint::hit("coordinator.del.after_revert")?;
        records.remove(cid, req.ifname.as_str())?;
        failpoint::hit("coordinator.del.after_record")?;
        records.unlock_pod(pod_lock, cid)
    }

    fn check(&self, req: &AttachRequest) -> Result<(), Error> {
        let conf = CoordConf::load(&req.req.raw, &req.ifname)?;
        if conf.mode == Mode::Disabled {
            return Ok(());
        }
        let records = Records::open(&conf.state_dir)?;
        let rec = records
            .load(req.container_id.as_str(), req.ifname.as_str())?
            .ok_or_else(|| req.not_recorded("routing"))?;
        let netns = req.check_netns()?;
        let sock = NetNs::open(netns)?.route_socket()?;
        let mut problems = policy::verify(&sock, &rec.applied)?;
        if let Some(d) = &rec.default_nic {
            problems.extend(policy::verify(&sock, d)?);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Check(format!(
                "{} (table {}): {}",
                req.ifname,
                rec.table,
                problems.join("; ")
            )))
        }
    }

    fn gc(&self, req: &GcRequest) -> Result<(), Error> {
        let records = Records::open(&load_state_dir(&req.req.raw)?)?;
        for rec in records.all()? {
            if req.covers(rec.network.as_deref()) && !req.keeps(&rec.container_id, &rec.ifname) {
                // GC may assume a stale attachment's netns is gone: its
                // rules and tables went with it.
                records.remove(&rec.container_id, &rec.ifname)?;
            }
        }
        for cid in records.orphan_pod_locks()? {
            // A pod whose ADD or DEL is running holds it: leave that one be.
            if let Ok(lock) = records.lock_pod_within(&cid, Duration::ZERO) {
                records.unlock_pod(lock, cid.as_str())?;
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), Error> {
        Records::open(&load_state_dir(&req.raw)?)
            .map(drop)
            .map_err(|e| Error::NotAvailable(format!("coordinator state directory: {e}")))
    }
}

/// The steps of ADD; returns the interface's addresses (for announcements).
fn add_steps<'a>(
    ctx: &'a Ctx<'_>,
    result: &mut CniResult,
    undo: &mut Undo<'a>,
) -> Result<Vec<IpNet>, Error> {
    let (conf, sock, ifname) = (&ctx.conf, &ctx.sock, &ctx.req.ifname);
    let link = sock
        .link_by_name(ifname.as_str())?
        .ok_or_else(|| Error::Device {
            device: ifname.to_string(),
            reason: "not in the pod: coordinator must be chained after the plugin that creates it"
                .into(),
        })?;
    let (addrs, gateways) = addresses_and_gateways(sock, &link, result, ifname)?;
    let link = tune_link(ctx, &link, &addrs, undo)?;
    failpoint::hit("coordinator.add.after_tuning")?;
    probe_addresses(ctx, &link, &addrs, &gateways)?;
    failpoint::hit("coordinator.add.after_probes")?;

    let table = allocate_table(
        &ctx.records,
        sock,
        &ctx.req.container_id,
        ifname,
        conf.table_base,
        conf.table,
    )?;
    let mut record = CoordRecord {
        version: 1,
        container_id: ctx.req.container_id.to_string(),
        ifname: ifname.to_string(),
        table,
        applied: Default::default(),
        default_nic: None,
        network: ctx.req.req.conf.name.clone(),
    };
    let mut saved = false;
    if conf.tune_routes {
        let takes_default = conf.default_route_nic == *ifname;
        let nic_plan = if takes_default {
            plan_default_nic_aside(ctx)?
        } else {
            None
        };
        let extra: Vec<RouteSpec> = conf
            .policy_routes
            .iter()
            .map(|p| RouteSpec::new(p.dst, Some(p.gw), link.index))
            .collect();
        let mut plan = policy::plan_interface(
            sock,
            &InterfaceRouting {
                link: &link,
                addrs: &addrs,
                gateways: &gateways,
                table,
                priority: priority_of(table),
                keep_default_in_main: takes_default,
                extra: &extra,
            },
        )?;
        if takes_default {
            plan.extend(main_defaults(&link, &gateways));
        }
        // Recorded before the first change (an intent log): a crash part-way
        // leaves DEL the list of what may have been done.
        record.default_nic = nic_plan
            .as_ref()
            .map(|p| policy::intent(sock, p))
            .transpose()?;
        record.applied = policy::intent(sock, &plan)?;
        save_record(ctx, &record, undo)?;
        saved = true;
        failpoint::hit("coordinator.add.after_intent")?;
        if let Some(p) = &nic_plan {
            record.default_nic = Some(policy::apply(sock, p, undo)?);
        }
        record.applied = policy::apply(sock, &plan, undo)?;
        failpoint::hit("coordinator.add.after_routing")?;
        add_hijack_routes(ctx)?;
        failpoint::hit("coordinator.add.after_hijack")?;
    }
    // Now what was actually changed (CHECK verifies exactly that).
    ctx.records.save(&record)?;
    if !saved {
        push_record_removal(ctx, &record, undo);
    }
    failpoint::hit("coordinator.add.after_record")?;
    reflect_in_result(
        result,
        ctx,
        &link,
        table,
        conf.tune_routes && conf.default_route_nic != *ifname,
        &gateways,
    );
    Ok(addrs)
}

/// The interface's global addresses (prevResult's and the kernel's) and
/// the gateways prevResult gives for them.
fn addresses_and_gateways(
    sock: &RouteSocket,
    link: &Link,
    result: &CniResult,
    ifname: &IfName,
) -> Result<(Vec<IpNet>, Vec<IpAddr>), Error> {
    let index = result
        .interfaces
        .iter()
        .position(|i| i.name == ifname.as_str());
    let mine: Vec<_> = result
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none() || ip.interface == index)
        .collect();
    let mut addrs: Vec<IpNet> = mine.iter().map(|ip| ip.address).collect();
    for a in sock.addresses(link)? {
        let link_local = match a.addr() {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
        };
        if !link_local && !addrs.iter().any(|x| x.addr() == a.addr()) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(Error::Device {
            device: ifname.to_string(),
            reason: "has no usable IP address (neither in prevResult nor on the interface)".into(),
        });
    }
    let mut gateways: Vec<IpAddr> = Vec::new();
    for v6 in [false, true] {
        if let Some(gw) = mine
            .iter()
            .filter(|ip| ip.address.addr().is_ipv6() == v6)
            .find_map(|ip| ip.gateway)
        {
            gateways.push(gw);
        }
    }
    Ok((addrs, gateways))
}

/// MTU, txqueuelen, MAC prefix, rp_filter, link up. Returns the link as it is now.
fn tune_link<'a>(
    ctx: &'a Ctx<'_>,
    link: &Link,
    addrs: &[IpNet],
    undo: &mut Undo<'a>,
) -> Result<Link, Error> {
    let (conf, sock) = (&ctx.conf, &ctx.sock);
    let orig = link.clone();
    if let Some(mtu) = conf.mtu.filter(|m| *m != link.mtu) {
        sock.set_mtu(link, mtu)
            .step(|| format!("mtu {mtu} on {}", link.name))?;
        undo.push("restore MTU", move || Ok(sock.set_mtu(&orig, orig.mtu)?));
    }
    if let Some(len) = conf.tx_queue_len {
        sock.set_txqlen(link, len)
            .step(|| format!("txQueueLen {len} on {}", link.name))?;
    }
    if let Some(prefix) = conf.mac_prefix {
        let mac = prefixed_mac(prefix, addrs);
        if link.mac != mac.0 {
            sock.set_mac(link, &mac.0)
                .step(|| format!("podMACPrefix: MAC {mac} on {}", link.name))?;
            let orig = link.clone();
            undo.push("restore MAC", move || Ok(sock.set_mac(&orig, &orig.mac)?));
        }
    }
    if let Some(v) = conf.rp_filter {
        let ifname = ctx.req.ifname.clone();
        ctx.pod.run(|| set_rp_filter(&ifname, v))??;
    }
    if !link.up {
        sock.set_up(link, true)?;
    }
    sock.link_by_index(link.index)?
        .ok_or_else(|| Error::Device {
            device: link.name.clone(),
            reason: "vanished from the pod".into(),
        })
}

/// prefix + the interface's first IPv4 address (or the last 4 bytes of its
/// first IPv6 address): 0a:1b + 10.6.0.5 = 0a:1b:0a:06:00:05.
fn prefixed_mac(prefix: [u8; 2], addrs: &[IpNet]) -> MacAddr {
    let low = addrs
        .iter()
        .find_map(|a| match a.addr() {
            IpAddr::V4(v4) => Some(v4.octets()),
            IpAddr::V6(_) => None,
        })
        .or_else(|| {
            addrs.iter().find_map(|a| match a.addr() {
                IpAddr::V6(v6) => {
                    let o = v6.octets();
                    Some([o[12], o[13], o[14], o[15]])
                }
                IpAddr::V4(_) => None,
            })
        })
        .unwrap_or_default();
    MacAddr([prefix[0], prefix[1], low[0], low[1], low[2], low[3]])
}

/// rp_filter on `all`, `default` and the interface (the kernel uses the
/// maximum of `all` and the interface's value). Runs inside the pod netns.
fn set_rp_filter(ifname: &IfName, v: u8) -> Result<(), Error> {
    for scope in ["all", "default", ifname.as_str()] {
        let scope = IfName::parse(scope).map_err(|e| Error::Internal(e.to_string()))?;
        sysctl::set_iface("ipv4", &scope, "rp_filter", &v.to_string())
            .map_err(|e| Error::Internal(format!("rp_filter on {scope}: {e}")))?;
    }
    Ok(())
}

/// Conflict detection first, then gateway reachability (sequential, as
/// spiderpool#4475 learned: concurrent probes poisoned each other).
fn probe_addresses(
    ctx: &Ctx<'_>,
    link: &Link,
    addrs: &[IpNet],
    gateways: &[IpAddr],
) -> Result<(), Error> {
    let conf = &ctx.conf;
    if !conf.detect_conflict && !conf.detect_gateway {
        return Ok(());
    }
    let Some(mac) = MacAddr::from_slice(&link.mac) else {
        return Ok(()); // not Ethernet (IPoIB): no ARP/NDP to probe with
    };
    let settings = ProbeSettings {
        timeout: conf.probe_timeout,
        retries: conf.probe_retries,
    };
    let name = link.name.clone();
    ctx.pod.run(|| -> Result<(), Error> {
        if conf.detect_conflict {
            for a in addrs {
                if let Some(other) = probe::detect_conflict(&name, link.index, mac.0, a.addr(), &settings)? {
                    return Err(Error::Busy {
                        what: format!("address {} of {name}", a.addr()),
                        owner: format!("another host (MAC {}) that answered the conflict probe", MacAddr(other)),
                    });
                }
            }
        }
        if conf.detect_gateway {
            for gw in gateways {
                let Some(ours) = addrs.iter().map(|a| a.addr()).find(|a| a.is_ipv6() == gw.is_ipv6()) else {
                    continue;
                };
                let reached = probe::probe_gateway(&name, link.index, mac.0, ours, *gw, &settings)?;
                tracing::debug!(gateway = %gw, mac = %MacAddr(reached.mac), after = ?reached.after, "gateway answered");
            }
        }
        Ok(())
    })?
}

fn save_record<'a>(
    ctx: &'a Ctx<'_>,
    record: &CoordRecord,
    undo: &mut Undo<'a>,
) -> Result<(), Error> {
    ctx.records.save(record)?;
    push_record_removal(ctx, record, undo);
    Ok(())
}

fn push_record_removal<'a>(ctx: &'a Ctx<'_>, record: &CoordRecord, undo: &mut Undo<'a>) {
    let saved = (record.container_id.clone(), record.ifname.clone());
    undo.push("remove coordinator record", move || {
        ctx.records.remove(&saved.0, &saved.1)
    });
}

/// When this interface takes the main default route, the default NIC's
/// defaults move into its own table (tableBase), with rules for its addresses.
fn plan_default_nic_aside(ctx: &Ctx<'_>) -> Result<Option<Plan>, Error> {
    let (conf, sock) = (&ctx.conf, &ctx.sock);
    let Some(nic) = sock.link_by_name(conf.default_cni_nic.as_str())? else {
        return Ok(None);
    };
    let defaults: Vec<RouteSpec> = policy::main_routes_via(sock, &nic)?
        .into_iter()
        .filter(RouteSpec::is_default)
        .collect();
    let gateways: Vec<IpAddr> = defaults.iter().filter_map(|r| r.gateway).collect();
    let addrs: Vec<IpNet> = sock
        .addresses(&nic)?
        .into_iter()
        .filter(|a| !matches!(a.addr(), IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
        .collect();
    let plan = policy::plan_interface(
        sock,
        &InterfaceRouting {
            link: &nic,
            addrs: &addrs,
            gateways: &gateways,
            table: conf.table_base,
            priority: priority_of(conf.table_base),
            keep_default_in_main: false,
            extra: &[],
        },
    )?;
    Ok(Some(plan))
}

/// This interface's default routes, in the main table.
fn main_defaults(link: &Link, gateways: &[IpAddr]) -> Plan {
    Plan {
        add: gateways
            .iter()
            .map(|gw| {
                let any = if gw.is_ipv6() {
                    IpNet::V6(Default::default())
                } else {
                    IpNet::V4(Default::default())
                };
                RouteSpec::new(any, Some(*gw), link.index)
            })
            .collect(),
        ..Default::default()
    }
}

/// hijackCIDR (and Spiderpool's serviceCIDR / overlayPodCIDR) in the main
/// table through the pod's cluster NIC (podDefaultCniNic), so service and
/// cluster traffic never leaves through a rail, even when a rail holds the
/// main default. The gateway is the cluster NIC's default, found in main or,
/// when a rail took the main default, in the NIC's own table (tableBase).
/// Shared by every rail of the pod: an existing route is fine, and DEL leaves
/// them (they die with the pod).
fn add_hijack_routes(ctx: &Ctx<'_>) -> Result<(), Error> {
    let (conf, sock) = (&ctx.conf, &ctx.sock);
    if conf.hijack.is_empty() {
        return Ok(());
    }
    let Some(nic) = sock.link_by_name(conf.default_cni_nic.as_str())? else {
        return Err(Error::config(
            "podDefaultCniNic",
            format!("{} is not in the pod", conf.default_cni_nic),
        ));
    };
    let mut defaults: Vec<RouteSpec> = Vec::new();
    for table in [libcni::netlink::MAIN_TABLE, conf.table_base] {
        for v6 in [false, true] {
            defaults.extend(
                sock.routes(v6, table)?
                    .into_iter()
                    .filter(|r| r.is_default() && r.oif == Some(nic.index)),
            );
        }
    }
    for cidr in &conf.hijack {
        let Some(via) = defaults
            .iter()
            .find(|d| d.dst.addr().is_ipv6() == cidr.addr().is_ipv6())
        else {
            tracing::warn!(%cidr, nic = %nic.name, "the cluster NIC has no default route of this family: hijack route skipped");
            continue;
        };
        let mut route = RouteSpec::new(*cidr, via.gateway, nic.index);
        route.onlink = via.onlink;
        match sock.add_route(&route) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(e).step(|| format!("hijackCIDR {cidr} via {}", nic.name)),
        }
    }
    Ok(())
}

/// prevResult passes through with what changed: the interface's MAC and MTU,
/// and its default routes now in its table (1.1.0 says `table`; older results
/// cannot, so those routes are dropped rather than claimed in main).
fn reflect_in_result(
    result: &mut CniResult,
    ctx: &Ctx<'_>,
    link: &Link,
    table: u32,
    moved_default: bool,
    gateways: &[IpAddr],
) {
    if let Some(iface) = result
        .interfaces
        .iter_mut()
        .find(|i| i.name == ctx.req.ifname.as_str())
    {
        if let Some(mac) = MacAddr::from_slice(&link.mac) {
            iface.mac = Some(mac.to_string());
        }
        if iface.mtu.is_some() || ctx.conf.mtu.is_some() {
            iface.mtu = Some(link.mtu);
        }
    }
    if !moved_default {
        return;
    }
    let is_ours = |r: &libcni::result::Route| {
        r.dst.prefix_len() == 0 && r.gw.is_some_and(|g| gateways.contains(&g))
    };
    if ctx.req.req.version >= SpecVersion::V1_1_0 {
        for r in result.routes.iter_mut().filter(|r| is_ours(r)) {
            r.table = Some(table);
        }
    } else {
        result.routes.retain(|r| !is_ours(r));
    }
}

/// Gratuitous ARP / unsolicited NA for the interface's addresses, so a pod
/// recreated with the same address is reachable at once: sent by the kernel
/// (no packet socket, see libcni::announce), or by us if the link cannot
/// take its MAC again. Best effort.
fn announce_all(ctx: &Ctx<'_>, addrs: &[IpNet]) {
    let Ok(Some(link)) = ctx.sock.link_by_name(ctx.req.ifname.as_str()) else {
        return;
    };
    let ifname = ctx.req.ifname.clone();
    let kernel = ctx
        .pod
        .run(|| announce::enable_kernel_announcements(&ifname))
        .ok()
        .and_then(Result::ok)
        .and_then(|()| announce::via_kernel(&ctx.sock, &link).ok());
    if kernel.is_some() {
        return;
    }
    let Some(mac) = MacAddr::from_slice(&link.mac) else {
        return;
    };
    let ips: Vec<IpAddr> = addrs.iter().map(|a| a.addr()).collect();
    let name = link.name.clone();
    if let Ok(errors) = ctx.pod.run(|| {
        announce::announce(
            &name,
            link.index,
            mac.0,
            &ips,
            std::time::Duration::from_millis(200),
        )
    }) {
        for e in errors {
            tracing::info!(error = %e, "address announcement failed (best effort)");
        }
    }
}

fn main() {
    skel::run(
        Coordinator,
        concat!(
            "coordinator CNI plugin ",
            env!("CARGO_PKG_VERSION"),
            " (rdma-cni-rs)"
        ),
    )
}
