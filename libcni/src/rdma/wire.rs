//! The RDMA netlink wire format (`NETLINK_RDMA`, client `RDMA_NL_NLDEV`):
//! requests encoded, replies decoded and matched to their request. The
//! socket that carries them is `netlink.rs`.
//!
//! No Rust crate speaks this family, so requests are encoded and replies
//! decoded here. Constants are from `include/uapi/rdma/rdma_netlink.h` of
//! Linux 6.12.117 (Debian linux-headers-6.12.117+deb12-common, the VM lane's
//! kernel) and are unchanged in 6.1 (linux-libc-dev 6.1.187,
//! /usr/include/rdma/rdma_netlink.h). Kernel behaviour relied on, from
//! drivers/infiniband/core/{netlink,nldev,device}.c (6.12) and checked in the
//! VM lane (tests/tests/vm_rdma.rs):
//! - nldev messages have no family header: attributes follow the nlmsghdr;
//! - a reply's op is not always the request's (PORT_GET doit replies as GET);
//! - in a CMD_GET reply PORT_INDEX is the *number* of ports, not a port;
//! - a port's NDEV_INDEX/NDEV_NAME are sent only when its netdev is in the
//!   socket's netns;
//! - an unknown (or, in exclusive mode, foreign) DEV_INDEX gives EINVAL;
//! - CMD_SET with DEV_NAME renames and ignores NET_NS_FD, so a move sends
//!   DEV_INDEX and NET_NS_FD only;
//! - a move fails with EOPNOTSUPP in shared mode, and in any mode for drivers
//!   without `disassociate_ucontext` (rxe, siw); EPERM without CAP_NET_ADMIN;
//! - SYS_SET to the current mode is a no-op; switching while any netns other
//!   than init_net exists (until its asynchronous cleanup) gives EBUSY.

use std::io;

use netlink_packet_core::{NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR};

pub const NETLINK_RDMA: isize = 20;
const RDMA_NL_NLDEV: u16 = 5;
pub(super) const CMD_GET: u16 = 1;
pub(super) const CMD_SET: u16 = 2;
pub(super) const CMD_PORT_GET: u16 = 5;
pub(super) const CMD_SYS_GET: u16 = 6;
pub(super) const CMD_SYS_SET: u16 = 7;
pub(super) const ATTR_DEV_INDEX: u16 = 1; // u32
const ATTR_DEV_NAME: u16 = 2; // string
const ATTR_PORT_INDEX: u16 = 3; // u32
const ATTR_NODE_GUID: u16 = 6; // u64, host order
const ATTR_NDEV_INDEX: u16 = 50; // u32
const ATTR_NDEV_NAME: u16 = 51; // string
pub(super) const SYS_ATTR_NETNS_MODE: u16 = 66; // u8: 0 exclusive, 1 shared
pub(super) const ATTR_NET_NS_FD: u16 = 68; // u32
/// Attribute type without NLA_F_NESTED / NLA_F_NET_BYTEORDER.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// Types below this are netlink control messages (NOOP, OVERRUN, ...).
const NLMSG_MIN_TYPE: u16 = 0x10;
const NLMSG_HDRLEN: usize = 16;
/// NLMSGERR_ATTR_MSG: the kernel's human-readable reason (extack).
const NLMSGERR_ATTR_MSG: u16 = 1;
/// How many times a dump interrupted by a concurrent change is restarted.
pub(super) const DUMP_RETRIES: usize = 5;

/// The payloads of a request's data replies.
pub(super) type Replies = Result<Vec<Vec<u8>>, RdmaError>;

/// `RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, cmd)`.
pub(super) fn nl_type(cmd: u16) -> u16 {
    (RDMA_NL_NLDEV << 10) + cmd
}

