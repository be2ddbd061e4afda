//! Network configs as every plugin reads them: stdin through libcni's skel
//! (JSON, common keys, cniVersion gates, GC keep lists, error JSON), then the
//! config loaders of sriov, ib-sriov, ippool and coordinator (their own
//! config.rs, compiled in here), and prevResult when present.
//!
//! Input: first byte picks the command, the rest is stdin.

#![no_main]

use libcni::config::NetConf;
use libcni::env::{CniArgs, CniEnv};
use libcni::error::{CniError, Error};
use libcni::ids::IfName;
use libcni::result::CniResult;
use libcni::skel::{AttachRequest, CniPlugin, GcRequest, Request, dispatch};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

#[allow(dead_code)]
#[path = "../../plugins/sriov/src/config.rs"]
mod sriov_config;

#[allow(dead_code)]
#[path = "../../plugins/ib-sriov/src/config.rs"]
mod ib_sriov_config;

#[allow(dead_code)]
#[path = "../../plugins/ippool/src/config.rs"]
mod ippool_config;
// ippool's config names this node through `crate::node`.
#[allow(dead_code)]
#[path = "../../plugins/ippool/src/node.rs"]
mod node;

#[allow(dead_code)]
#[path = "../../plugins/coordinator/src/config.rs"]
mod coordinator_config;

const COMMANDS: [&str; 6] = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"];

/// ippool reads pool files from `ipam.poolsDir`: never let an input pick a
/// directory of this machine (any spelling of the key).
fn pin_pools_dir(raw: &Value) -> Value {
    let mut raw = raw.clone();
    if let Some(ipam) = raw.get_mut("ipam").and_then(Value::as_object_mut) {
        ipam.retain(|k, _| !k.eq_ignore_ascii_case("poolsdir"));
        ipam.insert("poolsDir".into(), "/nonexistent/fuzz".into());
    }
    raw
}

/// Every loader, as ADD and DEL run them; errors are what we expect.
fn load_all(raw: &Value, conf: &NetConf, args: &CniArgs, ifname: &IfName) {
    let _ = sriov_config::SriovConf::load(raw, args);
    let _ = sriov_config::load_paths(raw);
    let _ = ib_sriov_config::IbConf::load(raw, conf, args);
    let _ = ib_sriov_config::load_paths(raw);
    let pinned = pin_pools_dir(raw);
    let _ = ippool_config::IppoolConf::load(&pinned, args);
    let _ = ippool_config::load_store_side(&pinned);
    let _ = coordinator_config::CoordConf::load(raw, ifname);
    let _ = coordinator_config::load_state_dir(raw);
    if let Some(prev) = &conf.prev_result {
        let _ = CniResult::parse(prev);
    }
}

struct Probe;

impl CniPlugin for Probe {
    fn name(&self) -> &'static str {
        "fuzz"
    }

    fn args_keys(&self) -> &'static [&'static str] {
        &["MAC", "IP"]
    }

    /// Never a log file named by the input; no log output either.
    fn log_settings(&self, _: &NetConf, _: &Value) -> (Option<String>, Option<String>) {
        (Some("off".into()), None)
    }

    fn add(&self, req: &AttachRequest) -> Result<CniResult, Error> {
        load_all(&req.req.raw, &req.req.conf, &req.args, &req.ifname);
        Ok(CniResult::default())
    }

    fn del(&self, req: &AttachRequest) -> Result<(), Error> {
        load_all(&req.req.raw, &req.req.conf, &req.args, &req.ifname);
        Ok(())
    }

    fn check(&self, req: &AttachRequest) -> Result<(), Error> {
        load_all(&req.req.raw, &req.req.conf, &req.args, &req.ifname);
        Ok(())
    }

    fn gc(&self, req: &GcRequest) -> Result<(), Error> {
        let _ = req.keeps("c1", "net1");
        let _ = sriov_config::load_paths(&req.req.raw);
        let _ = coordinator_config::load_state_dir(&req.req.raw);
        let _ = ippool_config::load_store_side(&pin_pools_dir(&req.req.raw));
        Ok(())
    }

    fn status(&self, _: &Request) -> Result<(), Error> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stdin)) = data.split_first() else {
        return;
    };
    let command = COMMANDS[usize::from(pick) % COMMANDS.len()];
    let env = CniEnv::from_lookup(|k| {
        let v = match k {
            "CNI_COMMAND" => command,
            "CNI_CONTAINERID" => "c1",
            "CNI_NETNS" => "/run/netns/fuzz",
            "CNI_IFNAME" => "net1",
            "CNI_ARGS" => "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p",
            _ => return None,
        };
        Some(v.to_string())
    });
    match dispatch(&Probe, env, stdin.to_vec()) {
        Ok(Some(out)) => assert!(out.is_object(), "output is not an object: {out}"),
        Ok(None) => {}
        Err((version, e)) => {
            let j = CniError::from(&e).to_json(version);
            assert!(j["code"].as_u64().is_some_and(|c| c != 0), "{j}");
            assert!(
                e.code() != libcni::error::code::INTERNAL,
                "internal error: {e}"
            );
        }
    }
});
