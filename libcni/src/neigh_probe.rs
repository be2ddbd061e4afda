//! The IPv4 gateway probe through the kernel's neighbour table: create an
//! entry for the gateway with NTF_USE, which makes the kernel send the ARP
//! request at once, and watch the entry until the answer resolves it.
//!
//! Why not the packet socket of `probe`: closing an AF_PACKET socket waits
//! for an RCU grace period (packet_release -> synchronize_net), ~16 ms on
//! this kind of machine, once per rail and so eight times per pod, longer
//! than everything else a coordinator ADD does. rtnetlink sockets close at
//! once. A resolved entry stays (the pod's first packet to its gateway then
//! needs no ARP); a failed probe removes its entry. The request's sender
//! address is the kernel's choice (the interface's address in the gateway's
//! subnet), which on a rail interface is the address being configured.
//!
//! Only where the probe owns the entry: when the interface already has an
//! entry for the gateway (static, or learnt from earlier traffic), which the
//! probe must neither trust nor disturb, or when the kernel does not resolve
//! on this link (NOARP), the caller falls back to its packet socket. IPv6
//! stays on the packet socket: the kernel sends no solicitation before the
//! link-local address has finished DAD.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use crate::netlink::{Neighbour, NetlinkError, RouteSocket};
use crate::probe::ProbeSettings;

/// The gateway's MAC (None: no try got an answer) and when the wait ended.
pub(crate) type Outcome = (Option<[u8; 6]>, Instant);
type OpError = (&'static str, io::Error);

/// Longest pause between two looks at the entry.
const MAX_PAUSE: Duration = Duration::from_millis(2);

fn op(name: &'static str) -> impl Fn(NetlinkError) -> OpError {
    move |e| (name, io::Error::other(e.to_string()))
}

/// Probes `gw` on link `index` (in the calling thread's netns) up to
/// `s.retries` times, each waiting up to `s.timeout`; a late answer to an
/// earlier try counts too. None: not usable here, use the packet socket.
pub(crate) fn gateway_v4(
    index: u32,
    gw: Ipv4Addr,
    mac: [u8; 6],
    s: &ProbeSettings,
) -> Option<Result<Outcome, OpError>> {
    let gw = IpAddr::V4(gw);
    let sock = RouteSocket::new().ok()?;
    if sock.neighbour(index, gw).ok()?.is_some() {
        return None;
    }
    match tries(&sock, index, gw, mac, s) {
        Ok(Some(outcome)) => Some(Ok(outcome)),
        Ok(None) => None,
        Err(e) => {
            // Leave nothing of ours behind.
            let _ = sock.del_neighbour(index, gw);
            Some(Err(e))
        }
    }
}

/// Ok(None): the kernel does not resolve on this link (entry not ours or
/// not resolving): the entry is removed and the caller falls back.
fn tries(
    sock: &RouteSocket,
    index: u32,
    gw: IpAddr,
    mac: [u8; 6],
    s: &ProbeSettings,
) -> Result<Option<Outcome>, OpError> {
    for _ in 0..s.retries {
        sock.resolve_neighbour(index, gw).map_err(op("resolve"))?;
        let deadline = Instant::now() + s.timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            match sock.neighbour(index, gw).map_err(op("look up"))? {
                Some(Neighbour::Resolved(l)) => {
                    if let Ok(found) = <[u8; 6]>::try_from(l.as_slice())
                        && found != mac
                    {
                        return Ok(Some((Some(found), Instant::now())));
                    }
                    // Not an Ethernet answer from another host: not ours to judge.
                    sock.del_neighbour(index, gw).map_err(op("remove"))?;
                    return Ok(None);
                }
                Some(Neighbour::Resolving) => {}
                Some(Neighbour::Failed) => break,
                Some(Neighbour::Other) | None => {
                    sock.del_neighbour(index, gw).map_err(op("remove"))?;
                    return Ok(None);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(MAX_PAUSE);
        }
        // A fresh entry for the next try: the kernel asks again at once.
        sock.del_neighbour(index, gw).map_err(op("remove"))?;
    }
    Ok(Some((None, Instant::now())))
}