/// Whether RDMA devices are visible in every netns (shared) or each belongs to one (exclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetnsMode {
    Exclusive = 0,
    Shared = 1,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaDevice {
    pub index: u32,
    pub name: String,
    pub node_guid: Option<u64>,
    pub ports: Vec<RdmaPort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaPort {
    pub index: u32,
    /// Only when the port's netdev is in the socket's netns.
    pub netdev_index: Option<u32>,
    pub netdev_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    #[error("RDMA netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{op}: {}{}", io::Error::from_raw_os_error(*errno), reason.as_ref().map(|r| format!(" (kernel: {r})")).unwrap_or_default())]
    Kernel {
        op: String,
        errno: i32,
        /// The kernel's extack message, when it sent one.
        reason: Option<String>,
    },
    #[error(
        "{op}: RDMA netlink dump interrupted by concurrent changes (tried {DUMP_RETRIES} times)"
    )]
    DumpInterrupted { op: String },
    #[error("cannot decode RDMA netlink reply: {0}")]
    Decode(String),
}

impl RdmaError {
    /// The kernel's errno, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RdmaError::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// ENODEV/ENOENT. Note the kernel answers an unknown DEV_INDEX with EINVAL:
    /// look devices up by name (`device_by_name` gives `None`).
    pub fn is_not_found(&self) -> bool {
        matches!(self.errno(), Some(libc::ENODEV | libc::ENOENT))
    }

    pub(super) fn with_op(self, op: impl FnOnce() -> String) -> RdmaError {
        match self {
            RdmaError::Kernel { errno, reason, .. } => RdmaError::Kernel {
                op: op(),
                errno,
                reason,
            },
            RdmaError::DumpInterrupted { .. } => RdmaError::DumpInterrupted { op: op() },
            RdmaError::Decode(m) => RdmaError::Decode(format!("{}: {m}", op())),
            other => other,
        }
    }
}

pub(super) fn decode_err(msg: impl Into<String>) -> RdmaError {
    RdmaError::Decode(msg.into())
}

/// One request attribute: type and value (this module sends only u8 and u32).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Attr(u16, Vec<u8>);

impl Attr {
    pub(super) fn u8(kind: u16, v: u8) -> Attr {
        Attr(kind, vec![v])
    }
    pub(super) fn u32(kind: u16, v: u32) -> Attr {
        Attr(kind, v.to_ne_bytes().to_vec())
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// nlmsghdr (len, type, flags, seq, pid 0) followed by the attributes as
/// TLVs (u16 len, u16 type, value, zero-padded to 4 bytes).
pub(super) fn encode_request(seq: u32, cmd: u16, flags: u16, attrs: &[Attr]) -> Vec<u8> {
    let mut body = Vec::new();
    for Attr(kind, value) in attrs {
        // `as` cannot truncate: values are at most 4 bytes (Attr's constructors).
        body.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        body.extend_from_slice(&kind.to_ne_bytes());
        body.extend_from_slice(value);
        body.resize(align4(body.len()), 0);
    }
    // A few dozen bytes: the length fits in u32.
    let mut out = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
    out.extend_from_slice(&nl_type(cmd).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&[0; 4]); // nlmsg_pid: the kernel
    out.extend_from_slice(&body);
    out
}

fn ne<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// One netlink message of a received datagram.
pub(super) struct Msg<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// Splits a datagram into messages; a length that does not fit is an error.
pub(super) fn split_messages(buf: &[u8]) -> Result<Vec<Msg<'_>>, RdmaError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let bad = || decode_err(format!("truncated netlink message ({} bytes)", rest.len()));
        let len = u32::from_ne_bytes(ne(rest, 0).ok_or_else(bad)?) as usize;
        if len < NLMSG_HDRLEN {
            return Err(decode_err(format!("netlink message length {len}")));
        }
        out.push(Msg {
            kind: u16::from_ne_bytes(ne(rest, 4).ok_or_else(bad)?),
            flags: u16::from_ne_bytes(ne(rest, 6).ok_or_else(bad)?),
            seq: u32::from_ne_bytes(ne(rest, 8).ok_or_else(bad)?),
            payload: rest.get(NLMSG_HDRLEN..len).ok_or_else(bad)?,
        });
        rest = rest.get(align4(len)..).unwrap_or_default();
    }
    Ok(out)
}

