//! Where pool allocations live: the node-local file store or etcd.

use std::net::IpAddr;

use super::spec::Pool;
use crate::error::Error;

/// Who holds an address: one attachment of one network on one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub network: String,
    /// The node whose runtime made the attachment: container IDs are only
    /// unique per runtime, and a runtime's GC only knows its own node.
    /// Empty for a release on a node whose name is unknown: no allocation
    /// is ever recorded for an empty node, so it finds only those recorded
    /// without one (before allocations carried their node).
    pub node: String,
    pub container_id: String,
    pub ifname: String,
    /// `namespace/name` of the pod, for sticky addresses.
    pub pod: Option<String>,
}

/// FNV-1a, 64 bit: stable across builds and Rust versions, unlike std's
/// hasher, because hashes live in state files.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        for b in (part.len() as u64)
            .to_le_bytes()
            .iter()
            .chain(part.as_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h.max(1)
}

impl Owner {
    /// Identifies the attachment within its network.
    pub fn attachment_hash(&self) -> u64 {
        stable_hash(&[&self.container_id, &self.ifname])
    }

    pub fn pod_hash(&self) -> Option<u64> {
        self.pod.as_deref().map(|p| stable_hash(&["pod", p]))
    }
}

/// An attachment GC must keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keep {
    pub container_id: String,
    pub ifname: String,
}

/// What one GC pass did to a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Allocations of this network and node that the runtime no longer
    /// knows: released.
    pub released: Vec<IpAddr>,
    /// Allocations recorded without a node (before allocations carried one)
    /// that the runtime listed as live: recorded as this node's from now on.
    pub adopted: Vec<IpAddr>,
    /// Allocations recorded without a node that the runtime did not list:
    /// maybe another node's, so left for their DEL.
    pub unscoped: Vec<IpAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub allocated: u128,
    pub size: u128,
}

pub trait PoolStore {
    /// The address `owner` holds in `pool`: recorded for its node, or
    /// without a node (allocations made before node scoping).
    fn find(&self, pool: &Pool, owner: &Owner) -> Result<Option<IpAddr>, Error>;

    /// One address of `pool` for `owner`: the one it already holds, else
    /// `want` if given (it must be free), else the pod's previous address when
    /// `sticky` and still free, else the next free one. Exhaustion is
    /// `Error::PoolExhausted`.
    fn allocate(
        &self,
        pool: &Pool,
        owner: &Owner,
        want: Option<IpAddr>,
        sticky: bool,
    ) -> Result<IpAddr, Error>;

    /// Releases what `owner` holds in the named pool; `sticky` keeps the
    /// address reserved for the pod while it stays free.
    fn release(&self, pool: &str, owner: &Owner, sticky: bool) -> Result<Option<IpAddr>, Error>;

    /// Names of the pools the store holds state for.
    fn pools(&self) -> Result<Vec<String>, Error>;

    /// Releases the allocations of `network` on `node` in `pool` whose
    /// attachment is not in `keep`; never another node's, nor one recorded
    /// without a node (those in `keep` become `node`'s).
    fn gc(&self, pool: &str, network: &str, node: &str, keep: &[Keep]) -> Result<GcReport, Error>;

    fn usage(&self, pool: &Pool) -> Result<Usage, Error>;

    /// Ok when the store can serve an ADD now (STATUS).
    fn check_ready(&self) -> Result<(), Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_unambiguous() {
        assert_eq!(stable_hash(&["c1", "net1"]), stable_hash(&["c1", "net1"]));
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
        // Pinned: a changed hash would orphan every allocation on disk.
        // (value computed independently from the FNV-1a definition)
        assert_eq!(stable_hash(&["c1", "net1"]), 0x50bf_c710_e435_5d15);
    }
}
