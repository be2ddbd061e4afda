//! One pool's record in the file store: a JSON header and a dense slot array.
//!
//! The record: u32 LE header length, the JSON header (version, pool name,
//! address ranges, scopes, cursor, count), then 10-byte slots, one per
//! allocatable address: u64 LE owner hash and u16 LE flags (allocated,
//! sticky-free) with the owner's scope index + 1.
//!
//! A scope is a network and the node that allocated (`{"network","node"}`).
//! Version 1 headers had `networks` (names only) instead: read as scopes
//! without a node, and written back as version 2. Version 2 omits
//! `networks` on purpose: ippool releases before node scoping require it,
//! so they refuse a version 2 file (a corrupt-state error) instead of
//! misreading its scopes as networks.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::super::ranges::{RangeSet, from_u128, to_u128};
use super::super::store::Owner;
use crate::error::Error;
use crate::state::{DoubleBufferedFile, StateDir, StateError};

pub(super) const MAGIC: &[u8; 8] = b"IPPOOL\x02\n";
pub(super) const SLOT: usize = 10;
pub(super) const ALLOCATED: u16 = 0x8000;
/// Free, but remembered for the pod whose hash is in the owner field.
pub(super) const STICKY: u16 = 0x4000;
const SCOPE_MASK: u16 = 0x3fff;
/// The header version this code writes.
const VERSION: u32 = 2;
/// 10 MiB of slots: beyond this, list `ips` ranges or use the etcd store.
pub const MAX_POOL_SIZE: u128 = 1 << 20;

/// Whose allocations a slot's index names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Scope {
    pub network: String,
    /// None: recorded before allocations carried their node (version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Header {
    version: u32,
    pub pool: String,
    v6: bool,
    /// Allocatable ranges, as `[first, last]` address strings.
    ranges: Vec<[String; 2]>,
    /// Version 1 only: network names, recorded without their node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    networks: Option<Vec<String>>,
    /// A slot stores its owner's scope index + 1.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// Next-fit: where the next search for a free address starts.
    pub cursor: u64,
    pub allocated: u64,
}

pub(super) struct PoolFile {
    pub header: Header,
    pub set: RangeSet,
    /// The file as read (or a fresh buffer); slots start at `slots_at`, so
    /// the slot array is never copied between read and write.
    buf: Vec<u8>,
    slots_at: usize,
}

pub(super) fn corrupt(path: &Path, msg: impl Into<String>) -> Error {
    Error::State(StateError::Corrupt {
        path: path.to_path_buf(),
        msg: msg.into(),
    })
}

fn header_ranges(set: &RangeSet) -> Vec<[String; 2]> {
    set.ranges()
        .iter()
        .map(|(a, b)| {
            [
                from_u128(*a, set.is_v6()).to_string(),
                from_u128(*b, set.is_v6()).to_string(),
            ]
        })
        .collect()
}

impl Header {
    /// Brings a header of any version this code reads to the current one.
    fn upgrade(mut self, path: &Path) -> Result<Header, Error> {
        match self.version {
            1 => {
                self.scopes = self
                    .networks
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|network| Scope {
                        network,
                        node: None,
                    })
                    .collect();
                self.version = VERSION;
            }
            VERSION => self.networks = None,
            v => {
                return Err(corrupt(
                    path,
                    format!("header version {v}: written by another ippool release"),
                ));
            }
        }
        if self.scopes.len() > usize::from(SCOPE_MASK) {
            return Err(corrupt(path, "more scopes than a slot can name"));
        }
        Ok(self)
    }
}

impl PoolFile {
    pub fn new(name: &str, set: RangeSet) -> Result<PoolFile, Error> {
        let size = usize::try_from(set.len())
            .ok()
            .filter(|s| (*s as u128) <= MAX_POOL_SIZE)
            .ok_or_else(|| {
                Error::config(
                    format!("pool {name}: ips"),
                    format!(
                        "{} addresses exceed the file store's limit of {MAX_POOL_SIZE} per pool: list narrower ips ranges, or use the etcd store",
                        set.len()
                    ),
                )
            })?;
        Ok(PoolFile {
            header: Header {
                version: VERSION,
                pool: name.to_string(),
                v6: set.is_v6(),
                ranges: header_ranges(&set),
                networks: None,
                scopes: Vec::new(),
                cursor: 0,
                allocated: 0,
            },
            set,
            buf: vec![0; size * SLOT],
            slots_at: 0,
        })
    }

