//! Cluster-wide pools in etcd (v3 API). Every change is one transaction that
//! compares before it writes, so two nodes racing for the last free address
//! never both get it. Every request is bounded by the configured timeout; an
//! unreachable etcd is "try again later" (CNI code 11), never a hang.
//!
//! Key layout under `<prefix>` (network, node and attachment names are
//! escaped and pod identities hashed, so a key never gains a '/'):
//!
//! | key | value |
//! |---|---|
//! | `/index/<pool>` | `""`: the pool has state here |
//! | `/pools/<pool>/ip/<32 hex digits of the address>` | `{"ip","network","node","containerID","ifname","pod"}`, or `{"ip","stickyFor"}` while reserved for a pod |
//! | `/pools/<pool>/owner/<network>/<node>/<containerID>/<ifname>` | the address held |
//! | `/pools/<pool>/owner/<network>/<containerID>/<ifname>` | the same, written before allocations carried their node: found by DEL and CHECK, never written |
//! | `/pools/<pool>/sticky/<pod hash>` | the address reserved for the pod |
//! | `/pools/<pool>/cursor` | where the next search for a free address starts (hint) |
//!
//! Address keys are the address as a fixed-width hex number, so etcd's key
//! order is address order and a window of the pool is one range request.
//! The node in the owner key is what keeps a node's GC to its own node's
//! allocations: a runtime's valid-attachments list covers only its node.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp, TxnOpResponse,
};
use serde_json::json;

use super::ranges::from_u128;
use super::spec::{Pool, valid_pool_name};
use super::store::{GcReport, Keep, Owner, PoolStore, Usage};
use crate::error::Error;
use keys::{OwnerKey, addr_key};

mod keys;
#[cfg(test)]
mod tests;

/// Addresses examined per range request while looking for a free one.
const WINDOW: u128 = 256;
/// Concurrent takers of the same address: how often to move on and retry.
const MAX_RACES: usize = 64;

#[derive(Clone, Debug)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub timeout: Duration,
    pub cacert: Option<PathBuf>,
    pub cert_key: Option<(PathBuf, PathBuf)>,
    pub user: Option<(String, String)>,
}

pub struct EtcdStore {
    rt: tokio::runtime::Runtime,
    client: Client,
    prefix: String,
    timeout: Duration,
    endpoints: String,
}

/// Where an owner's address is recorded, and that key's mod revision.
struct Held {
    ip: IpAddr,
    key: String,
    rev: i64,
}

