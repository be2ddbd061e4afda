//! `ippool`: IPAM with named pools (Spiderpool's model), node-local files by
//! default, etcd for pools shared across nodes.
//!
//! ADD: per IP family, the pools selected for this node are tried in order;
//! the attachment gets the address it already holds, else the one requested,
//! else its pod's sticky address, else the next free one. Every allocation
//! records this node (`nodeName`, else `$K8S_NODE_NAME`, else the hostname).
//! DEL releases by (node, container, interface) in every pool. GC releases
//! what this node's runtime no longer knows, never another node's.

mod config;
mod node;

use std::net::IpAddr;

use ipnet::IpNet;
use libcni::error::StepExt;
use libcni::failpoint;
use libcni::pool::{FileStore, GcReport, Keep, Owner, Pool, PoolStore};
use libcni::result::{CniResult, IpConfig, Route};
use libcni::skel::{self, AttachRequest, CniPlugin, GcRequest, Request};
use libcni::undo::Undo;
use libcni::{Error, config::NetConf};
use serde_json::Value;

use config::{IppoolConf, StoreConf, StoreSide, load_release_side, load_store_side};

struct Ippool;

fn open_store(store: &StoreConf) -> Result<Box<dyn PoolStore>, Error> {
    match store {
        StoreConf::File { data_dir } => Ok(Box::new(FileStore::open(data_dir)?)),
        StoreConf::Etcd(settings) => Ok(Box::new(libcni::pool::EtcdStore::connect(
            &libcni::pool::EtcdOptions {
                endpoints: settings.endpoints.clone(),
                prefix: settings.prefix.clone(),
                timeout: settings.timeout,
                cacert: settings.tls.as_ref().and_then(|t| t.cacert.clone()),
                cert_key: settings.tls.as_ref().and_then(|t| t.cert_key.clone()),
                user: settings.user.clone(),
            },
        )?)),
    }
}

fn owner(side: &StoreSide, req: &AttachRequest) -> Owner {
    let pod = match (
        req.args.get("K8S_POD_NAMESPACE"),
        req.args.get("K8S_POD_NAME"),
    ) {
        (Some(ns), Some(name)) if !name.is_empty() => Some(format!("{ns}/{name}")),
        _ => None,
    };
    Owner {
        network: side.network.clone(),
        node: side.node.clone(),
        container_id: req.container_id.to_string(),
        ifname: req.ifname.to_string(),
        pod,
    }
}

impl CniPlugin for Ippool {
    fn name(&self) -> &'static str {
        "ippool"
    }

    fn args_keys(&self) -> &'static [&'static str] {
        &["IP"]
    }

    /// An IPAM plugin logs per its `ipam` section (Spiderpool's keys too).
    fn log_settings(&self, _conf: &NetConf, raw: &Value) -> (Option<String>, Option<String>) {
        let ipam = &raw["ipam"];
        let pick = |keys: [&str; 2]| {
            keys.iter()
                .find_map(|k| ipam.get(*k).and_then(Value::as_str).map(str::to_string))
        };
        (
            pick(["logLevel", "log_level"]),
            pick(["logFile", "log_file_path"]),
        )
    }

    fn add(&self, req: &AttachRequest) -> Result<CniResult, Error> {
        let conf = IppoolConf::load(&req.req.raw, &req.args)?;
        let store = open_store(&conf.side.store)?;
        let owner = owner(&conf.side, req);
        let mut undo = Undo::new();
        match allocate_all(&conf, &*store, &owner, &mut undo) {
            Ok(result) => {
                undo.commit();
                Ok(result)
            }
            Err(e) => Err(undo.rollback(e)),
        }
    }

    fn del(&self, req: &AttachRequest) -> Result<(), Error> {
        // A host without a usable node name may still DEL what an older
        // ippool allocated there (see node::node_for_release).
        let side = load_release_side(&req.req.raw)?;
        if side.node.is_empty() {
            tracing::warn!(
                "no node name (ipam.nodeName and K8S_NODE_NAME unset, the hostname is none): releasing only allocations recorded without a node, by an older ippool"
            );
        }
        let store = open_store(&side.store)?;
        let owner = owner(&side, req);
        // Every pool the store knows: the config may have changed since ADD.
        let mut errors = Vec::new();
        for pool in store.pools()? {
            match store.release(&pool, &owner, side.sticky) {
                Ok(Some(ip)) => tracing::info!(%pool, %ip, "released"),
                Ok(None) => {}
                Err(e) => errors.push(e.step(format!("release from pool {pool}"))),
            }
            failpoint::hit("ippool.del.after_release")?;
        }
        Error::from_many(errors).map_or(Ok(()), Err)
    }

    fn check(&self, req: &AttachRequest) -> Result<(), Error> {
        let conf = IppoolConf::load(&req.req.raw, &req.args)?;
        let store = open_store(&conf.side.store)?;
        let owner = owner(&conf.side, req);
        let prev = req
            .req
            .conf
            .prev_result
            .as_ref()
            .map(CniResult::parse)
            .transpose()?;
        let expected: Vec<IpAddr> = prev
            .map(|r| r.ips.iter().map(|ip| ip.address.addr()).collect())
            .unwrap_or_default();
        if expected.is_empty() {
            for v6 in [false, true] {
                for pool in conf.candidates(v6)? {
                    if store.find(pool, &owner)?.is_some() {
                        return Ok(());
                    }
                }
            }
            return Err(Error::Check(format!(
                "no address is allocated to container {} interface {}",
                req.container_id, req.ifname
            )));
        }
        for ip in expected {
            let pool = conf
                .pools
                .iter()
                .find(|p| p.addresses.contains(ip))
                .ok_or_else(|| Error::Check(format!("{ip} belongs to no defined pool")))?;
            match store.find(pool, &owner)? {
                Some(held) if held == ip => {}
                Some(held) => {
                    return Err(Error::Check(format!(
                        "pool {} holds {held} for this attachment, not {ip}",
                        pool.name
                    )));
                }
                None => {
                    return Err(Error::Check(format!(
                        "{ip} is not allocated to this attachment in pool {}",
                        pool.name
                    )));
                }
            }
        }
        Ok(())
    }

    fn gc(&self, req: &GcRequest) -> Result<(), Error> {
        let side = load_store_side(&req.req.raw)?;
        let store = open_store(&side.store)?;
        let keep: Vec<Keep> = req
            .keep
            .iter()
            .map(|a| Keep {
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
            })
            .collect();
        let mut errors = Vec::new();
        for pool in store.pools()? {
            match store.gc(&pool, &side.network, &side.node, &keep) {
                Ok(report) => log_gc(&pool, &side.node, &report),
                Err(e) => errors.push(e.step(format!("GC of pool {pool}"))),
            }
        }
        Error::from_many(errors).map_or(Ok(()), Err)
    }

    fn status(&self, req: &Request) -> Result<(), Error> {
        let side = load_store_side(&req.raw)?;
        open_store(&side.store)
            .and_then(|s| s.check_ready())
            .map_err(|e| Error::NotAvailable(format!("IP pool store: {e}")))
    }
}

