//! Link-layer probes of a rail interface before it is handed over: does the gateway answer (ARP
//! request, neighbour solicitation), and does another host already use an address (RFC 5227 ARP
//! probe, RFC 4862 duplicate address detection)?
//!
//! Every call opens its own packet socket, bound to its own interface, and builds every frame
//! itself: probes of several interfaces can run at once on different threads, IPv6 works while
//! the pod's address is still tentative, and the neighbour table is never read or written.
//! One exception, for speed: an IPv4 gateway the interface has no neighbour entry for is probed
//! through the kernel's neighbour table (`neigh_probe`), because closing a packet socket waits
//! for an RCU grace period (~16 ms, per rail).
//! The calling thread must already be inside the pod's network namespace.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use libc::c_int;

use crate::neigh_probe;

const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// RFC 4861 §7.1: neighbour discovery messages are sent, and only accepted, with hop limit 255.
const ND_HOP_LIMIT: u8 = 255;
const ICMPV6: u8 = 58;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Received frames longer than this are no ARP or neighbour discovery message worth reading.
const RECV_BUF: usize = 2048;

const SOCKADDR_LL_LEN: libc::socklen_t = size_of::<libc::sockaddr_ll>() as _;

/// EtherType (host order) and destination MAC of the probe frames.
type Dest = (c_int, [u8; 6]);
const ARP_BROADCAST: Dest = (libc::ETH_P_ARP, BROADCAST_MAC);

const LD_BYTE: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// Kernel-side filter of the IPv6 socket: only ICMPv6 (no extension headers) of type 135 or 136
/// gets through, so other traffic on a busy interface neither wakes us nor fills the queue.
/// Offsets count from the IPv6 header: a SOCK_DGRAM packet socket sees no Ethernet header.
const ND_FILTER: [libc::sock_filter; 7] = [
    bpf(LD_BYTE, 0, 0, 6), // next header
    bpf(JEQ, 0, 4, ICMPV6 as u32),
    bpf(LD_BYTE, 0, 0, 40), // ICMPv6 type
    bpf(JEQ, 1, 0, NEIGHBOR_ADVERTISEMENT as u32),
    bpf(JEQ, 0, 1, NEIGHBOR_SOLICITATION as u32),
    bpf(RET, 0, 0, u32::MAX), // accept the whole packet
    bpf(RET, 0, 0, 0),        // drop
];

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// How hard to try: `retries` tries, each one frame sent and up to `timeout` of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSettings {
    /// How long each try waits for an answer after its frame was sent.
    pub timeout: Duration,
    /// Number of tries, at least 1.
    pub retries: u32,
}

/// A gateway that answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// The gateway's link-layer address.
    pub mac: [u8; 6],
    /// Time from the start of the probe to the answer.
    pub after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("gateway {gw} did not answer on {ifname}: {tries} tries in {waited:?}")]
    Unreachable {
        ifname: String,
        gw: IpAddr,
        waited: Duration,
        tries: u32,
    },
    #[error("probe for {addr} on {ifname}: {op} failed: {source}")]
    Io {
        ifname: String,
        addr: IpAddr,
        op: &'static str,
        source: io::Error,
    },
    #[error("probe for gateway {gw} from {ours} on {ifname}: not of one address family")]
    FamilyMismatch {
        ifname: String,
        ours: IpAddr,
        gw: IpAddr,
    },
    #[error("cannot probe for {addr} on {ifname}: {reason}")]
    Invalid {
        ifname: String,
        addr: IpAddr,
        reason: &'static str,
    },
}

