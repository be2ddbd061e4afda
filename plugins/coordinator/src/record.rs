//! What coordinator did to one attachment, and the per-pod table allocator.
//!
//! Records: `<stateDir>/<containerID>:<ifname>.json`. The pod's lock,
//! `<stateDir>/<containerID>.lock`, serialises the chains of one pod's
//! interfaces, so two interfaces never get the same table even when their
//! chains run concurrently.

use std::collections::BTreeSet;
use std::time::Duration;

use libcni::Error;
use libcni::ids::{ContainerId, IfName};
use libcni::netlink::RouteSocket;
use libcni::policy::Applied;
use libcni::state::{FileLock, Lifetime, StateDir};
use serde::{Deserialize, Serialize};

use crate::config::{MAX_TABLE, reserved_table};

const VERSION: u32 = 1;
const POD_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordRecord {
    pub version: u32,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub table: u32,
    /// This interface's rules and table, and defaults moved out of main.
    pub applied: Applied,
    /// When this interface took the main default route: what was done to
    /// the default NIC (its default moved into its own table).
    #[serde(default)]
    pub default_nic: Option<Applied>,
    /// The network (config `name`) that made the attachment: GC is per network.
    #[serde(default)]
    pub network: Option<String>,
}

pub struct Records {
    dir: StateDir,
}

fn file_name(cid: &str, ifname: &str) -> String {
    format!("{cid}:{ifname}.json")
}

impl Records {
    pub fn open(dir: &std::path::Path) -> Result<Records, Error> {
        Ok(Records {
            // The routes, rules and sysctls recorded live in the pod's
            // netns, which no reboot keeps: per boot.
            dir: StateDir::open_with(dir, &Lifetime::this_boot())?,
        })
    }

    pub fn lock_pod(&self, cid: &ContainerId) -> Result<FileLock, Error> {
        self.lock_pod_within(cid, POD_LOCK_TIMEOUT)
    }

    pub fn lock_pod_within(&self, cid: &ContainerId, timeout: Duration) -> Result<FileLock, Error> {
        Ok(FileLock::acquire(
            &self.dir,
            &format!("{cid}.lock"),
            timeout,
        )?)
    }

    /// Releases the pod's lock, deleting its file when the pod has no record
    /// left (its last DEL, or a failed first ADD): one lock file per pod ever
    /// run would otherwise pile up on the node.
    pub fn unlock_pod(&self, lock: FileLock, cid: &str) -> Result<(), Error> {
        let prefix = format!("{cid}:");
        if self.dir.list()?.iter().any(|n| n.starts_with(&prefix)) {
            return Ok(());
        }
        Ok(lock.remove()?)
    }

    /// Lock files of pods without records (left by DELs of older versions,
    /// or by a crash between a DEL's record removal and its unlock).
    pub fn orphan_pod_locks(&self) -> Result<Vec<ContainerId>, Error> {
        let recorded: BTreeSet<String> = self.all()?.into_iter().map(|r| r.container_id).collect();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.path())
            .map_err(|e| Error::Internal(format!("list {}: {e}", self.dir.path().display())))?
        {
            let Ok(name) = entry.map(|e| e.file_name()) else {
                continue;
            };
            let Some(cid) = name.to_str().and_then(|n| n.strip_suffix(".lock")) else {
                continue;
            };
            if let Ok(cid) = ContainerId::parse(cid)
                && !recorded.contains(cid.as_str())
            {
                out.push(cid);
            }
        }
        Ok(out)
    }

    pub fn load(&self, cid: &str, ifname: &str) -> Result<Option<CoordRecord>, Error> {
        Ok(self.dir.read_json(&file_name(cid, ifname), VERSION)?)
    }

    pub fn save(&self, r: &CoordRecord) -> Result<(), Error> {
        Ok(self
            .dir
            .write_json(&file_name(&r.container_id, &r.ifname), r)?)
    }

    pub fn remove(&self, cid: &str, ifname: &str) -> Result<(), Error> {
        self.dir.remove(&file_name(cid, ifname))?;
        Ok(())
    }

    /// Every record, with the container it belongs to.
    pub fn all(&self) -> Result<Vec<CoordRecord>, Error> {
        let mut out = Vec::new();
        for name in self.dir.list()? {
            match self.dir.read_json::<CoordRecord>(&name, VERSION) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => tracing::warn!(file = %name, error = %e, "skipping unreadable record"),
            }
        }
        Ok(out)
    }

    fn pod_tables(&self, cid: &str, except_ifname: &str) -> Result<BTreeSet<u32>, Error> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|r| r.container_id == cid && r.ifname != except_ifname)
            .map(|r| r.table)
            .collect())
    }
}

/// The interface's table: `table` if configured; else tableBase + N for
/// Multus's `netN` names, so net1 -> 101, net2 -> 102 whatever order the
/// chains run in; else the first table above tableBase in use by no rule of
/// the pod and no other interface of it. Call with the pod's lock held.
pub fn allocate_table(
    records: &Records,
    sock: &RouteSocket,
    cid: &ContainerId,
    ifname: &IfName,
    table_base: u32,
    explicit: Option<u32>,
) -> Result<u32, Error> {
    let mut used = records.pod_tables(cid.as_str(), ifname.as_str())?;
    for v6 in [false, true] {
        used.extend(
            sock.rules(v6)?
                .into_iter()
                .map(|r| r.table)
                .filter(|t| !reserved_table(*t)),
        );
    }
    if let Some(t) = explicit {
        if records
            .pod_tables(cid.as_str(), ifname.as_str())?
            .contains(&t)
        {
            return Err(Error::config(
                "table",
                format!("{t} is already the table of another interface of this pod"),
            ));
        }
        return Ok(t);
    }
    let ordinal = ifname
        .as_str()
        .strip_prefix("net")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n >= 1);
    if let Some(n) = ordinal {
        let t = table_base.saturating_add(n);
        if t <= MAX_TABLE && !reserved_table(t) && !used.contains(&t) {
            return Ok(t);
        }
    }
    (table_base + 1..=MAX_TABLE)
        .find(|t| !reserved_table(*t) && !used.contains(t))
        .ok_or_else(|| Error::config("tableBase", format!("no free table above {table_base}")))
}

/// Rule priority of a table: stable, unique per table, below main (32766).
pub fn priority_of(table: u32) -> u32 {
    1000 + table
}