    pub fn decode(path: &Path, record: Vec<u8>) -> Result<PoolFile, Error> {
        if record.len() < 4 {
            return Err(corrupt(path, "truncated pool record"));
        }
        let hlen = u32::from_le_bytes([record[0], record[1], record[2], record[3]]) as usize;
        let body = record
            .get(4..4 + hlen)
            .ok_or_else(|| corrupt(path, "truncated header"))?;
        let header: Header =
            serde_json::from_slice(body).map_err(|e| corrupt(path, e.to_string()))?;
        let header = header.upgrade(path)?;
        let mut ranges = Vec::new();
        for [a, b] in &header.ranges {
            let (a, b): (IpAddr, IpAddr) = match (a.parse(), b.parse()) {
                (Ok(a), Ok(b)) => (a, b),
                _ => return Err(corrupt(path, format!("bad range {a}-{b}"))),
            };
            ranges.push((to_u128(a), to_u128(b)));
        }
        let set = RangeSet::new(header.v6, ranges);
        let slots_at = 4 + hlen;
        // checked: a tampered header can claim ranges of 2^127 addresses
        // (fuzz/seeds/state_files/crash-pool-huge-range overflowed here).
        if Some((record.len() - slots_at) as u128) != set.len().checked_mul(SLOT as u128) {
            return Err(corrupt(path, "slot array does not match the pool's size"));
        }
        Ok(PoolFile {
            header,
            set,
            buf: record,
            slots_at,
        })
    }

    /// Stores the record: in place when the file exists, else creates it.
    pub fn save(
        &self,
        dir: &StateDir,
        name: &str,
        file: Option<&mut DoubleBufferedFile>,
    ) -> Result<(), Error> {
        let header =
            serde_json::to_vec(&self.header).map_err(|e| Error::Internal(e.to_string()))?;
        let hlen = (header.len() as u32).to_le_bytes();
        let record: [&[u8]; 3] = [&hlen, &header, self.slots()];
        match file {
            Some(f) => f.commit(dir, name, MAGIC, &record)?,
            None => DoubleBufferedFile::create(dir, name, MAGIC, &record)?,
        }
        Ok(())
    }

    fn slots(&self) -> &[u8] {
        &self.buf[self.slots_at..]
    }

    pub fn size(&self) -> usize {
        self.slots().len() / SLOT
    }

    /// (owner hash, flags) of slot `i`.
    pub fn slot(&self, i: usize) -> (u64, u16) {
        let s = &self.slots()[i * SLOT..(i + 1) * SLOT];
        let mut owner = [0u8; 8];
        owner.copy_from_slice(&s[..8]);
        (u64::from_le_bytes(owner), u16::from_le_bytes([s[8], s[9]]))
    }

    pub fn set_slot(&mut self, i: usize, owner: u64, flags: u16) {
        let at = self.slots_at + i * SLOT;
        let s = &mut self.buf[at..at + SLOT];
        s[..8].copy_from_slice(&owner.to_le_bytes());
        s[8..].copy_from_slice(&flags.to_le_bytes());
    }

    /// The scope index (+ 1) of slot `i` when it is allocated.
    pub fn allocated_scope(&self, i: usize) -> Option<u16> {
        let flags = self.slot(i).1;
        (flags & ALLOCATED != 0).then_some(flags & SCOPE_MASK)
    }

    /// The index (+ 1) of `network` on `node`; `None` as node names the
    /// allocations recorded without one.
    pub fn scope_index(&self, network: &str, node: Option<&str>) -> Option<u16> {
        self.header
            .scopes
            .iter()
            .position(|s| s.network == network && s.node.as_deref() == node)
            .map(|i| i as u16 + 1)
    }