/// A failed system call: its name and error.
type OpError = (&'static str, io::Error);
/// What `parse_nd` returns.
type Nd = (u8, Ipv6Addr, Ipv6Addr, Option<[u8; 6]>);

/// Sends an ARP request (IPv4) or a neighbour solicitation (IPv6) for `gw` from `our_ip`, up to
/// `s.retries` times, and waits for the gateway's answer: its MAC, or
/// [`ProbeError::Unreachable`] when no try got one.
pub fn probe_gateway(
    ifname: &str,
    ifindex: u32,
    mac: [u8; 6],
    our_ip: IpAddr,
    gw: IpAddr,
    s: &ProbeSettings,
) -> Result<Reached, ProbeError> {
    let index = validate(ifname, ifindex, mac, s, [gw, our_ip])?;
    let start = Instant::now();
    let (found, at) = match (our_ip, gw) {
        (IpAddr::V4(ours), IpAddr::V4(gw)) => match neigh_probe::gateway_v4(ifindex, gw, mac, s) {
            Some(outcome) => outcome,
            None => {
                let request = arp_request(mac, ours, gw);
                exchange(index, ARP_BROADCAST, &request, s, |p, _| {
                    let (oper, sha, spa, _) = parse_arp(p)?;
                    (oper == ARP_REPLY && spa == gw && sha != mac).then_some(sha)
                })
            }
        },
        (IpAddr::V6(ours), IpAddr::V6(gw)) => {
            let ns = ndp_solicitation(mac, ours, gw, true);
            exchange(index, nd_dest(gw), &ns, s, |p, src| {
                let (kind, _, target, lla) = parse_nd(p)?;
                let ok = kind == NEIGHBOR_ADVERTISEMENT && target == gw && src != mac;
                ok.then(|| lla.unwrap_or(src))
            })
        }
        _ => {
            let (ifname, ours) = (ifname.to_owned(), our_ip);
            return Err(ProbeError::FamilyMismatch { ifname, ours, gw });
        }
    }
    .map_err(io_error(ifname, gw))?;
    let (ifname, after) = (ifname.to_owned(), at - start);
    match found {
        Some(mac) => Ok(Reached { mac, after }),
        None => Err(ProbeError::Unreachable {
            ifname,
            gw,
            waited: after,
            tries: s.retries,
        }),
    }
}

/// Sends an RFC 5227 ARP probe (IPv4) or an RFC 4862 DAD solicitation (IPv6) for `ip`, up to
/// `s.retries` times, and returns the MAC of another host that uses `ip`: one that sent an ARP
/// packet from `ip` or a neighbour advertisement for it, or that probes for `ip` itself (an ARP
/// probe or DAD solicitation from another MAC: RFC 5227 §2.1.1, RFC 4862 §5.4.3).
/// `Ok(None)` when no try heard of one.
pub fn detect_conflict(
    ifname: &str,
    ifindex: u32,
    mac: [u8; 6],
    ip: IpAddr,
    s: &ProbeSettings,
) -> Result<Option<[u8; 6]>, ProbeError> {
    let index = validate(ifname, ifindex, mac, s, [ip, ip])?;
    let found = match ip {
        IpAddr::V4(ip) => {
            let probe = arp_request(mac, Ipv4Addr::UNSPECIFIED, ip);
            exchange(index, ARP_BROADCAST, &probe, s, |p, _| {
                let (oper, sha, spa, tpa) = parse_arp(p)?;
                let probing = oper == ARP_REQUEST && spa.is_unspecified() && tpa == ip;
                (sha != mac && (spa == ip || probing)).then_some(sha)
            })
        }
        IpAddr::V6(ip) => {
            let dad = ndp_solicitation(mac, Ipv6Addr::UNSPECIFIED, ip, false);
            exchange(index, nd_dest(ip), &dad, s, |p, src| {
                let (kind, from, target, lla) = parse_nd(p)?;
                let probing = kind == NEIGHBOR_SOLICITATION && from.is_unspecified();
                let owned = kind == NEIGHBOR_ADVERTISEMENT;
                (target == ip && src != mac && (owned || probing)).then(|| lla.unwrap_or(src))
            })
        }
    };
    found.map(|(mac, _)| mac).map_err(io_error(ifname, ip))
}

/// ARP payload (no Ethernet header) of a request for `target_ip` from `sender_mac`/`sender_ip`.
/// The target hardware address is zero, as RFC 5227 §2.1.1 wants in a probe (sender 0.0.0.0).
pub fn arp_request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0; 28];
    // htype 1 (Ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4, oper 1 (request)
    p[..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    p[8..14].copy_from_slice(&sender_mac);
    p[14..18].copy_from_slice(&sender_ip.octets());
    p[24..].copy_from_slice(&target_ip.octets());
    p
}

