//! SR-IOV virtual functions: PF-side programming, snapshots, ownership.

mod alloc;
mod apply;
mod programmer;
mod settings;
#[cfg(feature = "sim-pf")]
pub mod sim;

pub use alloc::{VfAllocations, VfOwner};
pub use apply::{program, restore};
pub use programmer::{NetlinkVfs, VfProgrammer, hw_state_from_infos, vf_info_for};
pub use settings::{Guid, LinkState, TxRate, VfHwState, VfOp, VfSettings, Vlan, VlanProto};