fn read_pem(what: &str, path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| {
        Error::config(
            format!("ipam.etcd.{what}"),
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

impl EtcdStore {
    pub fn connect(opts: &EtcdOptions) -> Result<EtcdStore, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("tokio runtime: {e}")))?;
        let mut connect = ConnectOptions::new()
            .with_timeout(opts.timeout)
            .with_connect_timeout(opts.timeout);
        if let Some((user, password)) = &opts.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        if opts.cacert.is_some() || opts.cert_key.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &opts.cacert {
                tls = tls.ca_certificate(Certificate::from_pem(read_pem("cacert", ca)?));
            }
            if let Some((cert, key)) = &opts.cert_key {
                tls = tls.identity(Identity::from_pem(
                    read_pem("cert", cert)?,
                    read_pem("key", key)?,
                ));
            }
            connect = connect.with_tls(tls);
        }
        let endpoints = opts.endpoints.join(",");
        let timeout = opts.timeout;
        let client = rt.block_on(async {
            tokio::time::timeout(
                timeout,
                Client::connect(opts.endpoints.clone(), Some(connect)),
            )
            .await
        });
        let client = match client {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unreachable(&endpoints, &e.to_string())),
            Err(_) => {
                return Err(unreachable(
                    &endpoints,
                    &format!("no answer within {timeout:?}"),
                ));
            }
        };
        Ok(EtcdStore {
            rt,
            client,
            prefix: opts.prefix.trim_end_matches('/').to_string(),
            timeout,
            endpoints,
        })
    }

    /// Runs one request with the deadline; etcd trouble is "try again later".
    fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Error> {
        match self
            .rt
            .block_on(async { tokio::time::timeout(self.timeout, fut).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unreachable(&self.endpoints, &format!("{what}: {e}"))),
            Err(_) => Err(unreachable(
                &self.endpoints,
                &format!("{what}: no answer within {:?}", self.timeout),
            )),
        }
    }

    fn pool_key(&self, pool: &str, rest: &str) -> Result<String, Error> {
        if !valid_pool_name(pool) {
            return Err(Error::Internal(format!("invalid pool name {pool:?}")));
        }
        Ok(format!("{}/pools/{pool}/{rest}", self.prefix))
    }

    fn owner_key(&self, pool: &str, owner: &Owner) -> Result<String, Error> {
        self.pool_key(
            pool,
            &keys::scoped_owner(
                &owner.network,
                &owner.node,
                &owner.container_id,
                &owner.ifname,
            ),
        )
    }

    fn unscoped_owner_key(&self, pool: &str, owner: &Owner) -> Result<String, Error> {
        self.pool_key(
            pool,
            &keys::unscoped_owner(&owner.network, &owner.container_id, &owner.ifname),
        )
    }

    fn ip_key(&self, pool: &str, ip: IpAddr) -> Result<String, Error> {
        self.pool_key(pool, &format!("ip/{}", addr_key(ip)))
    }

    fn sticky_key(&self, pool: &str, pod_hash: u64) -> Result<String, Error> {
        self.pool_key(pool, &format!("sticky/{pod_hash:016x}"))
    }

    fn get_one(&self, key: &str) -> Result<Option<(Vec<u8>, i64)>, Error> {
        let resp = self.call("get", self.client.clone().get(key, None))?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    /// What `owner` holds: recorded for its node, else recorded without a
    /// node (before node scoping). Both keys in one request.
    fn held_by(&self, pool: &str, owner: &Owner) -> Result<Option<Held>, Error> {
        let keys = [
            self.owner_key(pool, owner)?,
            self.unscoped_owner_key(pool, owner)?,
        ];
        let txn = Txn::new().and_then(keys.clone().map(|k| TxnOp::get(k, None)));
        let resp = self.call("find", self.client.clone().txn(txn))?;
        Ok(held_in(&resp.op_responses(), keys))
    }

    /// Frees what `held` records, if that is still so; `sticky_for` keeps
    /// the address reserved for a pod.
    fn release_held(
        &self,
        pool: &str,
        held: &Held,
        sticky_for: Option<u64>,
    ) -> Result<Option<IpAddr>, Error> {
        let ip = held.ip;
        let ip_key = self.ip_key(pool, ip)?;
        let mut ops = vec![TxnOp::delete(held.key.clone(), None)];
        match sticky_for {
            Some(h) => {
                ops.push(TxnOp::put(
                    ip_key,
                    json!({"ip": ip, "stickyFor": format!("{h:016x}")}).to_string(),
                    None,
                ));
                ops.push(TxnOp::put(self.sticky_key(pool, h)?, ip.to_string(), None));
            }
            None => ops.push(TxnOp::delete(ip_key, None)),
        }
        let txn = Txn::new()
            .when([Compare::mod_revision(
                held.key.clone(),
                CompareOp::Equal,
                held.rev,
            )])
            .and_then(ops);
        let resp = self.call("release", self.client.clone().txn(txn))?;
        Ok(resp.succeeded().then_some(ip))
    }

    /// Records an allocation made without a node as `owner`'s (whose node
    /// the runtime vouched for): the owner key moves to the node's layout
    /// and the address record names the node. False when it changed since
    /// it was read, or its address record is not one this store writes.
    fn adopt(&self, pool: &str, owner: &Owner, held: &Held) -> Result<bool, Error> {
        let ip_key = self.ip_key(pool, held.ip)?;
        let Some((value, ip_rev)) = self.get_one(&ip_key)? else {
            return Ok(false);
        };
        let Ok(serde_json::Value::Object(mut record)) = serde_json::from_slice(&value) else {
            return Ok(false);
        };
        if record.contains_key("stickyFor") {
            return Ok(false);
        }
        record.insert("node".into(), json!(owner.node));
        let scoped = self.owner_key(pool, owner)?;
        let txn = Txn::new()
            .when([
                Compare::mod_revision(held.key.clone(), CompareOp::Equal, held.rev),
                Compare::mod_revision(ip_key.clone(), CompareOp::Equal, ip_rev),
                Compare::create_revision(scoped.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::delete(held.key.clone(), None),
                TxnOp::put(scoped, held.ip.to_string(), None),
                TxnOp::put(ip_key, serde_json::Value::Object(record).to_string(), None),
            ]);
        let resp = self.call("adopt", self.client.clone().txn(txn))?;
        Ok(resp.succeeded())
    }

    /// Tries to give `ip` to `owner`; `reserved_rev` is the mod revision of
    /// the address key when it is a sticky reservation being taken over.
    fn try_take(
        &self,
        pool: &Pool,
        owner: &Owner,
        ip: IpAddr,
        reserved_rev: Option<i64>,
    ) -> Result<Take, Error> {
        let ip_key = self.ip_key(&pool.name, ip)?;
        let owner_key = self.owner_key(&pool.name, owner)?;
        let unscoped_key = self.unscoped_owner_key(&pool.name, owner)?;
        let record = json!({"ip": ip, "network": owner.network, "node": owner.node,
                            "containerID": owner.container_id, "ifname": owner.ifname,
                            "pod": owner.pod})
        .to_string();
        let ip_free = match reserved_rev {
            None => Compare::create_revision(ip_key.clone(), CompareOp::Equal, 0),
            Some(rev) => Compare::mod_revision(ip_key.clone(), CompareOp::Equal, rev),
        };
        let mut ops = vec![
            TxnOp::put(ip_key, record, None),
            TxnOp::put(owner_key.clone(), ip.to_string(), None),
            TxnOp::put(self.pool_key(&pool.name, "cursor")?, addr_key(ip), None),
            TxnOp::put(format!("{}/index/{}", self.prefix, pool.name), "", None),
        ];
        if let Some(h) = owner.pod_hash() {
            ops.push(TxnOp::delete(self.sticky_key(&pool.name, h)?, None));
        }
        // Neither layout may hold the attachment already (a concurrent ADD).
        let txn = Txn::new()
            .when([
                ip_free,
                Compare::create_revision(owner_key.clone(), CompareOp::Equal, 0),
                Compare::create_revision(unscoped_key.clone(), CompareOp::Equal, 0),
            ])
            .and_then(ops)
            .or_else([
                TxnOp::get(owner_key.clone(), None),
                TxnOp::get(unscoped_key.clone(), None),
            ]);
        let resp = self.call("allocate", self.client.clone().txn(txn))?;
        if resp.succeeded() {
            return Ok(Take::Got(ip));
        }
        Ok(
            match held_in(&resp.op_responses(), [owner_key, unscoped_key]) {
                Some(held) => Take::Got(held.ip),
                None => Take::Lost,
            },
        )
    }

    /// Index (in pool order) where the next scan starts.
    fn cursor(&self, pool: &Pool) -> Result<u128, Error> {
        Ok(self
            .get_one(&self.pool_key(&pool.name, "cursor")?)?
            .and_then(|(v, _)| u128::from_str_radix(std::str::from_utf8(&v).ok()?, 16).ok())
            .and_then(|v| pool.addresses.index_of(from_u128(v, pool.is_v6())))
            .map(|i| (i + 1) % pool.size().max(1))
            .unwrap_or(0))
    }

    /// Address keys present in pool positions [from, from+WINDOW), as
    /// (position, sticky mod revision if it is only a reservation).
    fn taken_window(&self, pool: &Pool, from: u128) -> Result<Vec<(u128, Option<i64>)>, Error> {
        let last = (from + WINDOW - 1).min(pool.size() - 1);
        let (Some(a), Some(b)) = (pool.addresses.nth(from), pool.addresses.nth(last)) else {
            return Ok(Vec::new());
        };
        let start = self.ip_key(&pool.name, a)?;
        let end = format!("{}\u{0}", self.ip_key(&pool.name, b)?);
        let resp = self.call(
            "scan",
            self.client
                .clone()
                .get(start, Some(GetOptions::new().with_range(end))),
        )?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let hex = kv.key_str().ok()?.rsplit('/').next()?;
                let ip = from_u128(u128::from_str_radix(hex, 16).ok()?, pool.is_v6());
                let sticky = kv
                    .value_str()
                    .ok()
                    .is_some_and(|v| v.contains("\"stickyFor\""));
                Some((
                    pool.addresses.index_of(ip)?,
                    sticky.then(|| kv.mod_revision()),
                ))
            })
            .collect())
    }

    /// Next free address from the cursor, wrapping once; reservations of
    /// other pods are offered only when nothing else is free.
    fn scan_free(&self, pool: &Pool, skip: &[u128]) -> Result<Option<(u128, Option<i64>)>, Error> {
        let size = pool.size();
        let start = self.cursor(pool)?;
        let mut reserved = None;
        let mut pos = 0u128;
        while pos < size {
            let from = (start + pos) % size;
            let window = self.taken_window(pool, from)?;
            let len = WINDOW.min(size - from).min(size - pos);
            for k in from..from + len {
                if skip.contains(&k) {
                    continue;
                }
                match window.iter().find(|(i, _)| *i == k) {
                    None => return Ok(Some((k, None))),
                    Some((_, Some(rev))) if reserved.is_none() => reserved = Some((k, Some(*rev))),
                    Some(_) => {}
                }
            }
            pos += len;
        }
        Ok(reserved)
    }
}

