//! Link-layer announcements after an interface got its addresses: one gratuitous ARP per IPv4
//! address and one unsolicited neighbour advertisement (RFC 4861 §7.2.6) per IPv6 address, so
//! switches and neighbours refresh their caches. Best effort: errors are returned, never fatal.
//!
//! Two ways:
//! - [`via_kernel`] (preferred): with `arp_notify` and `ndisc_notify` on, re-setting a link's own
//!   MAC raises NETDEV_CHANGEADDR and the kernel sends a gratuitous ARP per IPv4 address and an
//!   unsolicited NA per IPv6 address. The driver is not called for an unchanged MAC. No packet
//!   socket is involved: closing an AF_PACKET socket waits for an RCU grace period (17.5 ms
//!   measured on our CI kernel), which would dominate a plugin's run time.
//! - [`announce`]: frames built here and sent on packet sockets, for links that cannot take a
//!   MAC (no `ndo_set_mac_address`). It opens its sockets on the calling thread, so that thread
//!   must already be inside the target network namespace.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use libc::c_int;

const BROADCAST_MAC: [u8; 6] = [0xff; 6];
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// First sleep between two carrier polls; each next one is 1.5 times longer.
const FIRST_POLL: Duration = Duration::from_millis(2);
/// Longest sleep between two carrier polls, so that a long wait still notices the link soon.
const MAX_POLL: Duration = Duration::from_millis(100);
/// RFC 4861 requires hop limit 255 on neighbour discovery messages.
const ND_HOP_LIMIT: c_int = 255;

/// One address that could not be announced.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("gratuitous ARP for {addr} on {ifname} failed: {source}")]
    Garp {
        ifname: String,
        addr: Ipv4Addr,
        source: io::Error,
    },
    #[error("unsolicited neighbour advertisement for {addr} on {ifname} failed: {source}")]
    UnsolicitedNa {
        ifname: String,
        addr: Ipv6Addr,
        source: io::Error,
    },
}

impl AnnounceError {
    fn new(ifname: &str, addr: IpAddr, source: io::Error) -> Self {
        let ifname = ifname.to_owned();
        match addr {
            IpAddr::V4(addr) => Self::Garp {
                ifname,
                addr,
                source,
            },
            IpAddr::V6(addr) => Self::UnsolicitedNa {
                ifname,
                addr,
                source,
            },
        }
    }

    /// The address whose announcement failed.
    pub fn addr(&self) -> IpAddr {
        match self {
            Self::Garp { addr, .. } => IpAddr::V4(*addr),
            Self::UnsolicitedNa { addr, .. } => IpAddr::V6(*addr),
        }
    }
}

/// Called on a thread that is already inside the target network namespace.
/// Waits up to `carrier_wait` for the link to be IFF_UP|IFF_RUNNING (poll, starting at 2 ms,
/// x1.5 backoff, at most 100 ms between polls), then sends one announcement per address (even
/// if the wait timed out). Returns per-address errors, never panics.
///
/// Nothing is sent (and no error returned) when `mac` is all-zero or broadcast; unspecified,
/// loopback and multicast addresses are skipped.
pub fn announce(
    ifname: &str,
    ifindex: u32,
    mac: [u8; 6],
    addrs: &[IpAddr],
    carrier_wait: Duration,
) -> Vec<AnnounceError> {
    if mac == [0; 6] || mac == BROADCAST_MAC {
        return Vec::new();
    }
    let targets: Vec<IpAddr> = addrs.iter().copied().filter(is_announceable).collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let (Some(name), Ok(index @ 1..)) = (ifreq_name(ifname), c_int::try_from(ifindex)) else {
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "bad ifname or ifindex");
        let error = |addr| AnnounceError::new(ifname, addr, invalid());
        return targets.into_iter().map(error).collect();
    };
    wait_for_carrier(&name, carrier_wait);

    let mut arp_sock: Option<io::Result<OwnedFd>> = None;
    let mut icmp6_sock: Option<io::Result<OwnedFd>> = None;
    let mut errors = Vec::new();
    for addr in targets {
        let sent = match addr {
            IpAddr::V4(ip) => match arp_sock.get_or_insert_with(open_arp_socket) {
                Ok(fd) => send_garp(fd, index, mac, ip),
                Err(e) => Err(copy_err(e)),
            },
            IpAddr::V6(ip) => match icmp6_sock.get_or_insert_with(|| open_icmp6_socket(index)) {
                Ok(fd) => send_na(fd, index, mac, ip),
                Err(e) => Err(copy_err(e)),
            },
        };
        if let Err(e) = sent {
            errors.push(AnnounceError::new(ifname, addr, e));
        }
    }
    errors
}

