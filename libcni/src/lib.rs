//! libcni: what every plugin of the suite stands on.
//!
//! - protocol: [`skel`] (the `CniPlugin` trait and the process entry point),
//!   [`env`], [`config`], [`result`], [`version`], [`error`] (CNI codes);
//! - kernel: [`netns`], [`netlink`], [`sysctl`], [`announce`], [`netdev`]
//!   (moving a host netdev into a pod and back), [`ipconf`];
//! - hardware: [`sysfs`], [`vf`];
//! - bookkeeping: [`state`], [`undo`], [`ipam`], [`logging`], [`failpoint`].

pub mod announce;
pub mod config;
pub mod env;
pub mod error;
pub mod failpoint;
pub mod ids;
pub mod ipam;
pub mod ipconf;
pub mod logging;
mod neigh_probe;
pub mod netdev;
pub mod netlink;
pub mod netns;
pub mod policy;
pub mod pool;
pub mod probe;
pub mod rdma;
pub mod result;
pub mod skel;
pub mod state;
pub mod sysctl;
pub mod sysfs;
#[cfg(test)]
mod testnet;
pub mod undo;
pub mod version;
pub mod vf;

pub use error::{CniError, Error, StepExt};
