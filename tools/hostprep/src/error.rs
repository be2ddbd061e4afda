//! What can go wrong, and the exit code each failure gives.

use std::io;
use std::path::PathBuf;

use libcni::netlink::NetlinkError;
use libcni::rdma::RdmaError;
use libcni::state::StateError;

/// Exit codes of `rdma-hostprep`.
pub mod exit {
    pub const OK: i32 = 0;
    /// The operation failed (kernel refusal, I/O error...).
    pub const FAILED: i32 = 1;
    /// Bad command line: unknown subcommand or flag, invalid value.
    pub const USAGE: i32 = 2;
    /// `check`: the host is not ready (something is missing).
    pub const NOT_READY: i32 = 3;
}

#[derive(Debug, thiserror::Error)]
pub enum HostprepError {
    /// Unknown subcommand or flag, missing value.
    #[error("{0}")]
    Usage(String),
    /// A flag's value failed validation.
    #[error("invalid {flag} {value:?}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Rdma(#[from] RdmaError),
    /// NETLINK_RDMA cannot be opened or does not know the request.
    #[error("the RDMA subsystem is unavailable: {0}")]
    RdmaUnavailable(String),
    /// SYS_SET refused with EBUSY: other network namespaces exist.
    #[error(
        "the kernel refused to switch the RDMA netns mode to {mode}: {source}. The kernel allows \
         the switch only while no network namespace other than the initial one exists (pods, \
         containers, `ip netns` namespaces; a namespace just deleted can linger for a moment). \
         Remedy: run `rdma-hostprep netns-mode {mode} --persist` at boot before the container \
         runtime and kubelet start, or persist it (--persist writes `options ib_core \
         netns_mode=N` to modprobe.d; update the initramfs if ib_core loads from it) and reboot{}",
        namespaces_hint(.namespaces)
    )]
    RdmaBusy {
        mode: String,
        namespaces: Vec<String>,
        #[source]
        source: RdmaError,
    },
    /// The named network device is not in this network namespace.
    #[error(
        "no network device {0} in this network namespace (`ip -br link` lists the names --nic takes)"
    )]
    NoNic(String),
    /// A change to a NIC failed part-way, with what to do next.
    #[error("{nic}: {source}; {remedy}")]
    OnNic {
        nic: String,
        #[source]
        source: Box<HostprepError>,
        remedy: String,
    },
    /// What the command found contradicts what it was asked to do.
    #[error("{0}")]
    Conflict(String),
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: Box<HostprepError>,
    },
    /// Several independent failures (undo keeps going past each one).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<HostprepError>),
}

fn namespaces_hint(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (named namespaces now: {})", names.join(", "))
    }
}

impl HostprepError {
    pub fn exit_code(&self) -> i32 {
        match self {
            HostprepError::Usage(_) | HostprepError::Invalid { .. } => exit::USAGE,
            HostprepError::Step { source, .. } | HostprepError::OnNic { source, .. } => {
                source.exit_code()
            }
            _ => exit::FAILED,
        }
    }

    pub fn invalid(
        flag: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> HostprepError {
        HostprepError::Invalid {
            flag,
            value: value.into().chars().take(120).collect(),
            reason: reason.into(),
        }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| HostprepError::Io { op, path, source }
    }

    pub fn step(self, step: impl Into<String>) -> HostprepError {
        HostprepError::Step {
            step: step.into(),
            source: Box::new(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_others_1() {
        assert_eq!(HostprepError::Usage("x".into()).exit_code(), exit::USAGE);
        assert_eq!(
            HostprepError::invalid("--mtu", "x", "not a number")
                .step("set-nic-addr")
                .exit_code(),
            exit::USAGE
        );
        assert_eq!(
            HostprepError::NoNic("eth9".into()).exit_code(),
            exit::FAILED
        );
        let on_nic = HostprepError::OnNic {
            nic: "hp0".into(),
            source: Box::new(HostprepError::Conflict("table busy".into())),
            remedy: "rerun".into(),
        };
        assert_eq!(on_nic.exit_code(), exit::FAILED);
        assert_eq!(on_nic.to_string(), "hp0: table busy; rerun");
    }

    #[test]
    fn busy_error_gives_the_remedy() {
        let e = HostprepError::RdmaBusy {
            mode: "exclusive".into(),
            namespaces: vec!["pod1".into()],
            source: RdmaError::Kernel {
                op: "set the RDMA netns mode".into(),
                errno: libc::EBUSY,
                reason: None,
            },
        }
        .to_string();
        assert!(e.contains("Device or resource busy"), "{e}");
        assert!(
            e.contains("no network namespace other than the initial one"),
            "{e}"
        );
        assert!(e.contains("--persist"), "{e}");
        assert!(e.contains("named namespaces now: pod1"), "{e}");
    }
}