/// ARP payload (no Ethernet header) of a gratuitous ARP request for `ip` from `mac`.
/// Turns on the kernel's own announcements for `ifname`. Call inside the
/// interface's netns (`NetNs::run`); missing IPv6 support is not an error.
pub fn enable_kernel_announcements(ifname: &crate::ids::IfName) -> std::io::Result<()> {
    crate::sysctl::set_iface("ipv4", ifname, "arp_notify", "1")?;
    let _ = crate::sysctl::set_iface("ipv6", ifname, "ndisc_notify", "1");
    Ok(())
}

/// Makes the kernel announce every address of `link` (see the module docs);
/// needs `enable_kernel_announcements` first. `sock` is in the link's netns.
pub fn via_kernel(
    sock: &crate::netlink::RouteSocket,
    link: &crate::netlink::Link,
) -> Result<(), crate::netlink::NetlinkError> {
    sock.set_mac(link, &link.mac)
}

pub fn garp_payload(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0; 28];
    // htype 1 (Ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4, oper 1 (request)
    p[..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    p[8..14].copy_from_slice(&mac); // sender hardware address
    p[14..18].copy_from_slice(&ip.octets()); // sender protocol address
    p[18..24].copy_from_slice(&BROADCAST_MAC); // target hardware address
    p[24..].copy_from_slice(&ip.octets()); // target protocol address = sender: gratuitous
    p
}

/// ICMPv6 neighbour advertisement body (checksum left 0 for the kernel to fill) announcing
/// `target` at `mac`: Override flag only, with a target link-layer address option.
pub fn unsolicited_na(mac: [u8; 6], target: Ipv6Addr) -> Vec<u8> {
    // type 136, code 0, checksum 0; flags R=0 S=0 O=1 (0x20), 3 reserved bytes
    let mut p = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    p.extend_from_slice(&target.octets());
    p.extend_from_slice(&[2, 1]); // option: target link-layer address, length 1 (8 bytes)
    p.extend_from_slice(&mac);
    p
}

fn is_announceable(addr: &IpAddr) -> bool {
    !(addr.is_unspecified() || addr.is_loopback() || addr.is_multicast())
}

/// `io::Error` is not `Clone`; a socket() error is reported once per affected address.
fn copy_err(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// `ifname` as a NUL-terminated `ifr_name`, if it is 1..IFNAMSIZ-1 bytes without NUL.
fn ifreq_name(ifname: &str) -> Option<[libc::c_char; libc::IFNAMSIZ]> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return None;
    }
    let mut name = [0; libc::IFNAMSIZ];
    for (dst, src) in name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Some(name)
}

