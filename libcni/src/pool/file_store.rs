//! The node-local pool store: one file per pool, changed under the pool's lock
//! by an atomic in-place replace (see `state::DoubleBufferedFile`), so a crash
//! leaves the old or the new state.
//!
//! The file holds a dense array with one slot per allocatable address, so
//! every operation reads, scans and writes the same bytes however full the
//! pool is: cost depends on the pool's size, never on how many addresses are
//! allocated (a /24 rail pool is 2.5 KiB, a /16 640 KiB).
//!
//! The record (kept in a `DoubleBufferedFile`, so it is replaced in place and
//! atomically): u32 LE header length, a JSON header (pool name, address
//! ranges, networks, cursor), then 10-byte slots: u64 LE owner hash and u16 LE
//! flags (allocated, sticky-free) with the owner's network index.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ranges::{RangeSet, from_u128, to_u128};
use super::spec::{Pool, valid_pool_name};
use super::store::{Keep, Owner, PoolStore, Usage, stable_hash};
use crate::error::Error;
use crate::state::{DoubleBufferedFile, FileLock, StateDir, StateError};

const MAGIC: &[u8; 8] = b"IPPOOL\x02\n";
const SLOT: usize = 10;
const ALLOCATED: u16 = 0x8000;
/// Free, but remembered for the pod whose hash is in the owner field.
const STICKY: u16 = 0x4000;
const NET_MASK: u16 = 0x3fff;
/// 10 MiB of slots: beyond this, list `ips` ranges or use the etcd store.
pub const MAX_POOL_SIZE: u128 = 1 << 20;
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Header {
    version: u32,
    pool: String,
    v6: bool,
    /// Allocatable ranges, as `[first, last]` address strings.
    ranges: Vec<[String; 2]>,
    /// Network names; a slot stores its owner's index + 1.
    networks: Vec<String>,
    /// Next-fit: where the next search for a free address starts.
    cursor: u64,
    allocated: u64,
}

struct PoolFile {
    header: Header,
    set: RangeSet,
    /// The file as read (or a fresh buffer); slots start at `slots_at`, so
    /// the slot array is never copied between read and write.
    buf: Vec<u8>,
    slots_at: usize,
}