/// Complete IPv6 packet (header and ICMPv6 neighbour solicitation, checksum filled in) asking for
/// `target`, from `src` to the solicited-node group of `target`, hop limit 255. With
/// `with_source_lla` a source link-layer address option carries `src_mac`; a DAD solicitation
/// (`src` = ::) must not have one (RFC 4861 §4.3).
pub fn ndp_solicitation(
    src_mac: [u8; 6],
    src: Ipv6Addr,
    target: Ipv6Addr,
    with_source_lla: bool,
) -> Vec<u8> {
    let dst = solicited_node(target);
    // type 135, code 0, checksum (below), 4 reserved bytes, target address
    let mut icmp = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    if with_source_lla {
        icmp.extend_from_slice(&[1, 1]); // option: source link-layer address, length 1 (8 bytes)
        icmp.extend_from_slice(&src_mac);
    }
    let sum = icmp6_checksum(src, dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    // version 6, traffic class and flow label 0, payload length (24 or 32), next header, hop limit
    let mut p = vec![0x60, 0, 0, 0, 0, icmp.len() as u8, ICMPV6, ND_HOP_LIMIT];
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&icmp);
    p
}

/// The solicited-node multicast address of `ip`: ff02::1:ff00:0 plus its last 24 bits.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let [.., a, b, c] = ip.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, a, b, c])
}

/// The Ethernet address of IPv6 multicast group `ip` (RFC 2464 §7): 33:33 and its last 32 bits.
pub fn multicast_mac(ip: Ipv6Addr) -> [u8; 6] {
    let [.., a, b, c, d] = ip.octets();
    [0x33, 0x33, a, b, c, d]
}

fn nd_dest(target: Ipv6Addr) -> Dest {
    (libc::ETH_P_IPV6, multicast_mac(solicited_node(target)))
}

/// Checks the arguments of a probe; returns the interface index as the kernel wants it.
fn validate(
    ifname: &str,
    ifindex: u32,
    mac: [u8; 6],
    s: &ProbeSettings,
    addrs: [IpAddr; 2],
) -> Result<c_int, ProbeError> {
    let odd = |ip: &IpAddr| ip.is_unspecified() || ip.is_loopback() || ip.is_multicast();
    let not_unicast = addrs
        .into_iter()
        .find(|ip| odd(ip) || *ip == Ipv4Addr::BROADCAST);
    let (addr, reason) = match not_unicast {
        Some(addr) => (addr, "not a unicast address"),
        None if s.retries == 0 => (addrs[0], "retries must be at least 1"),
        None if mac == [0; 6] || mac[0] & 1 == 1 => (addrs[0], "the interface MAC is not unicast"),
        None => match c_int::try_from(ifindex) {
            Ok(index @ 1..) => return Ok(index),
            _ => (addrs[0], "bad interface index"),
        },
    };
    let ifname = ifname.to_owned();
    Err(ProbeError::Invalid {
        ifname,
        addr,
        reason,
    })
}

fn io_error(ifname: &str, addr: IpAddr) -> impl FnOnce(OpError) -> ProbeError {
    move |(op, source)| {
        let ifname = ifname.to_owned();
        ProbeError::Io {
            ifname,
            addr,
            op,
            source,
        }
    }
}

/// Sends `packet` on `index` up to `s.retries` times, each time waiting up to `s.timeout` for a
/// frame that `answer` (given payload and sender MAC) maps to a MAC; late answers to an earlier
/// try count too. Returns it and when the wait ended, not counting the socket's close (an RCU
/// grace period, milliseconds, for packet sockets).
fn exchange(
    index: c_int,
    (protocol, dst_mac): Dest,
    packet: &[u8],
    s: &ProbeSettings,
    mut answer: impl FnMut(&[u8], [u8; 6]) -> Option<[u8; 6]>,
) -> Result<(Option<[u8; 6]>, Instant), OpError> {
    let fd = open(index, protocol)?;
    let dst = link_addr(protocol, index, dst_mac);
    let (to, to_len) = ((&raw const dst).cast(), SOCKADDR_LL_LEN);
    let mut buf = [0; RECV_BUF];
    for _ in 0..s.retries {
        loop {
            let (data, len) = (packet.as_ptr().cast(), packet.len());
            // SAFETY: `data` is valid for `len` bytes and `to` points to the complete sockaddr_ll
            // `dst` of `to_len` bytes; the kernel only reads both.
            let sent = unsafe { libc::sendto(fd.as_raw_fd(), data, len, 0, to, to_len) };
            match outcome(sent, "send") {
                Ok(None) => continue, // interrupted
                Ok(Some(_)) => break, // a packet socket sends the whole datagram or nothing
                // The queue was full: the frame is lost, like one lost on the wire.
                Err((_, e)) if e.raw_os_error() == Some(libc::ENOBUFS) => break,
                Err(e) => return Err(e),
            }
        }
        let deadline = Instant::now() + s.timeout;
        while let Some((len, src)) = recv_until(&fd, index, &mut buf, deadline)? {
            if let Some(mac) = answer(&buf[..len], src) {
                return Ok((Some(mac), Instant::now()));
            }
        }
    }
    Ok((None, Instant::now())) // recv_until() returned at the last deadline or after it
}