    /// The index (+ 1) of `network` on `node`, added when new. A full table
    /// reuses an entry no allocated slot names (nodes come and go).
    pub fn scope_for(&mut self, network: &str, node: &str) -> Result<u16, Error> {
        if let Some(i) = self.scope_index(network, Some(node)) {
            return Ok(i);
        }
        let scope = Scope {
            network: network.to_string(),
            node: Some(node.to_string()),
        };
        if self.header.scopes.len() < usize::from(SCOPE_MASK) {
            self.header.scopes.push(scope);
            return Ok(self.header.scopes.len() as u16);
        }
        let mut used = vec![false; self.header.scopes.len() + 1];
        for i in 0..self.size() {
            // get_mut: a tampered slot may name an index past the table.
            if let Some(u) = self
                .allocated_scope(i)
                .and_then(|s| used.get_mut(usize::from(s)))
            {
                *u = true;
            }
        }
        let free = (1..used.len()).find(|&i| !used[i]).ok_or_else(|| {
            Error::Internal(format!(
                "pool {} is shared by too many networks and nodes",
                self.header.pool
            ))
        })?;
        self.header.scopes[free - 1] = scope;
        Ok(free as u16)
    }

    /// The slot `owner` holds: recorded for its node, else recorded without
    /// a node (before node scoping).
    pub fn find_owner(&self, owner: &Owner) -> Option<usize> {
        let want = |scope: Option<u16>| {
            scope.map(|s| {
                let mut w = [0u8; SLOT];
                w[..8].copy_from_slice(&owner.attachment_hash().to_le_bytes());
                w[8..].copy_from_slice(&(ALLOCATED | s).to_le_bytes());
                w
            })
        };
        let own = want(self.scope_index(&owner.network, Some(&owner.node)));
        let unscoped = want(self.scope_index(&owner.network, None));
        if own.is_none() && unscoped.is_none() {
            return None;
        }
        // One pass of raw byte compares: this scan runs on every operation.
        let mut found = None;
        for (i, s) in self.slots().chunks_exact(SLOT).enumerate() {
            if own.is_some_and(|w| s == w) {
                return Some(i);
            }
            if found.is_none() && unscoped.is_some_and(|w| s == w) {
                found = Some(i);
            }
        }
        found
    }

    pub fn take(&mut self, i: usize, owner: &Owner) -> Result<IpAddr, Error> {
        let scope = self.scope_for(&owner.network, &owner.node)?;
        self.set_slot(i, owner.attachment_hash(), ALLOCATED | scope);
        self.header.allocated += 1;
        self.header.cursor = (i as u64 + 1) % self.size() as u64;
        self.ip(i)
    }

    pub fn ip(&self, i: usize) -> Result<IpAddr, Error> {
        self.set
            .nth(i as u128)
            .ok_or_else(|| Error::Internal(format!("slot {i} outside pool {}", self.header.pool)))
    }

    /// Next free slot from the cursor; sticky-reserved slots only when
    /// nothing else is free (they belong to a pod that may come back).
    pub fn next_free(&self) -> Option<usize> {
        let n = self.size();
        let start = self.header.cursor as usize % n.max(1);
        let ring = (start..n).chain(0..start);
        let mut sticky = None;
        for i in ring {
            match self.slot(i).1 {
                0 => return Some(i),
                STICKY if sticky.is_none() => sticky = Some(i),
                _ => {}
            }
        }
        sticky
    }

    /// Carries allocations over to a changed pool definition.
    pub fn migrate(self, path: &Path, set: RangeSet) -> Result<PoolFile, Error> {
        let mut next = PoolFile::new(&self.header.pool, set)?;
        next.header.scopes = self.header.scopes.clone();
        for i in 0..self.size() {
            let (owner, flags) = self.slot(i);
            if flags == 0 {
                continue;
            }
            let ip = self.ip(i)?;
            match next.set.index_of(ip) {
                Some(j) => {
                    next.set_slot(j as usize, owner, flags);
                    if flags & ALLOCATED != 0 {
                        next.header.allocated += 1;
                    }
                }
                None if flags & ALLOCATED != 0 => tracing::warn!(
                    pool = %self.header.pool, %ip, file = %path.display(),
                    "the pool no longer contains an allocated address: dropping its record"
                ),
                None => {}
            }
        }
        Ok(next)
    }
}