fn corrupt(path: &Path, msg: impl Into<String>) -> Error {
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

impl PoolFile {
    fn new(name: &str, set: RangeSet) -> Result<PoolFile, Error> {
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
                version: 1,
                pool: name.to_string(),
                v6: set.is_v6(),
                ranges: header_ranges(&set),
                networks: Vec::new(),
                cursor: 0,
                allocated: 0,
            },
            set,
            buf: vec![0; size * SLOT],
            slots_at: 0,
        })
    }

    fn decode(path: &Path, record: Vec<u8>) -> Result<PoolFile, Error> {
        if record.len() < 4 {
            return Err(corrupt(path, "truncated pool record"));
        }
        let hlen = u32::from_le_bytes([record[0], record[1], record[2], record[3]]) as usize;
        let body = record
            .get(4..4 + hlen)
            .ok_or_else(|| corrupt(path, "truncated header"))?;
        let header: Header =
            serde_json::from_slice(body).map_err(|e| corrupt(path, e.to_string()))?;
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
    fn save(
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

    fn size(&self) -> usize {
        self.slots().len() / SLOT
    }

    fn slot(&self, i: usize) -> (u64, u16) {
        let s = &self.slots()[i * SLOT..(i + 1) * SLOT];
        let mut owner = [0u8; 8];
        owner.copy_from_slice(&s[..8]);
        (u64::from_le_bytes(owner), u16::from_le_bytes([s[8], s[9]]))
    }

    fn set_slot(&mut self, i: usize, owner: u64, flags: u16) {
        let at = self.slots_at + i * SLOT;
        let s = &mut self.buf[at..at + SLOT];
        s[..8].copy_from_slice(&owner.to_le_bytes());
        s[8..].copy_from_slice(&flags.to_le_bytes());
    }

    fn network_index(&mut self, network: &str) -> Result<u16, Error> {
        if let Some(i) = self.header.networks.iter().position(|n| n == network) {
            return Ok(i as u16 + 1);
        }
        if self.header.networks.len() >= NET_MASK as usize - 1 {
            return Err(Error::Internal(format!(
                "pool {} is shared by too many networks",
                self.header.pool
            )));
        }
        self.header.networks.push(network.to_string());
        Ok(self.header.networks.len() as u16)
    }

    fn find_owner(&self, owner: &Owner) -> Option<usize> {
        let net = self
            .header
            .networks
            .iter()
            .position(|n| *n == owner.network)? as u16
            + 1;
        let mut want = [0u8; SLOT];
        want[..8].copy_from_slice(&owner.attachment_hash().to_le_bytes());
        want[8..].copy_from_slice(&(ALLOCATED | net).to_le_bytes());
        // Raw byte compare: this scan runs on every operation.
        self.slots().chunks_exact(SLOT).position(|s| s == want)
    }

    fn take(&mut self, i: usize, owner: &Owner) -> Result<IpAddr, Error> {
        let net = self.network_index(&owner.network)?;
        self.set_slot(i, owner.attachment_hash(), ALLOCATED | net);
        self.header.allocated += 1;
        self.header.cursor = (i as u64 + 1) % self.size() as u64;
        self.ip(i)
    }

    fn ip(&self, i: usize) -> Result<IpAddr, Error> {
        self.set
            .nth(i as u128)
            .ok_or_else(|| Error::Internal(format!("slot {i} outside pool {}", self.header.pool)))
    }

    /// Next free slot from the cursor; sticky-reserved slots only when
    /// nothing else is free (they belong to a pod that may come back).
    fn next_free(&self) -> Option<usize> {
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
    fn migrate(self, path: &Path, set: RangeSet) -> Result<PoolFile, Error> {
        let mut next = PoolFile::new(&self.header.pool, set)?;
        next.header.networks = self.header.networks.clone();
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

/// Pools as files under one directory (default /var/lib/cni/ippool).
pub struct FileStore {
    dir: StateDir,
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<FileStore, Error> {
        Ok(FileStore {
            dir: StateDir::open(dir)?,
        })
    }

    /// Runs `f` on the named pool's state under its lock and saves the result
    /// when `f` says it changed it. `define` gives the current definition:
    /// a missing file starts from it; a changed one migrates to it.
    fn with_pool<T>(
        &self,
        name: &str,
        define: Option<&RangeSet>,
        f: impl FnOnce(&mut PoolFile) -> Result<(T, bool), Error>,
    ) -> Result<Option<T>, Error> {
        if !valid_pool_name(name) {
            return Err(Error::Internal(format!("invalid pool name {name:?}")));
        }
        let _lock = FileLock::acquire(&self.dir, &format!("{name}.lock"), LOCK_TIMEOUT)?;
        let file_name = format!("{name}.state");
        let path = self.dir.entry(&file_name)?;
        let (mut file, record) = match DoubleBufferedFile::open(&self.dir, &file_name, MAGIC)? {
            Some((f, r)) => (Some(f), Some(r)),
            None => (None, None),
        };
        let mut state = match (record, define) {
            (Some(record), Some(set)) => {
                let state = PoolFile::decode(&path, record)?;
                if state.set.ranges() == set.ranges() && state.set.is_v6() == set.is_v6() {
                    state
                } else {
                    tracing::info!(
                        pool = name,
                        "pool definition changed: migrating its allocations"
                    );
                    state.migrate(&path, set.clone())?
                }
            }
            (Some(record), None) => PoolFile::decode(&path, record)?,
            (None, Some(set)) => PoolFile::new(name, set.clone())?,
            (None, None) => return Ok(None),
        };
        let (out, dirty) = f(&mut state)?;
        if dirty {
            state.save(&self.dir, &file_name, file.as_mut())?;
        }
        Ok(Some(out))
    }

    /// What an operator wants to see of a pool: usage, networks, and the
    /// allocated addresses. None when the store has no state for it.
    pub fn inspect(&self, pool: &str) -> Result<Option<serde_json::Value>, Error> {
        self.with_pool(pool, None, |s| {
            let mut allocated = Vec::new();
            let mut reserved = Vec::new();
            for i in 0..s.size() {
                match s.slot(i).1 {
                    0 => {}
                    STICKY => reserved.push(s.ip(i)?.to_string()),
                    _ => allocated.push(s.ip(i)?.to_string()),
                }
            }
            let report = serde_json::json!({
                "pool": s.header.pool,
                "size": s.size(),
                "allocated": s.header.allocated,
                "networks": s.header.networks,
                "addresses": allocated,
                "stickyReserved": reserved,
            });
            Ok((report, false))
        })
    }
}

impl FileStore {
    /// Allocates `count` free addresses of `pool` to synthetic owners
    /// `<prefix><n>`/`eth0` of `network` in one locked write: benchmarks and
    /// tests fill a pool without one process per address.
    pub fn prefill(
        &self,
        pool: &Pool,
        network: &str,
        prefix: &str,
        count: usize,
    ) -> Result<usize, Error> {
        let filled = self.with_pool(&pool.name, Some(&pool.addresses), |s| {
            let mut n = 0;
            while n < count {
                let Some(i) = s.next_free() else { break };
                let owner = Owner {
                    network: network.to_string(),
                    container_id: format!("{prefix}{n}"),
                    ifname: "eth0".into(),
                    pod: None,
                };
                s.take(i, &owner)?;
                n += 1;
            }
            Ok((n, n > 0))
        })?;
        Ok(filled.unwrap_or(0))
    }
}

impl PoolStore for FileStore {
    fn find(&self, pool: &Pool, owner: &Owner) -> Result<Option<IpAddr>, Error> {
        Ok(self
            .with_pool(&pool.name, None, |s| {
                Ok((s.find_owner(owner).map(|i| s.ip(i)).transpose()?, false))
            })?
            .flatten())
    }

    fn allocate(
        &self,
        pool: &Pool,
        owner: &Owner,
        want: Option<IpAddr>,
        sticky: bool,
    ) -> Result<IpAddr, Error> {
        let out = self.with_pool(&pool.name, Some(&pool.addresses), |s| {
            if let Some(i) = s.find_owner(owner) {
                return Ok((s.ip(i)?, false));
            }
            let pod = owner.pod_hash().filter(|_| sticky);
            let slot = match want {
                Some(ip) => {
                    let i = s.set.index_of(ip).ok_or_else(|| {
                        Error::config(
                            "ips",
                            format!("{ip} is not an allocatable address of pool {}", pool.name),
                        )
                    })? as usize;
                    // Free or only sticky-reserved: an explicit request wins.
                    if s.slot(i).1 & ALLOCATED != 0 {
                        return Err(Error::Busy {
                            what: format!("address {ip} of pool {}", pool.name),
                            owner: "another attachment".into(),
                        });
                    }
                    i
                }
                None => {
                    let previous =
                        pod.and_then(|h| (0..s.size()).find(|&i| s.slot(i) == (h, STICKY)));
                    match previous.or_else(|| s.next_free()) {
                        Some(i) => i,
                        None => {
                            return Err(Error::PoolExhausted {
                                pool: pool.name.clone(),
                                size: u64::try_from(pool.size()).unwrap_or(u64::MAX),
                            });
                        }
                    }
                }
            };
            Ok((s.take(slot, owner)?, true))
        })?;
        out.ok_or_else(|| Error::Internal("pool state vanished".into()))
    }

    fn release(&self, pool: &str, owner: &Owner, sticky: bool) -> Result<Option<IpAddr>, Error> {
        Ok(self
            .with_pool(pool, None, |s| {
                let Some(i) = s.find_owner(owner) else {
                    return Ok((None, false));
                };
                let ip = s.ip(i)?;
                match owner.pod_hash().filter(|_| sticky) {
                    Some(pod) => s.set_slot(i, pod, STICKY),
                    None => s.set_slot(i, 0, 0),
                }
                s.header.allocated = s.header.allocated.saturating_sub(1);
                Ok((Some(ip), true))
            })?
            .flatten())
    }

    fn pools(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .dir
            .list()?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".state").map(str::to_string))
            .filter(|n| valid_pool_name(n))
            .collect())
    }

    fn gc(&self, pool: &str, network: &str, keep: &[Keep]) -> Result<Vec<IpAddr>, Error> {
        let keep: Vec<u64> = keep
            .iter()
            .map(|k| stable_hash(&[&k.container_id, &k.ifname]))
            .collect();
        Ok(self
            .with_pool(pool, None, |s| {
                let Some(net) = s.header.networks.iter().position(|n| n == network) else {
                    return Ok((Vec::new(), false));
                };
                let net = net as u16 + 1;
                let mut freed = Vec::new();
                for i in 0..s.size() {
                    let (owner, flags) = s.slot(i);
                    if flags == ALLOCATED | net && !keep.contains(&owner) {
                        freed.push(s.ip(i)?);
                        s.set_slot(i, 0, 0);
                        s.header.allocated = s.header.allocated.saturating_sub(1);
                    }
                }
                let dirty = !freed.is_empty();
                Ok((freed, dirty))
            })?
            .unwrap_or_default())
    }

    fn usage(&self, pool: &Pool) -> Result<Usage, Error> {
        let allocated = self
            .with_pool(&pool.name, None, |s| Ok((s.header.allocated, false)))?
            .unwrap_or(0);
        Ok(Usage {
            allocated: u128::from(allocated),
            size: pool.size(),
        })
    }

    fn check_ready(&self) -> Result<(), Error> {
        let probe = format!(".ready.{}", std::process::id());
        self.dir.write(&probe, b"ok")?;
        self.dir.remove(&probe)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::spec::load_pools;
    use serde_json::json;

    fn pool(v: serde_json::Value) -> Pool {
        load_pools(None, &[v]).expect("pool").remove(0)
    }

    fn owner(c: &str) -> Owner {
        Owner {
            network: "rail1".into(),
            container_id: c.into(),
            ifname: "net1".into(),
            pod: Some(format!("default/{c}")),
        }
    }

    fn store() -> (tempfile::TempDir, FileStore) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = FileStore::open(&tmp.path().join("ippool")).expect("store");
        (tmp, s)
    }

    #[test]
    fn allocate_is_idempotent_and_release_frees() {
        let (_t, s) = store();
        let p = pool(json!({"name": "p", "subnet": "10.0.0.0/29", "gateway": "10.0.0.1"}));
        let a = s.allocate(&p, &owner("a"), None, false).expect("a");
        assert_eq!(a, "10.0.0.2".parse::<IpAddr>().expect("ip"));
        assert_eq!(s.allocate(&p, &owner("a"), None, false).expect("again"), a);
        assert_eq!(s.find(&p, &owner("a")).expect("find"), Some(a));
        let b = s.allocate(&p, &owner("b"), None, false).expect("b");
        assert_ne!(a, b);
        assert_eq!(
            s.usage(&p).expect("usage"),
            Usage {
                allocated: 2,
                size: 5
            }
        );
        assert_eq!(
            s.release("p", &owner("a"), false).expect("release"),
            Some(a)
        );
        assert_eq!(s.release("p", &owner("a"), false).expect("twice"), None);
        assert_eq!(s.find(&p, &owner("a")).expect("find"), None);
        assert_eq!(s.pools().expect("pools"), ["p"]);
    }

    #[test]
    fn exhaustion_names_the_pool_and_its_size() {
        let (_t, s) = store();
        let p = pool(json!({"name": "tiny", "subnet": "10.0.0.0/30"}));
        s.allocate(&p, &owner("a"), None, false).expect("a");
        s.allocate(&p, &owner("b"), None, false).expect("b");
        let e = s.allocate(&p, &owner("c"), None, false).expect_err("full");
        assert!(matches!(e, Error::PoolExhausted { size: 2, .. }), "{e}");
        assert!(e.to_string().contains("tiny"), "{e}");
    }

    #[test]
    fn requested_and_sticky_addresses() {
        let (_t, s) = store();
        let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
        let want: IpAddr = "10.0.0.9".parse().expect("ip");
        assert_eq!(
            s.allocate(&p, &owner("a"), Some(want), false)
                .expect("want"),
            want
        );
        assert_eq!(
            s.allocate(&p, &owner("b"), Some(want), false)
                .expect_err("taken")
                .code(),
            102
        );
        assert_eq!(
            s.allocate(
                &p,
                &owner("b"),
                Some("10.0.1.1".parse().expect("ip")),
                false
            )
            .expect_err("outside")
            .code(),
            7
        );
        // Sticky: the pod gets its address back after release, others skip it.
        let sticky_ip = s.allocate(&p, &owner("st"), None, true).expect("st");
        s.release("p", &owner("st"), true).expect("release");
        let other = s.allocate(&p, &owner("x"), None, false).expect("x");
        assert_ne!(
            other, sticky_ip,
            "a sticky address went to another pod while others were free"
        );
        let again = Owner {
            container_id: "st-restarted".into(),
            ..owner("st")
        };
        assert_eq!(s.allocate(&p, &again, None, true).expect("back"), sticky_ip);
    }

    #[test]
    fn gc_releases_only_this_networks_stale_attachments() {
        let (_t, s) = store();
        let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
        for c in ["keep", "stale"] {
            s.allocate(&p, &owner(c), None, false).expect("alloc");
        }
        let other_net = Owner {
            network: "rail2".into(),
            ..owner("foreign")
        };
        s.allocate(&p, &other_net, None, false)
            .expect("other network");
        let keep = [Keep {
            container_id: "keep".into(),
            ifname: "net1".into(),
        }];
        let freed = s.gc("p", "rail1", &keep).expect("gc");
        assert_eq!(freed.len(), 1);
        assert!(s.find(&p, &owner("keep")).expect("find").is_some());
        assert!(s.find(&p, &owner("stale")).expect("find").is_none());
        assert!(
            s.find(&p, &other_net).expect("find").is_some(),
            "GC touched another network"
        );
    }

    #[test]
    fn a_changed_pool_keeps_allocations_that_still_fit() {
        let (_t, s) = store();
        let p = pool(json!({"name": "p", "subnet": "10.0.0.0/24", "ips": ["10.0.0.10-10.0.0.20"]}));
        let a = s.allocate(&p, &owner("a"), None, false).expect("a");
        let wider =
            pool(json!({"name": "p", "subnet": "10.0.0.0/24", "ips": ["10.0.0.1-10.0.0.50"]}));
        assert_eq!(
            s.allocate(&wider, &owner("a"), None, false).expect("same"),
            a
        );
        let b = s.allocate(&wider, &owner("b"), None, false).expect("b");
        assert_ne!(a, b);
        assert_eq!(s.usage(&wider).expect("usage").allocated, 2);
    }

    #[test]
    fn the_file_does_not_grow_with_the_fill_level() {
        let (t, s) = store();
        let p = pool(json!({"name": "big", "subnet": "10.0.0.0/22"}));
        s.allocate(&p, &owner("first"), None, false).expect("first");
        let path = t.path().join("ippool/big.state");
        let size = || std::fs::metadata(&path).expect("meta").len();
        let nearly_empty = size();
        assert!(nearly_empty >= (1022 * SLOT) as u64);
        for i in 0..900 {
            s.allocate(&p, &owner(&format!("c{i}")), None, false)
                .expect("fill");
        }
        // Updated in place: the file keeps its size whatever the fill level.
        assert_eq!(size(), nearly_empty);
        let report = s.inspect("big").expect("inspect").expect("some");
        assert_eq!(report["allocated"], 901);
        assert_eq!(report["addresses"].as_array().map(Vec::len), Some(901));
    }

    #[test]
    fn prefill_takes_free_addresses_in_one_write() {
        let (_t, s) = store();
        let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
        s.allocate(&p, &owner("real"), None, false).expect("real");
        assert_eq!(s.prefill(&p, "rail1", "fill", 100).expect("prefill"), 13);
        assert_eq!(s.usage(&p).expect("usage").allocated, 14);
        assert!(s.find(&p, &owner("real")).expect("find").is_some());
    }

    #[test]
    fn corrupt_or_foreign_files_are_reported_not_trusted() {
        let (t, s) = store();
        std::fs::write(t.path().join("ippool/p.state"), b"garbage").expect("write");
        assert!(s.inspect("p").is_err());
        let p = pool(json!({"name": "p", "subnet": "10.0.0.0/28"}));
        let e = s
            .allocate(&p, &owner("a"), None, false)
            .expect_err("corrupt");
        assert!(e.to_string().contains("p.state"), "{e}");
        let too_big = pool(json!({"name": "v6", "subnet": "fd00::/64"}));
        let e = s
            .allocate(&too_big, &owner("a"), None, false)
            .expect_err("too big");
        assert!(e.to_string().contains("etcd"), "{e}");
    }

    #[test]
    fn a_header_claiming_astronomic_ranges_is_corrupt_not_a_crash() {
        // fuzz/seeds/state_files/crash-pool-huge-range: a valid container
        // around a header whose range holds ~2^127 addresses; the slot count
        // times 10 overflowed u128.
        let (t, s) = store();
        let dir = StateDir::open(&t.path().join("ippool")).expect("dir");
        let header = br#"{"version":1,"pool":"v6","v6":true,"ranges":[["0f0d::1","fd00::8"]],"networks":["n"],"cursor":2,"allocated":2}"#;
        let mut record = (header.len() as u32).to_le_bytes().to_vec();
        record.extend_from_slice(header);
        record.extend_from_slice(&[0; 40]);
        DoubleBufferedFile::create(&dir, "v6.state", MAGIC, &[&record]).expect("create");
        let e = s.inspect("v6").expect_err("corrupt");
        assert!(e.to_string().contains("slot array"), "{e}");
    }
}