/// A packet socket for EtherType `protocol` (host order) that only receives from `index`.
fn open(index: c_int, protocol: c_int) -> Result<OwnedFd, OpError> {
    // Protocol 0: the socket receives nothing until bind() names the protocol and interface, so
    // no frame of another interface can be queued in between.
    // SAFETY: socket() takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    check(fd, "socket")?;
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if protocol == libc::ETH_P_IPV6 {
        let mut program = ND_FILTER;
        let (len, filter) = (program.len() as libc::c_ushort, program.as_mut_ptr());
        let fprog = libc::sock_fprog { len, filter };
        let opt = (&raw const fprog).cast();
        let size = size_of::<libc::sock_fprog>() as _;
        let (level, name) = (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER);
        // SAFETY: `opt` is the live sock_fprog `fprog` of `size` bytes, pointing to `len`
        // instructions in `program`; the kernel only reads (copies) them during the call.
        let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, opt, size) };
        check(rc, "filter")?;
    }
    let addr = link_addr(protocol, index, [0; 6]);
    let (sll, len) = ((&raw const addr).cast(), SOCKADDR_LL_LEN);
    // SAFETY: `sll` points to the complete sockaddr_ll `addr` of `len` bytes, only read.
    check(unsafe { libc::bind(fd.as_raw_fd(), sll, len) }, "bind")?;
    Ok(fd)
}

fn check(rc: c_int, op: &'static str) -> Result<(), OpError> {
    match rc {
        0.. => Ok(()),
        _ => Err((op, io::Error::last_os_error())),
    }
}

/// The result of a system call that returns a count: `Ok(None)` on EINTR or EAGAIN.
fn outcome(rc: isize, op: &'static str) -> Result<Option<usize>, OpError> {
    match usize::try_from(rc) {
        Ok(n) => Ok(Some(n)),
        Err(_) => match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            e if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            e => Err((op, e)),
        },
    }
}

/// `sockaddr_ll` for `protocol` (host order) on `index`, link-layer address `addr`.
fn link_addr(protocol: c_int, index: c_int, addr: [u8; 6]) -> libc::sockaddr_ll {
    let mut sll_addr = [0; 8];
    sll_addr[..6].copy_from_slice(&addr);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: (protocol as u16).to_be(),
        sll_ifindex: index,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    }
}

/// Waits until `deadline` for a frame that `index` received (not one we sent, PACKET_OUTGOING,
/// nor one for another host seen in promiscuous mode); returns its length in `buf` and the
/// sender's MAC, or `None` at the deadline. EINTR is retried; frames longer than `buf` skipped.
fn recv_until(
    fd: &OwnedFd,
    index: c_int,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<Option<(usize, [u8; 6])>, OpError> {
    let fd = fd.as_raw_fd();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // Rounded up, so that a sub-millisecond rest does not spin.
        let ms = c_int::try_from(left.as_micros().div_ceil(1000)).unwrap_or(c_int::MAX);
        let events = libc::POLLIN;
        let mut pfd = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is one live pollfd, matching the count 1.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if outcome(ready as isize, "poll")?.is_none_or(|n| n == 0) {
            continue; // interrupted, or timed out (then the check above ends the wait)
        }
        let mut from = link_addr(0, 0, [0; 6]);
        let mut from_len = SOCKADDR_LL_LEN;
        let (data, addr) = (buf.as_mut_ptr().cast(), (&raw mut from).cast());
        let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC; // MSG_TRUNC: return the full length
        let len = buf.len();
        // SAFETY: `data` is writable for `len` bytes; `addr` points to `from`, a live sockaddr_ll
        // of `from_len` bytes, which the kernel fills in (and sets `from_len`).
        let n = unsafe { libc::recvfrom(fd, data, len, flags, addr, &mut from_len) };
        let Some(n) = outcome(n, "receive")?.filter(|&n| n <= len) else {
            continue;
        };
        // PACKET_HOST, _BROADCAST or _MULTICAST; not _OTHERHOST nor our own, _OUTGOING.
        let to_us = from.sll_pkttype <= libc::PACKET_MULTICAST;
        if from.sll_ifindex == index && to_us && from.sll_halen == 6 {
            let mut src = [0; 6];
            src.copy_from_slice(&from.sll_addr[..6]);
            return Ok(Some((n, src)));
        }
    }
}