enum Take {
    Got(IpAddr),
    Lost,
}

/// The first of `keys` that the matching get responses show holding an
/// address.
fn held_in(responses: &[TxnOpResponse], keys: [String; 2]) -> Option<Held> {
    responses.iter().zip(keys).find_map(|(r, key)| {
        let TxnOpResponse::Get(g) = r else {
            return None;
        };
        let kv = g.kvs().first()?;
        Some(Held {
            ip: kv.value_str().ok()?.parse().ok()?,
            key,
            rev: kv.mod_revision(),
        })
    })
}

fn unreachable(endpoints: &str, why: &str) -> Error {
    Error::TryAgain(format!(
        "etcd at {endpoints} is unavailable ({why}); check ipam.etcd: the endpoints, cacert (the CA that signed etcd's certificate), cert and key (a client certificate etcd trusts) and username/password"
    ))
}

impl PoolStore for EtcdStore {
    fn find(&self, pool: &Pool, owner: &Owner) -> Result<Option<IpAddr>, Error> {
        Ok(self.held_by(&pool.name, owner)?.map(|h| h.ip))
    }

    fn allocate(
        &self,
        pool: &Pool,
        owner: &Owner,
        want: Option<IpAddr>,
        sticky: bool,
    ) -> Result<IpAddr, Error> {
        if let Some(ip) = self.find(pool, owner)? {
            return Ok(ip);
        }
        if let Some(ip) = want {
            if !pool.addresses.contains(ip) {
                return Err(Error::config(
                    "ips",
                    format!("{ip} is not an allocatable address of pool {}", pool.name),
                ));
            }
            let reserved = self
                .get_one(&self.ip_key(&pool.name, ip)?)?
                .filter(|(v, _)| String::from_utf8_lossy(v).contains("\"stickyFor\""))
                .map(|(_, rev)| rev);
            return match self.try_take(pool, owner, ip, reserved)? {
                Take::Got(got) => Ok(got),
                Take::Lost => Err(Error::Busy {
                    what: format!("address {ip} of pool {}", pool.name),
                    owner: "another attachment".into(),
                }),
            };
        }
        if sticky && let Some(h) = owner.pod_hash() {
            let previous = self
                .get_one(&self.sticky_key(&pool.name, h)?)?
                .and_then(|(v, _)| String::from_utf8(v).ok()?.parse::<IpAddr>().ok());
            if let Some(ip) = previous
                && let Some((value, rev)) = self.get_one(&self.ip_key(&pool.name, ip)?)?
                && String::from_utf8_lossy(&value).contains(&format!("\"stickyFor\":\"{h:016x}\""))
                && let Take::Got(got) = self.try_take(pool, owner, ip, Some(rev))?
            {
                return Ok(got);
            }
        }
        let mut lost = Vec::new();
        for _ in 0..MAX_RACES {
            let Some((k, reserved)) = self.scan_free(pool, &lost)? else {
                return Err(Error::PoolExhausted {
                    pool: pool.name.clone(),
                    size: u64::try_from(pool.size()).unwrap_or(u64::MAX),
                });
            };
            let ip = pool.addresses.nth(k).ok_or_else(|| {
                Error::Internal(format!("position {k} outside pool {}", pool.name))
            })?;
            match self.try_take(pool, owner, ip, reserved)? {
                Take::Got(got) => return Ok(got),
                Take::Lost => lost.push(k),
            }
        }
        Err(Error::TryAgain(format!(
            "pool {}: lost {MAX_RACES} races for free addresses",
            pool.name
        )))
    }

