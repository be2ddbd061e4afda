//! RDMA netlink over a synchronous socket: read and set the subsystem's
//! netns mode, list devices with their ports, move a device to another
//! network namespace. The messages are built and parsed in `wire.rs`.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_sys::{Socket, SocketAddr};

use super::wire::*;

/// One RDMA netlink socket, opened in the calling thread's netns (the caller
/// runs `new` inside the target netns when needed); it stays bound to it.
pub struct RdmaSocket {
    socket: Socket,
    seq: Cell<u32>,
    buf: RefCell<Vec<u8>>,
}

impl RdmaSocket {
    pub fn new() -> Result<RdmaSocket, RdmaError> {
        let mut socket = Socket::new(NETLINK_RDMA).map_err(RdmaError::Socket)?;
        socket.bind_auto().map_err(RdmaError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(RdmaError::Socket)?;
        // Best effort: older kernels lack these options and still work.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(RdmaSocket {
            socket,
            seq: Cell::new(1),
            buf: RefCell::new(vec![0; 32 * 1024]),
        })
    }

    /// RDMA_NLDEV_CMD_SYS_GET.
    pub fn netns_mode(&self) -> Result<NetnsMode, RdmaError> {
        let op = || "read the RDMA netns mode (RDMA_NLDEV_CMD_SYS_GET)".to_string();
        let replies = self.request(op, CMD_SYS_GET, NLM_F_REQUEST, &[])?;
        let reply = replies
            .first()
            .ok_or_else(|| decode_err("no reply to RDMA_NLDEV_CMD_SYS_GET"))?;
        decode_netns_mode(reply).map_err(|e| e.with_op(op))
    }

    /// RDMA_NLDEV_CMD_SYS_SET; EBUSY while any netns besides init_net exists.
    pub fn set_netns_mode(&self, mode: NetnsMode) -> Result<(), RdmaError> {
        let op = || format!("set the RDMA netns mode to {mode:?} (RDMA_NLDEV_CMD_SYS_SET)");
        let attrs = [Attr::u8(SYS_ATTR_NETNS_MODE, mode as u8)];
        self.request(op, CMD_SYS_SET, NLM_F_REQUEST | NLM_F_ACK, &attrs)
            .map(drop)
    }

    /// Every device visible in this netns, with its ports.
    pub fn devices(&self) -> Result<Vec<RdmaDevice>, RdmaError> {
        let mut out = Vec::new();
        for dev in self.list()? {
            out.extend(self.with_ports(dev)?);
        }
        Ok(out)
    }

    pub fn device_by_name(&self, name: &str) -> Result<Option<RdmaDevice>, RdmaError> {
        match self.list()?.into_iter().find(|d| d.name == name) {
            Some(dev) => self.with_ports(dev),
            None => Ok(None),
        }
    }

    /// RDMA_NLDEV_CMD_SET with DEV_INDEX and NET_NS_FD. EOPNOTSUPP in shared
    /// mode and for drivers that cannot move (rxe, siw).
    pub fn move_to_netns(&self, dev: &RdmaDevice, netns: BorrowedFd<'_>) -> Result<(), RdmaError> {
        let fd = netns.as_raw_fd();
        let fd_attr = u32::try_from(fd)
            .map_err(|_| RdmaError::Socket(io::Error::from_raw_os_error(libc::EBADF)))?;
        let op = || {
            format!(
                "move RDMA device {} (index {}) to netns fd {fd} (RDMA_NLDEV_CMD_SET)",
                dev.name, dev.index
            )
        };
        let attrs = [
            Attr::u32(ATTR_DEV_INDEX, dev.index),
            Attr::u32(ATTR_NET_NS_FD, fd_attr),
        ];
        self.request(op, CMD_SET, NLM_F_REQUEST | NLM_F_ACK, &attrs)
            .map(drop)
    }

    fn list(&self) -> Result<Vec<RdmaDevice>, RdmaError> {
        let op = || "list RDMA devices (RDMA_NLDEV_CMD_GET dump)".to_string();
        let replies = self.request(op, CMD_GET, NLM_F_REQUEST | NLM_F_DUMP, &[])?;
        replies
            .iter()
            .map(|r| decode_device(r))
            .collect::<Result<_, _>>()
            .map_err(|e| e.with_op(op))
    }

    /// `dev` with its ports; `None` when it vanished since the listing (the
    /// port dump of an unknown index fails with EINVAL).
    fn with_ports(&self, mut dev: RdmaDevice) -> Result<Option<RdmaDevice>, RdmaError> {
        let name = dev.name.clone();
        let op = || format!("list the ports of RDMA device {name} (RDMA_NLDEV_CMD_PORT_GET dump)");
        let attrs = [Attr::u32(ATTR_DEV_INDEX, dev.index)];
        let replies = match self.request(op, CMD_PORT_GET, NLM_F_REQUEST | NLM_F_DUMP, &attrs) {
            Err(e) if e.errno() == Some(libc::EINVAL) => return Ok(None),
            other => other?,
        };
        for r in &replies {
            let (index, port) = decode_port(r).map_err(|e| e.with_op(op))?;
            if index != dev.index {
                return Err(decode_err(format!(
                    "{}: port of device index {index}",
                    op()
                )));
            }
            dev.ports.push(port);
        }
        dev.ports.sort_by_key(|p| p.index);
        Ok(Some(dev))
    }

    /// One request; a dump is restarted when the kernel flags it as interrupted.
    fn request(&self, op: impl Fn() -> String, cmd: u16, flags: u16, attrs: &[Attr]) -> Replies {
        for _ in 0..DUMP_RETRIES {
            match self.exchange(cmd, flags, attrs) {
                Err(RdmaError::DumpInterrupted { .. }) => continue,
                other => return other.map_err(|e| e.with_op(&op)),
            }
        }
        Err(RdmaError::DumpInterrupted { op: op() })
    }

    fn exchange(&self, cmd: u16, flags: u16, attrs: &[Attr]) -> Replies {
        let seq = self.seq.get().wrapping_add(1).max(1);
        self.seq.set(seq);
        let request = encode_request(seq, cmd, flags, attrs);
        let sent = self.socket.send(&request, 0).map_err(RdmaError::Socket)?;
        if sent != request.len() {
            let e = io::Error::other(format!("sent {sent} of {} bytes", request.len()));
            return Err(RdmaError::Socket(e));
        }
        let mut exchange = Exchange::new(seq, flags);
        let mut buf = self.buf.borrow_mut();
        loop {
            let len = self.recv(&mut buf)?;
            let datagram = buf
                .get(..len)
                .ok_or_else(|| decode_err("datagram larger than its peeked size"))?;
            if let Some(replies) = exchange.feed(datagram)? {
                return Ok(replies);
            }
        }
    }

    fn recv(&self, buf: &mut Vec<u8>) -> Result<usize, RdmaError> {
        let recv = |buf: &mut Vec<u8>, flags| loop {
            match self.socket.recv(&mut &mut buf[..], flags) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map_err(RdmaError::Socket),
            }
        };
        // MSG_PEEK|MSG_TRUNC gives the datagram's size first: nothing is truncated.
        let size = recv(buf, libc::MSG_PEEK | libc::MSG_TRUNC)?;
        if size > buf.len() {
            buf.resize(size, 0);
        }
        recv(buf, 0)
    }
}