/// The attributes of a payload (type without flag bits, value); when a type
/// repeats, the last one counts.
pub(super) struct Attrs<'a>(Vec<(u16, &'a [u8])>);

impl<'a> Attrs<'a> {
    pub(super) fn parse(payload: &'a [u8]) -> Result<Attrs<'a>, RdmaError> {
        let mut out = Vec::new();
        let mut rest = payload;
        while !rest.is_empty() {
            let bad = || decode_err(format!("truncated attribute ({} bytes)", rest.len()));
            let len = u16::from_ne_bytes(ne(rest, 0).ok_or_else(bad)?) as usize;
            let kind = u16::from_ne_bytes(ne(rest, 2).ok_or_else(bad)?) & NLA_TYPE_MASK;
            if len < 4 {
                return Err(decode_err(format!("attribute {kind}: length {len}")));
            }
            out.push((kind, rest.get(4..len).ok_or_else(bad)?));
            rest = rest.get(align4(len)..).unwrap_or_default();
        }
        Ok(Attrs(out))
    }

    fn get(&self, kind: u16) -> Option<&'a [u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| *v)
    }

    /// A fixed-size value (u8, u32, u64): any other length is an error.
    fn fixed<const N: usize>(&self, kind: u16) -> Result<Option<[u8; N]>, RdmaError> {
        let Some(v) = self.get(kind) else {
            return Ok(None);
        };
        let err = || decode_err(format!("attribute {kind}: {} bytes, want {N}", v.len()));
        v.try_into().map(Some).map_err(|_| err())
    }

    fn u32(&self, kind: u16) -> Result<Option<u32>, RdmaError> {
        Ok(self.fixed(kind)?.map(u32::from_ne_bytes))
    }

    /// A string up to its NUL.
    fn string(&self, kind: u16) -> Result<Option<String>, RdmaError> {
        let Some(v) = self.get(kind) else {
            return Ok(None);
        };
        let text = v.split(|b| *b == 0).next().unwrap_or_default();
        let err = |_| decode_err(format!("attribute {kind}: not UTF-8"));
        String::from_utf8(text.to_vec()).map(Some).map_err(err)
    }
}

fn missing(what: &str) -> RdmaError {
    decode_err(format!("reply without {what}"))
}

/// A CMD_GET reply (`ports` left empty: PORT_GET fills them).
pub(super) fn decode_device(payload: &[u8]) -> Result<RdmaDevice, RdmaError> {
    let a = Attrs::parse(payload)?;
    Ok(RdmaDevice {
        index: a.u32(ATTR_DEV_INDEX)?.ok_or_else(|| missing("DEV_INDEX"))?,
        name: a
            .string(ATTR_DEV_NAME)?
            .ok_or_else(|| missing("DEV_NAME"))?,
        node_guid: a.fixed(ATTR_NODE_GUID)?.map(u64::from_ne_bytes),
        ports: Vec::new(),
    })
}

/// A PORT_GET reply: the device's index and the port.
pub(super) fn decode_port(payload: &[u8]) -> Result<(u32, RdmaPort), RdmaError> {
    let a = Attrs::parse(payload)?;
    let port = RdmaPort {
        index: a
            .u32(ATTR_PORT_INDEX)?
            .ok_or_else(|| missing("PORT_INDEX"))?,
        netdev_index: a.u32(ATTR_NDEV_INDEX)?,
        netdev_name: a.string(ATTR_NDEV_NAME)?,
    };
    Ok((
        a.u32(ATTR_DEV_INDEX)?.ok_or_else(|| missing("DEV_INDEX"))?,
        port,
    ))
}