fn log_gc(pool: &str, node: &str, report: &GcReport) {
    if !report.released.is_empty() {
        tracing::info!(%pool, node, released = ?report.released, "GC released stale allocations");
    }
    if !report.adopted.is_empty() {
        tracing::info!(%pool, node, adopted = ?report.adopted,
            "allocations recorded without a node are live here: now recorded as this node's");
    }
    if !report.unscoped.is_empty() {
        tracing::info!(%pool, node, kept = ?report.unscoped,
            "allocations recorded without a node (before node scoping) and not live here: maybe another node's, left for their DEL");
    }
}

/// One address per family that has selected pools; each allocation registers
/// its release on `undo`.
fn allocate_all<'a>(
    conf: &'a IppoolConf,
    store: &'a dyn PoolStore,
    owner: &'a Owner,
    undo: &mut Undo<'a>,
) -> Result<CniResult, Error> {
    let mut result = CniResult::default();
    for v6 in [false, true] {
        let candidates = conf.candidates(v6)?;
        let want = conf.requested.iter().copied().find(|ip| ip.is_ipv6() == v6);
        if candidates.is_empty() {
            if let Some(ip) = want {
                return Err(Error::config(
                    "runtimeConfig.ips",
                    format!(
                        "{ip} was requested but no IPv{} pool is selected",
                        if v6 { 6 } else { 4 }
                    ),
                ));
            }
            continue;
        }
        let (pool, ip) = allocate_family(store, &candidates, owner, want, conf.side.sticky)?;
        undo.push(format!("release {ip} in pool {}", pool.name), move || {
            store.release(&pool.name, owner, false).map(drop)
        });
        failpoint::hit(if v6 {
            "ippool.add.after_v6"
        } else {
            "ippool.add.after_v4"
        })?;
        let address =
            IpNet::new(ip, pool.subnet.prefix_len()).map_err(|e| Error::Internal(e.to_string()))?;
        result.ips.push(IpConfig {
            address,
            gateway: pool.gateway,
            interface: None,
        });
        result
            .routes
            .extend(pool.routes.iter().map(|r| Route::new(r.dst, r.gw)));
    }
    if result.ips.is_empty() {
        return Err(Error::config(
            "ipam.default_ipv4_ippool",
            format!(
                "no IP pool is selected for node {:?}: name pools in default_ipv4_ippool / default_ipv6_ippool or mark pools \"default\": true",
                conf.side.node
            ),
        ));
    }
    Ok(result)
}

fn allocate_family<'p>(
    store: &dyn PoolStore,
    candidates: &[&'p Pool],
    owner: &Owner,
    want: Option<IpAddr>,
    sticky: bool,
) -> Result<(&'p Pool, IpAddr), Error> {
    // A repeated ADD returns what the attachment already holds, in whichever
    // candidate pool it got it (allocate() does this itself for one pool).
    if candidates.len() > 1 {
        for pool in candidates {
            if let Some(ip) = store.find(pool, owner)? {
                return Ok((pool, ip));
            }
        }
    }
    if let Some(ip) = want {
        let pool = candidates
            .iter()
            .find(|p| p.addresses.contains(ip))
            .ok_or_else(|| {
                Error::config(
                    "runtimeConfig.ips",
                    format!(
                        "{ip} is in none of the selected pools ({})",
                        candidates
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
        return Ok((pool, store.allocate(pool, owner, Some(ip), sticky)?));
    }
    let mut exhausted = Vec::new();
    for pool in candidates {
        match store.allocate(pool, owner, None, sticky) {
            Ok(ip) => return Ok((pool, ip)),
            Err(Error::PoolExhausted { .. }) => exhausted.push(*pool),
            Err(e) => return Err(e).step(|| format!("allocate from pool {}", pool.name)),
        }
    }
    Err(Error::PoolExhausted {
        pool: exhausted
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        size: exhausted
            .iter()
            .map(|p| u64::try_from(p.size()).unwrap_or(u64::MAX))
            .fold(0, u64::saturating_add),
    })
}

fn main() {
    skel::run(
        Ippool,
        concat!(
            "ippool IPAM plugin ",
            env!("CARGO_PKG_VERSION"),
            " (rdma-cni-rs)"
        ),
    )
}