/// Polls SIOCGIFFLAGS until the link is up and running, the deadline passes, or the query
/// fails (then the sends report the real problem). Returns whether the link came up.
fn wait_for_carrier(name: &[libc::c_char; libc::IFNAMSIZ], wait: Duration) -> bool {
    let want = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    let Ok(sock) = socket(libc::AF_INET, libc::SOCK_DGRAM, 0) else {
        return false;
    };
    let deadline = Instant::now() + wait;
    let mut delay = FIRST_POLL;
    loop {
        // SAFETY: `ifreq` is a plain C struct (array + union of integers/arrays/pointer) for
        // which all-zero bytes are a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        ifr.ifr_name = *name;
        // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name from and writes the flags into
        // `ifr`, which is a live, properly sized `ifreq`.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) };
        if rc < 0 {
            return false;
        }
        // SAFETY: after a successful SIOCGIFFLAGS the kernel has set `ifru_flags`; reading a
        // c_short out of a zero-initialised union is valid in any case.
        if unsafe { ifr.ifr_ifru.ifru_flags } & want == want {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(delay.min(deadline - now).min(MAX_POLL));
        delay = delay.mul_f64(1.5);
    }
}

fn socket(domain: c_int, ty: c_int, protocol: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket() takes no pointers.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// setsockopt() with a plain-data option value (`c_int`, `timeval`).
fn set_opt<T: Copy>(fd: &OwnedFd, level: c_int, name: c_int, value: &T) -> io::Result<()> {
    let len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` points to a live `T` of `len` bytes, which the kernel only reads.
    let rc =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Socket address types that `send_to` may pass to the kernel.
trait SockAddr {}
impl SockAddr for libc::sockaddr_ll {}
impl SockAddr for libc::sockaddr_in6 {}

fn send_to<A: SockAddr>(fd: &OwnedFd, buf: &[u8], addr: &A) -> io::Result<()> {
    let (to, len) = ((addr as *const A).cast(), size_of::<A>() as libc::socklen_t);
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes and `to` points to the complete
        // sockaddr_* `addr` of `len` bytes; the kernel only reads both.
        let n = unsafe { libc::sendto(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), 0, to, len) };
        match usize::try_from(n) {
            Ok(sent) if sent == buf.len() => return Ok(()),
            Ok(_) => return Err(io::Error::new(io::ErrorKind::WriteZero, "short send")),
            Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(io::Error::last_os_error()),
        }
    }
}

fn open_arp_socket() -> io::Result<OwnedFd> {
    let protocol = (libc::ETH_P_ARP as u16).to_be();
    socket(libc::AF_PACKET, libc::SOCK_DGRAM, c_int::from(protocol))
}

/// `sockaddr_ll` for `protocol` (host order) on `ifindex`, link-layer address `addr`.
fn link_addr(protocol: c_int, ifindex: c_int, addr: [u8; 6]) -> libc::sockaddr_ll {
    let mut sll_addr = [0; 8];
    sll_addr[..6].copy_from_slice(&addr);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: (protocol as u16).to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    }
}

fn send_garp(fd: &OwnedFd, ifindex: c_int, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
    let dst = link_addr(libc::ETH_P_ARP, ifindex, BROADCAST_MAC);
    send_to(fd, &garp_payload(mac, ip), &dst)
}

fn open_icmp6_socket(ifindex: c_int) -> io::Result<OwnedFd> {
    let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
    let no_loop: c_int = 0; // our own advertisement need not come back to this namespace
    for (option, value) in [
        (libc::IPV6_MULTICAST_HOPS, &ND_HOP_LIMIT),
        (libc::IPV6_UNICAST_HOPS, &ND_HOP_LIMIT),
        (libc::IPV6_MULTICAST_IF, &ifindex),
        (libc::IPV6_MULTICAST_LOOP, &no_loop),
    ] {
        set_opt(&fd, libc::IPPROTO_IPV6, option, value)?;
    }
    Ok(fd)
}

fn send_na(fd: &OwnedFd, ifindex: c_int, mac: [u8; 6], target: Ipv6Addr) -> io::Result<()> {
    let s6_addr = ALL_NODES.octets();
    let dst = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: 0,
        sin6_flowinfo: 0,
        sin6_addr: libc::in6_addr { s6_addr },
        sin6_scope_id: ifindex.unsigned_abs(), // ifindex > 0 was checked
    };
    send_to(fd, &unsolicited_na(mac, target), &dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x99, 0x00, 0x01];
    const V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
    const V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 1);
    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn frames_byte_for_byte() {
        #[rustfmt::skip]
        let garp: [u8; 28] = [
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            0x02, 0x00, 0x5e, 0x99, 0x00, 0x01, 10, 99, 0, 1,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 10, 99, 0, 1,
        ];
        #[rustfmt::skip]
        let na: [u8; 32] = [
            136, 0, 0, 0, 0x20, 0, 0, 0,
            0xfd, 0x00, 0x00, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
            2, 1, 0x02, 0x00, 0x5e, 0x99, 0x00, 0x01,
        ];
        assert_eq!(garp_payload(MAC, V4), garp);
        assert_eq!(unsolicited_na(MAC, V6), na);
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn skip_rules_send_nothing_and_report_nothing() {
        // The name is invalid: anything actually attempted would come back as an error.
        let bogus = "name-too-long-for-ifreq";
        let good = ips(&["10.0.0.1", "fd00::1"]);
        assert!(announce(bogus, 1, [0; 6], &good, WAIT).is_empty());
        assert!(announce(bogus, 1, [0xff; 6], &good, WAIT).is_empty());
        let skipped = ips(&["0.0.0.0", "127.0.0.1", "224.0.0.1", "::", "::1", "ff02::1"]);
        assert!(announce(bogus, 1, MAC, &skipped, WAIT).is_empty());
        assert!(announce(bogus, 1, MAC, &[], WAIT).is_empty());
    }

    #[test]
    fn bad_name_or_index_is_one_error_per_address() {
        let addrs = ips(&["10.0.0.1", "127.0.0.1", "fd00::1"]);
        let long = "x".repeat(libc::IFNAMSIZ);
        let cases = [
            (long.as_str(), 1),
            ("", 1),
            ("a\0b", 1),
            ("eth0", 0),
            ("eth0", 1 << 31),
        ];
        for (name, index) in cases {
            let errs = announce(name, index, MAC, &addrs, WAIT);
            let got: Vec<IpAddr> = errs.iter().map(AnnounceError::addr).collect();
            assert_eq!(got, ips(&["10.0.0.1", "fd00::1"]), "{name:?}/{index}");
            for e in &errs {
                let (text, addr) = (e.to_string(), e.addr().to_string());
                assert!(text.contains(name) && text.contains(&addr), "{text}");
                assert!(text.ends_with("failed: bad ifname or ifindex"), "{text}");
            }
        }
        let longest = ifreq_name(&"y".repeat(libc::IFNAMSIZ - 1)).unwrap();
        assert_eq!((longest[14], longest[15]), (b'y' as libc::c_char, 0));
    }

    use crate::testnet::{NetnsGuard, ip};

    /// Runs `f` on a fresh thread inside network namespace `ns`.
    fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn ifindex(name: &str) -> u32 {
        let name = std::ffi::CString::new(name).unwrap();
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(index, 0, "{name:?}: {}", io::Error::last_os_error());
        index
    }

    /// `ip6` (an Ethernet payload) is our NA for `target`, to ff02::1, with a valid checksum.
    fn is_expected_na(ip6: &[u8], target: Ipv6Addr) -> bool {
        let na = unsolicited_na(MAC, target);
        if ip6.len() != 40 + na.len() {
            return false;
        }
        let icmp = &ip6[40..];
        // Ones' complement sum over the pseudo-header (addresses, length, next header) + message.
        let words = ip6[8..40].chunks(2).chain(icmp.chunks(2));
        let mut sum: u32 = words.map(|w| u32::from(w[0]) << 8 | u32::from(w[1])).sum();
        sum += na.len() as u32 + 58;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        // Version 6, payload length, next header ICMPv6, hop limit 255, destination ff02::1.
        ip6[0] >> 4 == 6
            && ip6[4..8] == [0, na.len() as u8, 58, 255]
            && ip6[24..40] == ALL_NODES.octets()
            && (icmp[..2] == na[..2] && icmp[4..] == na[4..] && sum == 0xffff)
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore)]
    fn announces_reach_the_peer_once_the_link_is_up() {
        let id = std::process::id();
        let guard = NetnsGuard(vec![format!("annc-{id}-a"), format!("annc-{id}-b")]);
        let ([ns0, ns1], dev0, dev1) = (
            &[&guard.0[0], &guard.0[1]],
            &format!("annc{id}a"),
            &format!("annc{id}b"),
        );
        let mac = MAC.map(|b| format!("{b:02x}")).join(":");
        for cmd in [
            format!("netns add {ns0}"),
            format!("netns add {ns1}"),
            format!("link add {dev0} address {mac} netns {ns0} type veth peer {dev1} netns {ns1}"),
            format!("-n {ns1} link set {dev1} up"),
            format!("-n {ns0} addr add 10.99.0.1/24 dev {dev0}"),
            format!("-n {ns0} -6 addr add fd00:99::1/64 dev {dev0} nodad"),
        ] {
            ip(&cmd);
        }
        let addrs: [IpAddr; 3] = [V4.into(), V6.into(), Ipv4Addr::LOCALHOST.into()];

        // Capture on the peer, opened before anything is announced.
        let cap = in_netns(ns1, || {
            let all = (libc::ETH_P_ALL as u16).to_be();
            let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, c_int::from(all)).unwrap();
            let sll = link_addr(libc::ETH_P_ALL, ifindex(dev1) as c_int, [0; 6]);
            let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `sll` is a complete sockaddr_ll of `len` bytes.
            let rc = unsafe { libc::bind(fd.as_raw_fd(), (&raw const sll).cast(), len) };
            assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            set_opt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout).unwrap();
            fd
        });

        // Link down: waits the whole carrier_wait, then each send fails (ENETDOWN/ENETUNREACH).
        let wait = Duration::from_millis(60);
        let start = Instant::now();
        let errs = in_netns(ns0, || announce(dev0, ifindex(dev0), MAC, &addrs, wait));
        assert!(start.elapsed() >= wait);
        let got: Vec<IpAddr> = errs.iter().map(AnnounceError::addr).collect();
        assert_eq!(got, addrs[..2], "{errs:?}");
        let named = errs.iter().all(|e| e.to_string().contains(dev0));
        assert!(named, "{errs:?}");

        // Link up (carrier comes a moment later): both announcements go out.
        ip(&format!("-n {ns0} link set {dev0} up"));
        let errs = in_netns(ns0, || announce(dev0, ifindex(dev0), MAC, &addrs, WAIT));
        assert!(errs.is_empty(), "{errs:?}");
        let garp = garp_payload(MAC, V4);
        let (mut arp_seen, mut na_seen) = (false, false);
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 2048];
        while !(arp_seen && na_seen) && Instant::now() < deadline {
            // SAFETY: `buf` is writable for `buf.len()` bytes.
            let n = unsafe { libc::recv(cap.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let Ok(n) = usize::try_from(n) else { continue }; // receive timeout
            let (dst, src, payload) = (&buf[..6], &buf[6..12], &buf[14..n.max(14)]);
            match u16::from_be_bytes([buf[12], buf[13]]) {
                _ if n < 14 || src != MAC => {}
                0x0806 => arp_seen |= dst == BROADCAST_MAC && payload.get(..28) == Some(&garp[..]),
                0x86dd => na_seen |= dst == [0x33, 0x33, 0, 0, 0, 1] && is_expected_na(payload, V6),
                _ => {}
            }
        }
        assert!(arp_seen, "no gratuitous ARP captured");
        assert!(na_seen, "no unsolicited NA captured");
    }
}