    fn release(&self, pool: &str, owner: &Owner, sticky: bool) -> Result<Option<IpAddr>, Error> {
        match self.held_by(pool, owner)? {
            Some(held) => self.release_held(pool, &held, owner.pod_hash().filter(|_| sticky)),
            None => Ok(None),
        }
    }

    fn pools(&self) -> Result<Vec<String>, Error> {
        let prefix = format!("{}/index/", self.prefix);
        let resp = self.call(
            "list pools",
            self.client.clone().get(
                prefix.clone(),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            ),
        )?;
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok()?.strip_prefix(&prefix).map(str::to_string))
            .filter(|n| valid_pool_name(n))
            .collect())
    }

    fn gc(&self, pool: &str, network: &str, node: &str, keep: &[Keep]) -> Result<GcReport, Error> {
        let prefix = self.pool_key(pool, &keys::owner_prefix(network))?;
        // With values: they are the addresses, and their revisions make
        // each release conditional on the record being unchanged.
        let resp = self.call(
            "list owners",
            self.client
                .clone()
                .get(prefix.clone(), Some(GetOptions::new().with_prefix())),
        )?;
        let live = |cid: &str, ifname: &str| {
            keep.iter()
                .any(|k| k.container_id == cid && k.ifname == ifname)
        };
        let mut report = GcReport::default();
        for kv in resp.kvs() {
            let Ok(key) = kv.key_str() else { continue };
            let (Some(rest), Some(ip)) = (
                key.strip_prefix(&prefix),
                kv.value_str().ok().and_then(|v| v.parse().ok()),
            ) else {
                continue;
            };
            let held = Held {
                ip,
                key: key.to_string(),
                rev: kv.mod_revision(),
            };
            match OwnerKey::parse(rest) {
                Some(OwnerKey::Scoped {
                    node: n,
                    container_id,
                    ifname,
                }) if n == node && !live(&container_id, &ifname) => {
                    if let Some(ip) = self.release_held(pool, &held, None)? {
                        report.released.push(ip);
                    }
                }
                Some(OwnerKey::Unscoped {
                    container_id,
                    ifname,
                }) => {
                    let owner = Owner {
                        network: network.to_string(),
                        node: node.to_string(),
                        container_id,
                        ifname,
                        pod: None,
                    };
                    if live(&owner.container_id, &owner.ifname)
                        && self.adopt(pool, &owner, &held)?
                    {
                        report.adopted.push(ip);
                    } else {
                        report.unscoped.push(ip);
                    }
                }
                // Another node's, a live one of ours, or not a key we write.
                _ => {}
            }
        }
        Ok(report)
    }

    fn usage(&self, pool: &Pool) -> Result<Usage, Error> {
        let prefix = self.pool_key(&pool.name, "owner/")?;
        let resp = self.call(
            "count",
            self.client.clone().get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            ),
        )?;
        Ok(Usage {
            allocated: u128::try_from(resp.count()).unwrap_or(0),
            size: pool.size(),
        })
    }

    fn check_ready(&self) -> Result<(), Error> {
        self.call("status", self.client.clone().status()).map(drop)
    }
}
