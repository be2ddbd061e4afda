//! A synchronous rtnetlink socket.
//!
//! Why not rtnetlink's async handle: a CNI plugin is a short-lived process that
//! issues a few dozen requests, each of which must land in a specific network
//! namespace. A blocking socket opened on a thread inside the target netns stays
//! bound to it after the thread leaves, needs no runtime, and makes ordering
//! obvious. Messages are built and parsed with netlink-packet-route.

use std::cell::{Cell, RefCell};
use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_MULTIPART, NLM_F_REQUEST, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::error::NetlinkError;

/// NLM_F_CAPPED: the kernel echoed only the request header in the error.
const NLM_F_CAPPED: u16 = 0x100;
/// NLM_F_ACK_TLVS: extended-ACK attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// NLMSGERR_ATTR_MSG: the kernel's human-readable reason (extack).
const NLMSGERR_ATTR_MSG: u16 = 1;
/// How many times a dump interrupted by a concurrent change is restarted.
const DUMP_RETRIES: usize = 5;

/// One rtnetlink socket bound to the netns it was created in.
pub struct RouteSocket {
    socket: Socket,
    seq: Cell<u32>,
    buf: RefCell<Vec<u8>>,
}

impl RouteSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> Result<RouteSocket, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        // Best effort: older kernels lack these options and still work.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(RouteSocket {
            socket,
            seq: Cell::new(1),
            buf: RefCell::new(vec![0; 64 * 1024]),
        })
    }

    /// Sends a request that changes something and waits for the kernel's ACK.
    pub fn execute(
        &self,
        op: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> Result<(), NetlinkError> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | extra_flags)
            .map(drop)
            .map_err(|e| e.with_op(op))
    }

    /// Sends a GET without NLM_F_DUMP and returns the single reply.
    pub fn get(
        &self,
        op: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
    ) -> Result<Option<RouteNetlinkMessage>, NetlinkError> {
        match self.exchange(msg, NLM_F_REQUEST) {
            Ok(mut replies) => Ok(replies.pop()),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e.with_op(op)),
        }
    }

    /// Dumps a table. Restarts when the kernel flags the dump as interrupted.
    pub fn dump(
        &self,
        op: impl Fn() -> String,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        for _ in 0..DUMP_RETRIES {
            match self.exchange(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP) {
                Err(NetlinkError::DumpInterrupted) => continue,
                other => return other.map_err(|e| e.with_op(&op)),
            }
        }
        Err(NetlinkError::DumpInterrupted.with_op(op))
    }

    fn next_seq(&self) -> u32 {
        let seq = self.seq.get().wrapping_add(1).max(1);
        self.seq.set(seq);
        seq
    }

    fn exchange(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(NetlinkError::Socket)?;

        let mut reader = ReplyReader::new(seq, flags);
        let mut buf = self.buf.borrow_mut();
        loop {
            let len = self.recv(&mut buf)?;
            if let Some(replies) = reader.feed(&buf[..len])? {
                return Ok(replies);
            }
        }
    }

    fn recv(&self, buf: &mut Vec<u8>) -> Result<usize, NetlinkError> {
        loop {
            // MSG_PEEK|MSG_TRUNC tells us the datagram size first, so large
            // dumps (a PF with 128 VFs) never get truncated.
            let size = match self
                .socket
                .recv(&mut &mut buf[..], libc::MSG_PEEK | libc::MSG_TRUNC)
            {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NetlinkError::Socket(e)),
            };
            if size > buf.len() {
                buf.resize(size, 0);
            }
            match self.socket.recv(&mut &mut buf[..], 0) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NetlinkError::Socket(e)),
            }
        }
    }
}

/// The replies to one request, fed with every datagram received: parsing
/// only, no socket, so the fuzz targets (fuzz/) reach it directly.
pub struct ReplyReader {
    seq: u32,
    is_dump: bool,
    wants_ack: bool,
    interrupted: bool,
    replies: Vec<RouteNetlinkMessage>,
}

impl ReplyReader {
    /// For a request sent with sequence number `seq` and `flags`.
    pub fn new(seq: u32, flags: u16) -> ReplyReader {
        ReplyReader {
            seq,
            is_dump: flags & NLM_F_DUMP == NLM_F_DUMP,
            wants_ack: flags & NLM_F_ACK != 0,
            interrupted: false,
            replies: Vec::new(),
        }
    }