/// A SYS_GET reply.
pub(super) fn decode_netns_mode(payload: &[u8]) -> Result<NetnsMode, RdmaError> {
    match Attrs::parse(payload)?.fixed(SYS_ATTR_NETNS_MODE)? {
        Some([0]) => Ok(NetnsMode::Exclusive),
        Some([1]) => Ok(NetnsMode::Shared),
        Some([m]) => Err(decode_err(format!("unknown netns mode {m}"))),
        None => Err(missing("NETNS_MODE")),
    }
}

/// The errno (0: success) and extack reason of an NLMSG_ERROR or NLMSG_DONE payload.
fn status(msg: &Msg<'_>) -> Result<(i32, Option<String>), RdmaError> {
    let done = msg.kind == NLMSG_DONE;
    // The kernel's `int error` (negative errno), host order; a DONE may omit it.
    let code = match ne(msg.payload, 0).map(i32::from_ne_bytes) {
        Some(code) => code,
        None if done => 0,
        None => return Err(decode_err("NLMSG_ERROR without an error code")),
    };
    let errno = code.checked_neg().filter(|e| *e >= 0);
    let errno = errno.ok_or_else(|| decode_err(format!("error code {code}")))?;
    // Extack TLVs follow the code (DONE) or the echoed request (ERROR), of
    // which only the header is echoed when capped.
    let echoed = ne(msg.payload, 4).map_or(0, |l| align4(u32::from_ne_bytes(l) as usize));
    let at = match (done, msg.flags & NLM_F_CAPPED != 0) {
        (true, _) => 4,
        (false, true) => 4 + NLMSG_HDRLEN,
        (false, false) => 4 + echoed,
    };
    let tlvs = msg
        .payload
        .get(at..)
        .filter(|_| msg.flags & NLM_F_ACK_TLVS != 0);
    let reason = tlvs.and_then(|t| Attrs::parse(t).ok()?.string(NLMSGERR_ATTR_MSG).ok()?);
    Ok((errno, reason))
}

/// The replies one request waits for, fed with every datagram received.
pub(super) struct Exchange {
    seq: u32,
    flags: u16,
    interrupted: bool,
    replies: Vec<Vec<u8>>,
}

impl Exchange {
    pub(super) fn new(seq: u32, flags: u16) -> Exchange {
        let replies = Vec::new();
        Exchange {
            seq,
            flags,
            interrupted: false,
            replies,
        }
    }

    /// The payloads of the data replies once the request is complete: at
    /// NLMSG_DONE (dump), the ACK (NLM_F_ACK), else the first reply.
    pub(super) fn feed(&mut self, datagram: &[u8]) -> Result<Option<Vec<Vec<u8>>>, RdmaError> {
        let dump = self.flags & NLM_F_DUMP == NLM_F_DUMP;
        for msg in split_messages(datagram)? {
            if msg.seq != self.seq {
                continue; // a late reply to an earlier request
            }
            self.interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
            let end = match msg.kind {
                NLMSG_ERROR => true,
                NLMSG_DONE => dump,
                // Only the client is checked: the kernel's PORT_GET doit
                // answers with the CMD_GET type (its dump with PORT_GET).
                k if k >> 10 == RDMA_NL_NLDEV => {
                    self.replies.push(msg.payload.to_vec());
                    !dump && self.flags & NLM_F_ACK == 0
                }
                k if k < NLMSG_MIN_TYPE => false, // NOOP and other control messages
                k => return Err(decode_err(format!("unexpected message type {k:#x}"))),
            };
            if !end {
                continue;
            }
            if matches!(msg.kind, NLMSG_ERROR | NLMSG_DONE) {
                let (errno, reason) = status(&msg)?;
                if errno != 0 {
                    let op = String::new();
                    return Err(RdmaError::Kernel { op, errno, reason });
                }
            }
            if self.interrupted {
                return Err(RdmaError::DumpInterrupted { op: String::new() });
            }
            return Ok(Some(std::mem::take(&mut self.replies)));
        }
        Ok(None)
    }
}

/// One data reply decoded every way the plugins read replies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodedReply {
    pub device: Option<RdmaDevice>,
    pub port: Option<(u32, RdmaPort)>,
    pub mode: Option<NetnsMode>,
}