/// ICMPv6 checksum of `icmp` with the IPv6 pseudo-header (RFC 8200 §8.1). Over a received
/// message whose checksum field is right, the result is 0.
fn icmp6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let (src, dst) = (src.octets(), dst.octets());
    let mut sum = icmp.len() as u64 + u64::from(ICMPV6);
    for word in src.chunks(2).chain(dst.chunks(2)).chain(icmp.chunks(2)) {
        let low = word.get(1).copied().unwrap_or(0); // an odd last byte is padded with zero
        sum += u64::from(u16::from_be_bytes([word[0], low]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16) // folded: fits in 16 bits
}

/// Operation, sender MAC, sender IP and target IP of an Ethernet/IPv4 ARP packet.
fn parse_arp(p: &[u8]) -> Option<(u16, [u8; 6], Ipv4Addr, Ipv4Addr)> {
    let p: &[u8; 28] = p.get(..28)?.try_into().ok()?; // anything after it is Ethernet padding
    (p[..6] == [0, 1, 0x08, 0x00, 6, 4]).then_some(())?;
    let oper = u16::from_be_bytes([p[6], p[7]]);
    let (spa, tpa) = ([p[14], p[15], p[16], p[17]], [p[24], p[25], p[26], p[27]]);
    Some((oper, p[8..14].try_into().ok()?, spa.into(), tpa.into()))
}

/// ICMPv6 type, source address, target address and link-layer address option (source in a
/// solicitation, target in an advertisement) of an IPv6 packet without extension headers that
/// carries a valid (RFC 4861 §7.1) neighbour solicitation or advertisement; `None` otherwise.
fn parse_nd(p: &[u8]) -> Option<Nd> {
    let header = p.get(..40)?;
    let icmp = p.get(40..40 + usize::from(u16::from_be_bytes([header[4], header[5]])))?;
    let addr = |b: &[u8]| <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from);
    let (src, dst) = (addr(&header[8..24])?, addr(&header[24..40])?);
    let kind = *icmp.first()?;
    let valid = header[0] >> 4 == 6
        && header[6..8] == [ICMPV6, ND_HOP_LIMIT]
        && matches!(kind, NEIGHBOR_SOLICITATION | NEIGHBOR_ADVERTISEMENT)
        && icmp.len() >= 24
        && icmp[1] == 0
        && icmp6_checksum(src, dst, icmp) == 0;
    valid.then_some(())?;
    // Options: type, length in units of 8 bytes (0 is invalid), data. The link-layer address
    // option is type 1 (source) in a solicitation, type 2 (target) in an advertisement.
    let wanted = if kind == NEIGHBOR_SOLICITATION { 1 } else { 2 };
    let (mut options, mut lla) = (&icmp[24..], None);
    while let &[option, units, ..] = options {
        let size = usize::from(units) * 8;
        let data = options.get(2..size)?; // None also for length 0
        if option == wanted && size == 8 {
            lla = data.try_into().ok();
        }
        options = &options[size..];
    }
    // RFC 4861 §7.1.1: a solicitation from :: (DAD) has no source link-layer address option.
    (kind == NEIGHBOR_ADVERTISEMENT || !src.is_unspecified() || lla.is_none()).then_some(())?;
    let target = addr(&icmp[8..24])?;
    Some((kind, src, target, lla))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x77, 0x00, 0x02];
    const POD4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
    const GW4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);
    const GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);

    fn settings(ms: u64, retries: u32) -> ProbeSettings {
        let timeout = Duration::from_millis(ms);
        ProbeSettings { timeout, retries }
    }

    #[test]
    fn arp_request_byte_for_byte() {
        #[rustfmt::skip]
        let request: [u8; 28] = [
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            0x02, 0x00, 0x5e, 0x77, 0x00, 0x02, 10, 77, 0, 2,
            0, 0, 0, 0, 0, 0, 10, 77, 0, 1,
        ];
        assert_eq!(arp_request(MAC, POD4, GW4), request);
        let mut probe = request; // RFC 5227 probe: sender IP 0.0.0.0
        probe[14..18].fill(0);
        assert_eq!(arp_request(MAC, Ipv4Addr::UNSPECIFIED, GW4), probe);
    }

    #[test]
    fn multicast_addresses_of_a_known_address() {
        let group = solicited_node("2001:db8::42:abcd:ef01".parse().unwrap());
        assert_eq!(group, "ff02::1:ffcd:ef01".parse::<Ipv6Addr>().unwrap());
        assert_eq!(multicast_mac(group), [0x33, 0x33, 0xff, 0xcd, 0xef, 0x01]);
    }

    /// RFC 1071 sum over an IPv6 packet of even length, written independently of
    /// `icmp6_checksum`: pseudo-header from the packet's own bytes, then the ICMPv6 message.
    fn folded_sum(p: &[u8]) -> u32 {
        let length = (p.len() as u32 - 40).to_be_bytes();
        let bytes = [&p[8..40], &length, &[0, 0, 0, 58], &p[40..]].concat();
        let mut sum: u32 = bytes
            .chunks_exact(2)
            .map(|w| u32::from(w[0]) << 8 | u32::from(w[1]))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum
    }

    #[test]
    fn neighbour_solicitation_fields_and_checksum() {
        let group = solicited_node(GW6).octets();
        let option = [1, 1, 2, 0, 0x5e, 0x77, 0, 2];
        for (src, lla) in [(POD6, true), (POD6, false), (Ipv6Addr::UNSPECIFIED, false)] {
            let p = ndp_solicitation(MAC, src, GW6, lla);
            let len = if lla { 32 } else { 24 };
            assert_eq!(p[..8], [0x60, 0, 0, 0, 0, len as u8, 58, 255]);
            assert_eq!([&p[8..24], &p[24..40]], [src.octets(), group]);
            assert_eq!((p[40], p[41], &p[44..48]), (135, 0, &[0; 4][..]));
            assert_eq!(
                (&p[48..64], &p[64..]),
                (&GW6.octets()[..], &option[..len - 24])
            );
            assert_eq!(folded_sum(&p), 0xffff, "checksum of {p:02x?}");
            let nd = parse_nd(&[&p[..], &[0; 6]].concat()); // with Ethernet padding
            assert_eq!(nd, Some((135, src, GW6, lla.then_some(MAC))));
            // next header, hop limit, checksum, code, zero-length option; truncated
            for (at, value) in [(6, 17), (7, 254), (50, 0x55), (41, 1), (65, 0)] {
                let mut bad = p.clone();
                if let Some(byte) = bad.get_mut(at) {
                    *byte = value;
                    assert!(parse_nd(&bad).is_none(), "byte {at} = {value}");
                }
            }
            assert!(parse_nd(&p[..p.len() - 1]).is_none());
        }
        assert!(parse_nd(&ndp_solicitation(MAC, Ipv6Addr::UNSPECIFIED, GW6, true)).is_none());
    }

    #[test]
    fn bad_arguments_are_refused_before_any_socket() {
        let (s, v4, v6) = (settings(10, 1), IpAddr::V4(GW4), IpAddr::V6(GW6));
        let cases = [
            (
                probe_gateway("net1", 1, MAC, v4, v6, &s),
                "not of one address family",
            ),
            (
                probe_gateway("net1", 1, MAC, v4, v4, &settings(10, 0)),
                "retries",
            ),
            (
                probe_gateway("net1", 0, MAC, v4, v4, &s),
                "bad interface index",
            ),
            (
                probe_gateway("net1", 1, [1; 6], v4, v4, &s),
                "MAC is not unicast",
            ),
        ];
        for (result, reason) in cases {
            let text = result.unwrap_err().to_string();
            assert!(text.contains("net1") && text.contains(reason), "{text}");
        }
        let err = detect_conflict("net2", 1, MAC, "ff02::1".parse().unwrap(), &s).unwrap_err();
        let want = "cannot probe for ff02::1 on net2: not a unicast address";
        assert_eq!(err.to_string(), want);
    }

    use crate::testnet::{NetnsGuard, ip};

    fn mac_of(rail: usize, host: u8) -> [u8; 6] {
        [0x02, 0x77, 0, 0, rail as u8, host]
    }

    /// A pod namespace joined by veth to one gateway namespace per rail. Every gateway has
    /// 10.77.0.1/24, fd00:77::1/64 (the same on all rails, so that an answer from the wrong rail
    /// would show) and MAC `mac_of(rail, 1)`; the pod's end of a rail has 10.77.0.<2+rail>/24,
    /// fd00:77::<2+rail>/64 and MAC `mac_of(rail, 2)`.
    struct Rails(NetnsGuard, Vec<String>);

    impl Rails {
        fn new(tag: char, rails: usize) -> Self {
            let (id, mut this) = (std::process::id(), Rails(NetnsGuard(vec![]), vec![]));
            let pod = format!("probe-{id}-{tag}-pod");
            for r in 0..rails {
                let gw = format!("probe-{id}-{tag}-gw{r}");
                let (ifname, peer) = (format!("pr{id}{tag}p{r}"), format!("pr{id}{tag}g{r}"));
                let [ours, theirs] = [2, 1].map(|h| mac_of(r, h).map(|b| format!("{b:02x}")));
                for ns in [&pod, &gw].into_iter().skip(usize::from(r > 0)) {
                    ip(&format!("netns add {ns}"));
                    this.0.0.push(ns.clone());
                }
                let (ours, theirs) = (ours.join(":"), theirs.join(":"));
                let veth = format!("{ifname} address {ours} netns {pod} type veth");
                ip(&format!(
                    "link add {veth} peer {peer} address {theirs} netns {gw}"
                ));
                for (ns, dev) in [(&gw, &peer), (&pod, &ifname)] {
                    ip(&format!("-n {ns} link set {dev} up"));
                }
                for (ns, dev, host) in [(&gw, &peer, 1), (&pod, &ifname, 2 + r)] {
                    let deadline = Instant::now() + Duration::from_secs(5); // carrier, qdisc
                    while !ip(&format!("-n {ns} -o link show dev {dev}")).contains("state UP") {
                        assert!(Instant::now() < deadline, "{dev} in {ns} not up");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    ip(&format!("-n {ns} addr add 10.77.0.{host}/24 dev {dev}"));
                    ip(&format!(
                        "-n {ns} addr add fd00:77::{host}/64 dev {dev} nodad"
                    ));
                }
                this.1.push(ifname);
            }
            this
        }

        /// Runs `f(ifname, ifindex, mac, [ipv4, ipv6])` for `rail`'s pod end, on a fresh thread
        /// inside the pod namespace.
        fn on_rail<T: Send>(
            &self,
            rail: usize,
            f: impl FnOnce(&str, u32, [u8; 6], [IpAddr; 2]) -> T + Send,
        ) -> T {
            let (ifname, host) = (&self.1[rail], 2 + rail as u8);
            let ours = [
                IpAddr::from([10, 77, 0, host]),
                format!("fd00:77::{host}").parse().unwrap(),
            ];
            std::thread::scope(|s| {
                s.spawn(|| {
                    let file = std::fs::File::open(format!("/run/netns/{}", self.0.0[0])).unwrap();
                    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                    let name = std::ffi::CString::new(ifname.as_str()).unwrap();
                    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
                    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
                    assert_ne!(index, 0, "{ifname}: {}", io::Error::last_os_error());
                    f(ifname, index, mac_of(rail, 2), ours)
                })
                .join()
                .unwrap()
            })
        }
    }

    const GATEWAYS: [IpAddr; 2] = [IpAddr::V4(GW4), IpAddr::V6(GW6)];

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn gateway_answers_and_owns_its_address_while_others_are_free() {
        let rails = Rails::new('g', 1);
        let (s, free) = (
            settings(300, 5),
            ["10.77.0.50", "fd00:77::50"].map(|a| a.parse().unwrap()),
        );
        let (reached, owned, unused) = rails.on_rail(0, |ifname, index, mac, ours| {
            let probe = |i: usize| probe_gateway(ifname, index, mac, ours[i], GATEWAYS[i], &s);
            let conflict = |ip| detect_conflict(ifname, index, mac, ip, &settings(200, 3)).unwrap();
            (
                [0, 1].map(probe),
                GATEWAYS.map(conflict),
                free.map(conflict),
            )
        });
        for Reached { mac, after } in reached.map(Result::unwrap) {
            assert_eq!(mac, mac_of(0, 1));
            assert!(after < Duration::from_secs(2), "{after:?}");
        }
        assert_eq!((owned, unused), ([Some(mac_of(0, 1)); 2], [None; 2]));
    }

    static SIGNALS: AtomicUsize = AtomicUsize::new(0);

    extern "C" fn count_signal(_: c_int) {
        SIGNALS.fetch_add(1, SeqCst);
    }

    /// Runs `f` while another thread sends this one SIGUSR1 every 2 ms, with a handler installed
    /// without SA_RESTART: blocking calls in `f` get EINTR. Returns the number of signals too.
    fn under_signals<T>(f: impl FnOnce() -> T) -> (T, usize) {
        // SAFETY: all-zero is a valid sigaction (empty mask, no flags); the handler only
        // touches an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = count_signal as extern "C" fn(c_int) as libc::sighandler_t;
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
                0
            );
        }
        // SAFETY: pthread_self() has no preconditions.
        let me = unsafe { libc::pthread_self() };
        let (done, before) = (AtomicBool::new(false), SIGNALS.load(SeqCst));
        let result = std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(SeqCst) {
                    // SAFETY: thread `me` is alive: it waits for this one at the end of the scope.
                    unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            let result = f();
            done.store(true, SeqCst);
            result
        });
        (result, SIGNALS.load(SeqCst) - before)
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn absent_gateway_is_unreachable_in_bounded_time_despite_signals() {
        let rails = Rails::new('u', 1);
        let (s, absent) = (
            settings(50, 3),
            ["10.77.0.9", "fd00:77::9"].map(|a| a.parse().unwrap()),
        );
        let (results, signals) = rails.on_rail(0, |ifname, index, mac, ours| {
            let probe = |i: usize| probe_gateway(ifname, index, mac, ours[i], absent[i], &s);
            under_signals(|| [0, 1].map(probe))
        });
        for (result, gw) in results.into_iter().zip(absent) {
            let err = result.unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&rails.1[0]) && text.contains(&gw.to_string()),
                "{text}"
            );
            let ProbeError::Unreachable {
                waited, tries: 3, ..
            } = err
            else {
                panic!("{err:?}")
            };
            let bounds = Duration::from_millis(150)..Duration::from_secs(2);
            assert!(bounds.contains(&waited), "{waited:?}");
        }
        assert!(signals > 20, "only {signals} signals");
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
    fn concurrent_probes_on_two_rails_do_not_interfere() {
        let (rails, start) = (Rails::new('p', 2), std::sync::Barrier::new(2));
        std::thread::scope(|s| {
            let threads = [0, 1].map(|rail| {
                let (rails, start) = (&rails, &start);
                s.spawn(move || {
                    rails.on_rail(rail, |ifname, index, mac, ours| {
                        let probe = |i: usize| {
                            let reached = probe_gateway(
                                ifname,
                                index,
                                mac,
                                ours[i],
                                GATEWAYS[i],
                                &settings(300, 5),
                            );
                            reached.map(|r| r.mac)
                        };
                        start.wait();
                        (0..10).flat_map(|_| [0, 1].map(probe)).collect::<Vec<_>>()
                    })
                })
            });
            for (rail, thread) in threads.into_iter().enumerate() {
                for mac in thread.join().unwrap() {
                    assert_eq!(mac.unwrap(), mac_of(rail, 1), "rail {rail}");
                }
            }
        });
    }
}
