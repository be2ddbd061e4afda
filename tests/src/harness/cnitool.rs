//! containernetworking's cnitool (libcni 1.1.2, spec up to 1.0.0: add,
//! check, del), built from Debian's golang-github-appc-cni source package by
//! scripts/lib/cnitool.sh: a client we did not write, run on a node of the
//! emulated cluster against the same config lists as the harness runtime.
//!
//! cnitool finds the list by network name in `NETCONFPATH`, takes the
//! interface name from `CNI_IFNAME`, capability args (`deviceID`) from
//! `CAP_ARGS` as JSON, derives the container ID from the netns path
//! (`cnitool-<sha512 prefix>`) and caches results in /var/lib/cni (it has
//! no flag for another cache dir; `del` removes the entry).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::cluster::Node;
use super::runtime::{Attachment, Conflist};
use super::{Result, repo_dir, run, setup};

pub struct Cnitool {
    pub bin: PathBuf,
}

impl Cnitool {
    /// `$CNITOOL` when set, else what scripts/lib/cnitool.sh builds (cached
    /// in /var/cache/rdma-cni-cnitool; the first build fetches the Debian
    /// source package and needs golang-go).
    pub fn locate() -> Result<Cnitool> {
        let bin = match std::env::var("CNITOOL") {
            Ok(p) => PathBuf::from(p),
            Err(_) => {
                let script = repo_dir().join("scripts/lib/cnitool.sh");
                let out = run(Command::new("bash").arg(&script))?;
                PathBuf::from(out.trim())
            }
        };
        if !bin.is_file() {
            return Err(setup(format!("cnitool {} is not a file", bin.display())));
        }
        Ok(Cnitool { bin })
    }

    /// Writes `list` (as the node loads it) into `dir` for `NETCONFPATH`.
    pub fn write_netconf(dir: &Path, list: &Conflist) -> Result<()> {
        std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::write(
                    dir.join(format!("{}.conflist", list.name)),
                    serde_json::to_vec_pretty(&list.json).unwrap_or_default(),
                )
            })
            .map_err(|e| setup(format!("{}: {e}", dir.display())))
    }

    /// `cnitool <command> <network> <netns>` on `node` for the attachment
    /// `att` (its netns, ifname, CNI_ARGS and capability args; cnitool makes
    /// up its own container ID), with the node's CNI_PATH and environment.
    /// Returns what it printed (add: the result).
    pub fn run(
        &self,
        node: &Node,
        netconf_dir: &Path,
        command: &str,
        network: &str,
        att: &Attachment,
    ) -> Result<Value> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", node.ns.path()))
            .arg("--")
            .arg(&self.bin)
            .args([command, network, att.netns.as_str()])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NETCONFPATH", netconf_dir)
            .env("CNI_PATH", node.runtime.cni_path_var())
            .env("CNI_IFNAME", &att.ifname)
            .env(
                "CAP_ARGS",
                Value::Object(att.capability_args.clone()).to_string(),
            )
            .env("CNI_ARGS", att.cni_args());
        for (k, v) in &node.runtime.env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd)?;
        if out.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&out).map_err(|e| setup(format!("cnitool {command}: {e}: {out}")))
    }
}
