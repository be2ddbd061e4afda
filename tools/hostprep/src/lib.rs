//! rdma-hostprep: prepares a GPU node for the RDMA CNI suite and installs it.
//!
//! - [`mode`]: the RDMA subsystem's netns mode, now (RDMA netlink) and
//!   persistently (modprobe.d);
//! - [`nic`]: a host RDMA NIC's address, MTU and policy routing, reversible;
//! - [`check`]: what each NIC has and lacks, as text or JSON;
//! - [`install`]: atomic copies of the plugins into a CNI bin directory (the
//!   DaemonSet's entrypoint);
//! - [`cli`]: the command line.
//!
//! Netlink goes through libcni's `RouteSocket` and `RdmaSocket`.

pub mod check;
pub mod cli;
pub mod error;
pub mod files;
pub mod install;
pub mod mode;
pub mod nic;

pub use error::HostprepError;
