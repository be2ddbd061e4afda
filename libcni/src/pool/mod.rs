//! Named IP pools (Spiderpool's model) and the stores that hold their
//! allocations: node-local files by default, etcd for cluster-wide pools.
//! Every allocation records the node that made it, so a node's GC never
//! judges another node's allocations.

#[cfg(feature = "etcd")]
mod etcd_store;
mod file_store;
mod node;
mod ranges;
mod spec;
mod store;

#[cfg(feature = "etcd")]
pub use etcd_store::{EtcdOptions, EtcdStore};
pub use file_store::{FileStore, MAX_POOL_SIZE, PREFILL_NODE};
pub use node::{MAX_NODE_NAME, node_name_from_hostname, valid_node_name};
pub use ranges::{RangeSet, from_u128, parse_range, to_u128};
pub use spec::{Pool, PoolRoute, load_pools, valid_pool_name};
pub use store::{GcReport, Keep, Owner, PoolStore, Usage, stable_hash};
