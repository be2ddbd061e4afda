//! The node-local pool store: one file per pool, changed under the pool's lock
//! by an atomic in-place replace (see `state::DoubleBufferedFile`), so a crash
//! leaves the old or the new state.
//!
//! The file holds a dense array with one slot per allocatable address, so
//! every operation reads, scans and writes the same bytes however full the
//! pool is: cost depends on the pool's size, never on how many addresses are
//! allocated (a /24 rail pool is 2.5 KiB, a /16 640 KiB). The record format
//! is in [`record`].
//!
//! Each allocation records its network and node (its scope), so a node's GC
//! judges only its own node's allocations even when several nodes share the
//! directory. Allocations from before node scoping have no node: found by
//! DEL and CHECK, never released by GC (see [`PoolStore::gc`]).

mod record;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::ranges::RangeSet;
use super::spec::{Pool, valid_pool_name};
use super::store::{GcReport, Keep, Owner, PoolStore, Usage, stable_hash};
use crate::error::Error;
use crate::state::{DoubleBufferedFile, FileLock, StateDir};
use record::{ALLOCATED, MAGIC, PoolFile, STICKY};

pub use record::MAX_POOL_SIZE;

const LOCK_TIMEOUT: Duration = Duration::from_secs(30);
/// The node [`FileStore::prefill`] records its synthetic owners on: no real
/// node's GC takes them.
pub const PREFILL_NODE: &str = "prefill.invalid";

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

    /// What an operator wants to see of a pool: usage, networks and nodes,
    /// and the allocated addresses. None when the store has no state for it.
    pub fn inspect(&self, pool: &str) -> Result<Option<serde_json::Value>, Error> {
        self.with_pool(pool, None, |s| {
            let mut allocated = Vec::new();
            let mut reserved = Vec::new();
            let mut without_node = 0u64;
            for i in 0..s.size() {
                match s.slot(i).1 {
                    0 => {}
                    STICKY => reserved.push(s.ip(i)?.to_string()),
                    _ => {
                        allocated.push(s.ip(i)?.to_string());
                        let scope = s
                            .allocated_scope(i)
                            .and_then(|k| s.header.scopes.get(usize::from(k).checked_sub(1)?));
                        if scope.is_some_and(|sc| sc.node.is_none()) {
                            without_node += 1;
                        }
                    }
                }
            }
            let mut networks: Vec<&str> = Vec::new();
            let mut nodes: Vec<&str> = Vec::new();
            for scope in &s.header.scopes {
                if !networks.contains(&scope.network.as_str()) {
                    networks.push(&scope.network);
                }
                if let Some(n) = scope.node.as_deref().filter(|n| !nodes.contains(n)) {
                    nodes.push(n);
                }
            }
            let report = serde_json::json!({
                "pool": s.header.pool,
                "size": s.size(),
                "allocated": s.header.allocated,
                "networks": networks,
                "nodes": nodes,
                "allocatedWithoutNode": without_node,
                "addresses": allocated,
                "stickyReserved": reserved,
            });
            Ok((report, false))
        })
    }

    /// Allocates `count` free addresses of `pool` to synthetic owners
    /// `<prefix><n>`/`eth0` of `network` on [`PREFILL_NODE`] in one locked
    /// write: benchmarks and tests fill a pool without one process per
    /// address.
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
                    node: PREFILL_NODE.to_string(),
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

/// GC of one pool's record: see [`PoolStore::gc`].
fn gc_record(s: &mut PoolFile, network: &str, node: &str, keep: &[u64]) -> Result<GcReport, Error> {
    let mut own = s.scope_index(network, Some(node));
    let unscoped = s.scope_index(network, None);
    let mut report = GcReport::default();
    if own.is_none() && unscoped.is_none() {
        return Ok(report);
    }
    for i in 0..s.size() {
        let Some(scope) = s.allocated_scope(i) else {
            continue;
        };
        let hash = s.slot(i).0;
        let live = keep.contains(&hash);
        if Some(scope) == own && !live {
            report.released.push(s.ip(i)?);
            s.set_slot(i, 0, 0);
            s.header.allocated = s.header.allocated.saturating_sub(1);
        } else if Some(scope) == unscoped {
            if live {
                // The runtime says this attachment lives on this node.
                let mine = match own {
                    Some(k) => k,
                    None => *own.insert(s.scope_for(network, node)?),
                };
                s.set_slot(i, hash, ALLOCATED | mine);
                report.adopted.push(s.ip(i)?);
            } else {
                report.unscoped.push(s.ip(i)?);
            }
        }
    }
    Ok(report)
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

    fn gc(&self, pool: &str, network: &str, node: &str, keep: &[Keep]) -> Result<GcReport, Error> {
        let keep: Vec<u64> = keep
            .iter()
            .map(|k| stable_hash(&[&k.container_id, &k.ifname]))
            .collect();
        Ok(self
            .with_pool(pool, None, |s| {
                let report = gc_record(s, network, node, &keep)?;
                let dirty = !report.released.is_empty() || !report.adopted.is_empty();
                Ok((report, dirty))
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
