//! The suite's error type and the one place where errors become CNI codes.

use serde_json::json;

use crate::env::EnvError;
use crate::ipam::IpamError;
use crate::netlink::NetlinkError;
use crate::netns::NetnsError;
use crate::probe::ProbeError;
use crate::rdma::RdmaError;
use crate::result::ResultError;
use crate::state::StateError;
use crate::sysfs::SysfsError;
use crate::version::SpecVersion;

/// CNI error codes: the spec's (0-99) and ours (>= 100, listed in the README).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NOT_AVAILABLE_DEGRADED: u32 = 51;
    /// The kernel refused a netlink request.
    pub const NETLINK: u32 = 100;
    /// A device (PCI function, VF, netdev) is missing or unusable.
    pub const DEVICE: u32 = 101;
    /// The device is already allocated to a running pod.
    pub const DEVICE_BUSY: u32 = 102;
    /// A network namespace could not be opened or entered.
    pub const NETNS: u32 = 103;
    /// The IPAM plugin could not be run or returned an unusable result.
    pub const IPAM: u32 = 104;
    /// CHECK found the attachment differs from what ADD set up.
    pub const CHECK_FAILED: u32 = 105;
    /// Every selected IP pool is full.
    pub const POOL_EXHAUSTED: u32 = 106;
    /// A gateway did not answer the reachability probe (or probing failed).
    pub const PROBE: u32 = 107;
    /// The RDMA subsystem is not in exclusive netns mode.
    pub const RDMA_MODE: u32 = 108;
    /// A bug: an internal invariant failed (never expected).
    pub const INTERNAL: u32 = 999;
}

/// Every failure a plugin can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Env(#[from] EnvError),
    #[error("CNI version {given:?} is not supported (supported: {})", supported())]
    IncompatibleVersion { given: String },
    #[error("{0}")]
    Decode(String),
    /// Invalid network configuration: `key` names the offending key.
    #[error("invalid network config: {key}: {reason}")]
    Config { key: String, reason: String },
    #[error("unsupported field in network config: {key}: {reason}")]
    UnsupportedField { key: String, reason: String },
    #[error("{0}")]
    Netlink(#[from] NetlinkError),
    #[error("{0}")]
    Netns(#[from] NetnsError),
    #[error("{0}")]
    Sysfs(#[from] SysfsError),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Ipam(#[from] IpamError),
    #[error("prevResult: {0}")]
    PrevResult(#[from] ResultError),
    #[error("{0}")]
    Probe(#[from] ProbeError),
    #[error("{0}")]
    Rdma(#[from] RdmaError),
    /// The RDMA subsystem's netns mode forbids the operation.
    #[error("{0}")]
    RdmaMode(String),
    #[error("{what} is already in use by {owner}")]
    Busy { what: String, owner: String },
    #[error("CHECK: {0}")]
    Check(String),
    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },
    #[error("IP pool {pool} is exhausted: all {size} addresses are allocated")]
    PoolExhausted { pool: String, size: u64 },
    /// Adds what we were doing to an underlying error; the code is the source's.
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: Box<Error>,
    },
    /// ADD failed and undoing it failed too: both are reported.
    #[error("{source}; rollback also failed: {}", failures.join("; "))]
    RollbackFailed {
        #[source]
        source: Box<Error>,
        failures: Vec<String>,
    },
    /// A dependency (etcd, a lock holder) is busy or unreachable: retry.
    #[error("{0}")]
    TryAgain(String),
    /// STATUS: the plugin cannot serve ADD now.
    #[error("not available: {0}")]
    NotAvailable(String),
    /// Several independent failures (DEL and GC keep going past each one).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<Error>),
    #[error("internal error: {0}")]
    Internal(String),
}

fn supported() -> String {
    SpecVersion::ALL.map(SpecVersion::as_str).join(", ")
}

impl Error {
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// None when `errors` is empty, the error itself when there is one.
    pub fn from_many(mut errors: Vec<Error>) -> Option<Error> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(Error::Multiple(errors)),
        }
    }

    /// Wraps `self` with the step that failed.
    pub fn step(self, step: impl Into<String>) -> Error {
        Error::Step {
            step: step.into(),
            source: Box::new(self),
        }
    }

    /// The CNI error code for this failure.
    pub fn code(&self) -> u32 {
        match self {
            Error::Env(_) => code::INVALID_ENV,
            Error::IncompatibleVersion { .. } => code::INCOMPATIBLE_VERSION,
            Error::PrevResult(ResultError::UnknownVersion { .. }) => code::INCOMPATIBLE_VERSION,
            Error::Decode(_) | Error::PrevResult(_) => code::DECODE,
            Error::Config { .. } => code::INVALID_CONFIG,
            Error::UnsupportedField { .. } => code::UNSUPPORTED_FIELD,
            Error::Netlink(_) => code::NETLINK,
            Error::Netns(_) => code::NETNS,
            Error::Sysfs(_) | Error::Device { .. } => code::DEVICE,
            Error::State(StateError::LockTimeout { .. }) => code::TRY_AGAIN_LATER,
            Error::State(_) => code::IO,
            Error::Ipam(IpamError::Delegate { code, .. }) => *code,
            Error::Ipam(_) => code::IPAM,
            Error::Busy { .. } => code::DEVICE_BUSY,
            Error::Probe(_) => code::PROBE,
            Error::Rdma(_) => code::NETLINK,
            Error::RdmaMode(_) => code::RDMA_MODE,
            Error::PoolExhausted { .. } => code::POOL_EXHAUSTED,
            Error::Check(_) => code::CHECK_FAILED,
            Error::Step { source, .. } | Error::RollbackFailed { source, .. } => source.code(),
            Error::TryAgain(_) => code::TRY_AGAIN_LATER,
            Error::NotAvailable(_) => code::NOT_AVAILABLE,
            Error::Multiple(errors) => errors.first().map_or(code::INTERNAL, Error::code),
            Error::Internal(_) => code::INTERNAL,
        }
    }

    /// The innermost error, past context wrappers.
    pub fn root(&self) -> &Error {
        match self {
            Error::Step { source, .. } | Error::RollbackFailed { source, .. } => source.root(),
            other => other,
        }
    }
}

/// Adds a step description to any error convertible into [`Error`].
pub trait StepExt<T> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T, E: Into<Error>> StepExt<T> for Result<T, E> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| e.into().step(step()))
    }
}