    /// Takes one datagram; Some(replies) once the request is complete.
    pub fn feed(
        &mut self,
        datagram: &[u8],
    ) -> Result<Option<Vec<RouteNetlinkMessage>>, NetlinkError> {
        let len = datagram.len();
        let mut offset = 0;
        while offset < len {
            let chunk = &datagram[offset..len];
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(chunk)
                .map_err(|e| NetlinkError::Decode(e.to_string()))?;
            let msg_len = reply.header.length as usize;
            if msg_len == 0 {
                return Err(NetlinkError::Decode("zero-length netlink message".into()));
            }
            offset = offset.saturating_add((msg_len + 3) & !3);
            if reply.header.sequence_number != self.seq {
                // A late reply to an earlier request (e.g. after a timeout): skip it.
                continue;
            }
            if reply.header.flags & NLM_F_DUMP_INTR != 0 {
                self.interrupted = true;
            }
            let multipart = reply.header.flags & NLM_F_MULTIPART != 0;
            let reply_flags = reply.header.flags;
            match reply.payload {
                NetlinkPayload::Done(_) => {
                    return if self.interrupted {
                        Err(NetlinkError::DumpInterrupted)
                    } else {
                        Ok(Some(std::mem::take(&mut self.replies)))
                    };
                }
                NetlinkPayload::Error(err) => match err.code {
                    None => return Ok(Some(std::mem::take(&mut self.replies))),
                    Some(code) => {
                        // The kernel sends -errno; anything else is garbage
                        // (fuzz/seeds/netlink_replies/error-code-i32-min:
                        // negating i32::MIN overflowed).
                        let Some(errno) = code.get().checked_neg().filter(|e| *e > 0) else {
                            return Err(NetlinkError::Decode(format!("error code {code}")));
                        };
                        return Err(NetlinkError::Kernel {
                            op: String::new(),
                            errno,
                            reason: extack_reason(reply_flags, &err.header),
                        });
                    }
                },
                NetlinkPayload::InnerMessage(inner) => {
                    self.replies.push(inner);
                    if !self.is_dump && !multipart && !self.wants_ack {
                        return Ok(Some(std::mem::take(&mut self.replies)));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

/// Extracts the kernel's extack message from an NLMSG_ERROR payload.
///
/// `payload` is what follows the error code: the echoed request (only its
/// 16-byte header when capped) and then, with NLM_F_ACK_TLVS, attributes.
fn extack_reason(flags: u16, payload: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 || payload.len() < 16 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = u32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
        (len + 3) & !3
    };
    let mut tlvs = payload.get(echoed..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = tlvs.get((len + 3) & !3..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = 4 + value.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn extack_message_is_read_from_capped_error() {
        let mut payload = vec![0u8; 16];
        payload[0..4].copy_from_slice(&40u32.to_ne_bytes());
        payload.extend(tlv(2, &7u32.to_ne_bytes()));
        payload.extend(tlv(NLMSGERR_ATTR_MSG, b"VF MAC is not settable\0"));
        assert_eq!(
            extack_reason(NLM_F_CAPPED | NLM_F_ACK_TLVS, &payload).as_deref(),
            Some("VF MAC is not settable")
        );
    }

    #[test]
    fn extack_skips_uncapped_echo_and_tolerates_garbage() {
        let mut payload = vec![0u8; 20];
        payload[0..4].copy_from_slice(&20u32.to_ne_bytes());
        payload.extend(tlv(NLMSGERR_ATTR_MSG, b"bad\0"));
        assert_eq!(
            extack_reason(NLM_F_ACK_TLVS, &payload).as_deref(),
            Some("bad")
        );
        assert_eq!(extack_reason(0, &payload), None);
        assert_eq!(extack_reason(NLM_F_ACK_TLVS, &[1, 2, 3]), None);
        let mut broken = vec![0u8; 16];
        broken.extend_from_slice(&[200, 0, 1, 0]);
        assert_eq!(extack_reason(NLM_F_CAPPED | NLM_F_ACK_TLVS, &broken), None);
    }

    fn error_reply(seq: u32, code: i32) -> Vec<u8> {
        let mut payload = code.to_ne_bytes().to_vec();
        for v in [
            16u32.to_ne_bytes(),
            [18, 0, 5, 0],
            seq.to_ne_bytes(),
            [0; 4],
        ] {
            payload.extend_from_slice(&v);
        }
        let mut msg = ((16 + payload.len()) as u32).to_ne_bytes().to_vec();
        msg.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&[0; 4]);
        msg.extend(payload);
        msg
    }

    #[test]
    fn error_replies_give_errno_and_garbage_codes_are_decode_errors() {
        let mut r = ReplyReader::new(7, NLM_F_REQUEST | NLM_F_ACK);
        match r.feed(&error_reply(7, -libc::ENODEV)) {
            Err(NetlinkError::Kernel { errno, .. }) => assert_eq!(errno, libc::ENODEV),
            other => panic!("{other:?}"),
        }
        for code in [i32::MIN, 5] {
            let mut r = ReplyReader::new(7, NLM_F_REQUEST | NLM_F_ACK);
            assert!(
                matches!(r.feed(&error_reply(7, code)), Err(NetlinkError::Decode(_))),
                "{code}"
            );
        }
        // A late reply to another request is skipped, not taken for ours.
        let mut r = ReplyReader::new(8, NLM_F_REQUEST | NLM_F_ACK);
        assert!(matches!(r.feed(&error_reply(7, -1)), Ok(None)));
    }
}
