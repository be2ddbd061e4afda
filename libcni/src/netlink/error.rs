//! Netlink errors keep the errno and the kernel's own explanation (extack).

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{op}: {}{}", io::Error::from_raw_os_error(*errno), reason.as_ref().map(|r| format!(" (kernel: {r})")).unwrap_or_default())]
    Kernel {
        op: String,
        errno: i32,
        reason: Option<String>,
    },
    #[error("netlink dump interrupted by concurrent changes {DUMP_RETRY_NOTE}")]
    DumpInterrupted,
    #[error("cannot decode netlink reply: {0}")]
    Decode(String),
    #[error("{op}: {source}")]
    Op {
        op: String,
        #[source]
        source: Box<NetlinkError>,
    },
}

const DUMP_RETRY_NOTE: &str = "(retried 5 times)";

impl NetlinkError {
    /// The kernel's errno, if the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Op { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// True when the object the request named does not exist (ENODEV/ENOENT/ESRCH/EADDRNOTAVAIL).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }

    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    pub(crate) fn with_op(self, op: impl FnOnce() -> String) -> NetlinkError {
        match self {
            NetlinkError::Kernel { errno, reason, .. } => NetlinkError::Kernel {
                op: op(),
                errno,
                reason,
            },
            other => NetlinkError::Op {
                op: op(),
                source: Box::new(other),
            },
        }
    }
}