/// The error object printed on stdout: `{cniVersion, code, msg, details}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn to_json(&self, version: SpecVersion) -> serde_json::Value {
        let mut v = json!({
            "cniVersion": version.as_str(),
            "code": self.code,
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

impl From<&Error> for CniError {
    fn from(e: &Error) -> CniError {
        // msg: the whole chain in one line, so logs and kubectl events name the
        // device, the step and the cause. details: the innermost cause alone.
        let root = e.root();
        CniError {
            code: e.code(),
            msg: e.to_string(),
            details: if std::ptr::eq(root, e) {
                String::new()
            } else {
                root.to_string()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_source_through_context() {
        let e =
            Error::config("vlan", "5000 is out of range 0-4094").step("load config".to_string());
        assert_eq!(e.code(), code::INVALID_CONFIG);
        let cni = CniError::from(&e);
        assert_eq!(
            cni.msg,
            "load config: invalid network config: vlan: 5000 is out of range 0-4094"
        );
        assert_eq!(
            cni.details,
            "invalid network config: vlan: 5000 is out of range 0-4094"
        );
        let j = cni.to_json(SpecVersion::V1_0_0);
        assert_eq!(j["cniVersion"], "1.0.0");
        assert_eq!(j["code"], 7);
    }

    #[test]
    fn delegate_codes_pass_through_and_lock_timeouts_ask_for_retry() {
        let e = Error::Ipam(IpamError::Delegate {
            plugin: "host-local".into(),
            command: "ADD",
            code: 11,
            msg: "busy".into(),
            details: String::new(),
        });
        assert_eq!(e.code(), 11);
        let e = Error::State(StateError::LockTimeout {
            path: "/x".into(),
            waited: std::time::Duration::from_secs(1),
        });
        assert_eq!(e.code(), code::TRY_AGAIN_LATER);
        let v = CniError::from(&Error::Internal("x".into())).to_json(SpecVersion::V0_4_0);
        assert!(v.get("details").is_none());
    }
}