/// Decodes `datagram` as the reply to a request (`seq`, `flags`) and each
/// of its data payloads as a device, a port and a netns mode, exactly as the
/// socket does: the whole parsing surface behind one call, for the fuzz
/// targets (fuzz/) and tests. None: the request expects more datagrams.
pub fn decode_replies(
    seq: u32,
    flags: u16,
    datagram: &[u8],
) -> Result<Option<Vec<DecodedReply>>, RdmaError> {
    let Some(payloads) = Exchange::new(seq, flags).feed(datagram)? else {
        return Ok(None);
    };
    Ok(Some(
        payloads
            .iter()
            .map(|p| DecodedReply {
                device: decode_device(p).ok(),
                port: decode_port(p).ok(),
                mode: decode_netns_mode(p).ok(),
            })
            .collect(),
    ))
}

// Fixtures are little-endian (x86 captures; netlink is host order).
#[cfg(all(test, target_endian = "little"))]
mod tests {
    use super::*;
    use netlink_packet_core::NLM_F_REQUEST;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        let byte = |i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex");
        (0..s.len()).step_by(2).map(byte).collect()
    }
    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = [(4 + value.len() as u16).to_ne_bytes(), kind.to_ne_bytes()].concat();
        v.extend_from_slice(value);
        v.resize(align4(v.len()), 0);
        v
    }
    fn msg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = (16 + payload.len()) as u32;
        let head = [len.to_ne_bytes(), seq.to_ne_bytes(), [0; 4]].concat();
        let kf = [kind.to_ne_bytes(), flags.to_ne_bytes()].concat();
        [&head[..4], &kf, &head[4..], payload].concat()
    }

    // Captured in the VM lane (kernel 6.12.117+deb12-amd64, iproute2 6.1.0,
    // rxe0 on veth0 = ifindex 3) with `strace -f -x -e trace=sendto,recvmsg
    // -e write=all -e read=all rdma ...`; the seqs are iproute2's.
    /// `rdma system show`: CMD_GET dump reply for rxe0 (index 0), then NLMSG_DONE.
    const GET_REPLY: &str = "74000000 01140200 e856066b e6000000 08000100 00000000 09000200
        72786530 00000000 08000300 01000000 0c000400 763c2201 c0010000 0c000600 2265e3fe
        fff01e08 0c000700 2265e3fe fff01e08 05000e00 01000000 05005400 00000000 05006500
        01000000 09004300 726f6365 00000000";
    const GET_DONE: &str = "14000000 03000200 e856066b e6000000 00000000";
    /// Then SYS_GET (REQUEST|ACK): NETNS_MODE 1 and 3 more u8s (96, 103, 93), then the ACK.
    const SYS_REPLY: &str = "30000000 06140000 e856066b 0acc21bd 05004200 01000000 05006000
        00000000 05006700 01000000 05005d00 01000000";
    const SYS_ACK: &str =
        "24000000 02000001 e856066b 0acc21bd 00000000 10000000 06140500 e856066b 00000000";
    /// `rdma link show`: PORT_GET doit reply (typed CMD_GET) for port 1, then the ACK.
    const PORT_REPLY: &str = "50000000 01140000 eb56066b 146cc1d0 08000100 00000000 09000200
        72786530 00000000 08000300 01000000 05000c00 04000000 05000d00 05000000 08003200
        03000000 0a003300 76657468 30000000";
    const PORT_ACK: &str =
        "24000000 02000001 eb56066b 146cc1d0 00000000 20000000 05140500 eb56066b 00000000";
    /// `rdma dev set rxe0 netns r2` (exclusive mode) and `rdma system set netns
    /// exclusive` while netns r1 existed: EOPNOTSUPP and EBUSY, capped, no extack.
    const MOVE_ERR: &str =
        "24000000 02000001 ef56066b e33f75f0 a1ffffff 20000000 02140500 ef56066b 00000000";
    const BUSY_ERR: &str =
        "24000000 02000001 ed56066b 6c2769b8 f0ffffff 18000000 07140500 ed56066b 00000000";

    fn check(seq: u32, cmd: u16, flags: u16, attrs: &[Attr], want: &str) {
        let got = encode_request(seq, cmd, flags, attrs);
        assert_eq!(got, hex(want), "cmd {cmd} flags {flags:#x} {attrs:?}");
    }

    #[test]
    fn requests_are_byte_exact() {
        let (r, a) = (NLM_F_REQUEST, NLM_F_REQUEST | NLM_F_ACK);
        let d = NLM_F_REQUEST | NLM_F_DUMP;
        let (dev3, fd7) = (Attr::u32(ATTR_DEV_INDEX, 3), Attr::u32(ATTR_NET_NS_FD, 7));
        let excl = Attr::u8(SYS_ATTR_NETNS_MODE, NetnsMode::Exclusive as u8);
        // From the uapi layout: nlmsghdr (len, type 5<<10|op, flags, seq, pid 0), TLVs.
        let w = "10000000 06140100 01000000 00000000";
        check(1, CMD_SYS_GET, r, &[], w);
        let w = "18000000 07140500 02000000 00000000 05004200 00000000";
        check(2, CMD_SYS_SET, a, &[excl], w);
        let w = "10000000 01140103 03000000 00000000";
        check(3, CMD_GET, d, &[], w);
        let w = "18000000 05140103 04000000 00000000 08000100 03000000";
        check(4, CMD_PORT_GET, d, &[Attr::u32(ATTR_DEV_INDEX, 3)], w);
        let w = "20000000 02140500 05000000 00000000 08000100 03000000 08004400 07000000";
        check(5, CMD_SET, a, &[dev3, fd7], w);
        // What iproute2 6.1 `rdma` sent (strace, see above): with its seq, flags
        // (it adds NLM_F_ACK to GETs) and values, the bytes are the same.
        let (s8, sb, sd) = (0x6b0656e8, 0x6b0656eb, 0x6b0656ed);
        let w = "10000000 06140500 e856066b 00000000";
        check(s8, CMD_SYS_GET, a, &[], w);
        let w = "10000000 01140503 e856066b 00000000";
        check(s8, CMD_GET, a | d, &[], w);
        for (mode, v) in [(NetnsMode::Exclusive, "00"), (NetnsMode::Shared, "01")] {
            let w = format!("18000000 07140500 eb56066b 00000000 05004200 {v}000000");
            check(sb, CMD_SYS_SET, a, &[Attr::u8(66, mode as u8)], &w);
        }
        let w = "20000000 05140500 eb56066b 00000000 08000100 00000000 08000300 01000000";
        check(sb, CMD_PORT_GET, a, &[Attr::u32(1, 0), Attr::u32(3, 1)], w);
        let w = "20000000 02140500 ed56066b 00000000 08000100 00000000 08004400 04000000";
        check(sd, CMD_SET, a, &[Attr::u32(1, 0), Attr::u32(68, 4)], w); // rxe0 -> fd 4
    }

    #[test]
    fn captured_replies_decode() {
        let mut ex = Exchange::new(0x6b0656e8, NLM_F_REQUEST | NLM_F_DUMP);
        assert!(ex.feed(&hex(GET_REPLY)).expect("reply").is_none());
        let got = ex.feed(&hex(GET_DONE)).expect("done").expect("complete");
        let dev = decode_device(&got[0]).expect("device");
        // `rdma dev`: 0: rxe0: ... node_guid 081e:f0ff:fee3:6522
        let guid = Some(0x081e_f0ff_fee3_6522);
        let fields = (dev.index, dev.name.as_str(), dev.node_guid, dev.ports.len());
        assert_eq!((got.len(), fields), (1, (0, "rxe0", guid, 0)));

        let both = [hex(PORT_REPLY), hex(PORT_ACK)].concat(); // one datagram or two
        let mut ex = Exchange::new(0x6b0656eb, NLM_F_REQUEST | NLM_F_ACK);
        let got = ex.feed(&both).expect("port").expect("complete");
        let (dev, port) = decode_port(&got[0]).expect("decode");
        let ndev = (port.netdev_index, port.netdev_name.as_deref());
        assert_eq!((dev, port.index, ndev), (0, 1, (Some(3), Some("veth0"))));

        let mut ex = Exchange::new(0x6b0656e8, NLM_F_REQUEST | NLM_F_ACK);
        assert!(ex.feed(&hex(SYS_REPLY)).expect("sys").is_none());
        let got = ex.feed(&hex(SYS_ACK)).expect("ack").expect("complete");
        assert_eq!(decode_netns_mode(&got[0]).expect("mode"), NetnsMode::Shared);
        // Without NLM_F_ACK (what netns_mode sends) the first reply completes it.
        let mut ex = Exchange::new(0x6b0656e8, NLM_F_REQUEST);
        let got = ex.feed(&hex(SYS_REPLY)).expect("sys");
        assert_eq!(got.map(|r| r.len()), Some(1));
        let excl = decode_netns_mode(&tlv(SYS_ATTR_NETNS_MODE, &[0]));
        assert_eq!(excl.expect("mode"), NetnsMode::Exclusive);
    }

    fn kernel_err(seq: u32, flags: u16, datagram: &[u8]) -> (i32, Option<String>) {
        match Exchange::new(seq, flags).feed(datagram) {
            Err(RdmaError::Kernel { errno, reason, .. }) => (errno, reason),
            other => panic!("want a kernel error, got {other:?}"),
        }
    }

    #[test]
    fn kernel_errors_keep_errno_and_extack() {
        let ack = NLM_F_REQUEST | NLM_F_ACK;
        let (errno, reason) = kernel_err(0x6b0656ef, ack, &hex(MOVE_ERR));
        assert_eq!((errno, reason), (libc::EOPNOTSUPP, None));
        assert_eq!(
            kernel_err(0x6b0656ed, ack, &hex(BUSY_ERR)),
            (libc::EBUSY, None)
        );
        let e = RdmaError::Kernel {
            op: "move rxe0".into(),
            errno: 95,
            reason: Some("x".into()),
        };
        assert_eq!(
            e.to_string(),
            "move rxe0: Operation not supported (os error 95) (kernel: x)"
        );
        let why = tlv(NLMSGERR_ATTR_MSG, b"Unknown device\0");
        // Capped ERROR: code, echoed header, TLVs. Uncapped: the whole request is echoed.
        let echoed = encode_request(9, CMD_SET, ack, &[Attr::u32(ATTR_DEV_INDEX, 3)]);
        for (flags, echo) in [(NLM_F_CAPPED, &echoed[..16]), (0, &echoed[..])] {
            let payload = [&(-22i32).to_ne_bytes()[..], echo, &why].concat();
            let m = msg(NLMSG_ERROR, flags | NLM_F_ACK_TLVS, 9, &payload);
            assert_eq!(kernel_err(9, ack, &m), (22, Some("Unknown device".into())));
        }
        // A dump's error comes in NLMSG_DONE (the dumpit's return value).
        let done = msg(
            NLMSG_DONE,
            2 | NLM_F_ACK_TLVS,
            9,
            &[&(-22i32).to_ne_bytes()[..], &why].concat(),
        );
        let (errno, reason) = kernel_err(9, NLM_F_REQUEST | NLM_F_DUMP, &done);
        assert_eq!((errno, reason.as_deref()), (22, Some("Unknown device")));
    }

    #[test]
    fn stale_replies_interrupted_dumps_and_foreign_types() {
        let dump = NLM_F_REQUEST | NLM_F_DUMP;
        let mut ex = Exchange::new(1, dump); // iproute2's seqs are not ours: skipped
        assert!(ex.feed(&hex(GET_REPLY)).expect("stale").is_none());
        assert!(ex.feed(&hex(GET_DONE)).expect("stale").is_none());
        let mut intr = hex(GET_REPLY);
        intr[6] |= NLM_F_DUMP_INTR as u8;
        let mut ex = Exchange::new(0x6b0656e8, dump);
        assert!(ex.feed(&intr).expect("reply").is_none());
        let e = ex.feed(&hex(GET_DONE)).expect_err("interrupted");
        assert!(matches!(e, RdmaError::DumpInterrupted { .. }), "{e:?}");
        let rtnl = msg(16, 2, 7, &[]); // RTM_NEWLINK: not an RDMA reply
        let e = Exchange::new(7, dump).feed(&rtnl).expect_err("foreign");
        assert!(matches!(e, RdmaError::Decode(_)), "{e:?}");
        assert!(
            Exchange::new(7, dump)
                .feed(&msg(1, 0, 7, &[]))
                .expect("noop")
                .is_none()
        );
    }

    fn is_decode<T>(r: Result<T, RdmaError>) -> bool {
        matches!(r, Err(RdmaError::Decode(_)))
    }

    #[test]
    fn truncated_and_garbage_input_is_a_decode_error() {
        let reply = hex(GET_REPLY);
        for n in 1..reply.len() {
            let got = Exchange::new(0x6b0656e8, NLM_F_REQUEST | NLM_F_DUMP).feed(&reply[..n]);
            assert!(is_decode(got), "prefix {n}");
        }
        // Cut inside an attribute (header or value): Decode. Cut in padding
        // (which a final attribute may omit): fine, once PORT_INDEX is in.
        let payload = &hex(PORT_REPLY)[16..];
        let spans = [
            (0, 8),
            (8, 17),
            (20, 28),
            (28, 33),
            (36, 41),
            (44, 52),
            (52, 62),
        ];
        for n in 0..payload.len() {
            let inside = spans.iter().any(|&(a, b)| a < n && n < b);
            let got = decode_port(&payload[..n]);
            assert_eq!(got.is_ok(), !inside && n >= 28, "prefix {n}");
            assert!(!inside || is_decode(got), "prefix {n}");
        }
        assert!(is_decode(split_messages(&[0; 16]))); // nlmsg_len 0
        assert!(is_decode(Attrs::parse(&[2, 0, 1, 0]))); // attribute length 2
        assert!(is_decode(decode_device(&tlv(ATTR_DEV_INDEX, &[1, 0, 0])))); // u32 of 3 bytes
        let bad_name = [
            tlv(ATTR_DEV_INDEX, &[1, 0, 0, 0]),
            tlv(ATTR_DEV_NAME, b"\xff\0"),
        ]
        .concat();
        assert!(is_decode(decode_device(&bad_name)));
        assert!(is_decode(decode_device(&tlv(ATTR_DEV_NAME, b"rxe0\0")))); // no index
        assert!(is_decode(decode_netns_mode(&tlv(
            SYS_ATTR_NETNS_MODE,
            &[7]
        ))));
        assert!(is_decode(decode_netns_mode(&tlv(96, &[0]))));
        let nested = tlv(SYS_ATTR_NETNS_MODE | 0x8000, &[1]); // NLA_F_NESTED is masked off
        assert_eq!(decode_netns_mode(&nested).expect("mode"), NetnsMode::Shared);
        // Pseudo-random bytes (and a valid header on them) never panic.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rand = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        };
        for len in 0..3000usize {
            let bytes: Vec<u8> = (0..len % 97).map(|_| rand()).collect();
            let _ = Exchange::new(0, NLM_F_REQUEST | NLM_F_DUMP).feed(&bytes);
            let _ = Exchange::new(0, NLM_F_REQUEST).feed(&msg(nl_type(1), 0, 0, &bytes));
            let _ = (
                decode_device(&bytes),
                decode_port(&bytes),
                decode_netns_mode(&bytes),
            );
        }
    }
}
