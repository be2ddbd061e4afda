//! The plugin skeleton: environment, stdin, version checks, dispatch to a
//! [`CniPlugin`], result or error JSON on stdout, exit code.

use std::io::{Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::config::{self, NetConf, ValidAttachment};
use crate::env::{CniArgs, CniEnv, Command};
use crate::error::{CniError, Error};
use crate::ids::{ContainerId, IfName};
use crate::result::CniResult;
use crate::version::SpecVersion;

/// Largest stdin we read; a network config is a few KiB.
const MAX_STDIN: u64 = 4 << 20;

/// What every command receives.
#[derive(Debug)]
pub struct Request {
    /// The exact bytes from stdin, forwarded verbatim to delegates.
    pub stdin: Vec<u8>,
    /// stdin as a JSON object, for the plugin's own config struct.
    pub raw: Value,
    pub conf: NetConf,
    pub version: SpecVersion,
    pub cni_path: Vec<PathBuf>,
}

/// ADD, DEL and CHECK: one attachment (container, interface).
#[derive(Debug)]
pub struct AttachRequest {
    pub req: Request,
    pub container_id: ContainerId,
    pub ifname: IfName,
    /// None on DEL when the runtime gave no netns.
    pub netns: Option<PathBuf>,
    pub args: CniArgs,
}

impl AttachRequest {
    /// CHECK's netns: the runtime must give one.
    pub fn check_netns(&self) -> Result<&std::path::Path, Error> {
        self.netns
            .as_deref()
            .ok_or_else(|| Error::Check("CNI_NETNS is required".into()))
    }

    /// CHECK of an attachment this plugin has no record of.
    pub fn not_recorded(&self, what: &str) -> Error {
        Error::Check(format!(
            "no {what} recorded for {} of container {}",
            self.ifname, self.container_id
        ))
    }
}

/// GC: the attachments to keep.
#[derive(Debug)]
pub struct GcRequest {
    pub req: Request,
    pub keep: Vec<ValidAttachment>,
}

impl GcRequest {
    pub fn keeps(&self, container_id: &str, ifname: &str) -> bool {
        self.keep
            .iter()
            .any(|a| a.container_id == container_id && a.ifname == ifname)
    }

    /// Whether a record written by an ADD of `network` is this GC's to judge.
    /// GC is per network: the runtime's valid list names only that network's
    /// attachments, so a record of another network (another rail of the same
    /// pod) is never released here, nor one that names no network (older
    /// layouts), which only its DEL releases.
    pub fn covers(&self, network: Option<&str>) -> bool {
        network.is_some() && network == self.req.conf.name.as_deref()
    }
}

/// A CNI plugin: the skel handles everything around these calls.
pub trait CniPlugin {
    /// The plugin's `type` name, for logs.
    fn name(&self) -> &'static str;
    /// CNI_ARGS keys this plugin reads (others need IgnoreUnknown).
    fn args_keys(&self) -> &'static [&'static str] {
        &[]
    }
    /// (logLevel, logFile). Main plugins read the top level; an IPAM plugin
    /// overrides this to read its `ipam` section.
    fn log_settings(&self, conf: &NetConf, _raw: &Value) -> (Option<String>, Option<String>) {
        (conf.log_level.clone(), conf.log_file.clone())
    }
    fn add(&self, req: &AttachRequest) -> Result<CniResult, Error>;
    fn del(&self, req: &AttachRequest) -> Result<(), Error>;
    fn check(&self, req: &AttachRequest) -> Result<(), Error>;
    fn gc(&self, req: &GcRequest) -> Result<(), Error>;
    fn status(&self, req: &Request) -> Result<(), Error>;
}

/// Runs the plugin for this process and exits.
pub fn run<P: CniPlugin>(plugin: P, about: &str) -> ! {
    crate::failpoint::setup();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|a| a == "--version" || a == "-v" || a == "--help" || a == "-h")
    {
        eprintln!(
            "{about}\nCNI protocol versions: {}",
            supported_list().join(", ")
        );
        std::process::exit(0);
    }
    let mut stdin = Vec::new();
    let read = std::io::stdin().take(MAX_STDIN + 1).read_to_end(&mut stdin);
    let outcome = catch_unwind(AssertUnwindSafe(|| match read {
        Ok(_) if stdin.len() as u64 > MAX_STDIN => Err((
            SpecVersion::LATEST,
            Error::Decode(format!("stdin is larger than {MAX_STDIN} bytes")),
        )),
        Ok(_) => dispatch(&plugin, CniEnv::from_process(), stdin),
        Err(e) => Err((
            SpecVersion::LATEST,
            Error::Internal(format!("cannot read stdin: {e}")),
        )),
    }));
    let outcome = outcome.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err((
            SpecVersion::LATEST,
            Error::Internal(format!("plugin panicked: {what}")),
        ))
    });
    match outcome {
        Ok(Some(out)) => {
            print_stdout(&out);
            std::process::exit(0)
        }
        Ok(None) => std::process::exit(0),
        Err((version, err)) => {
            tracing::error!(error = %err, code = err.code(), "{} failed", plugin.name());
            print_stdout(&CniError::from(&err).to_json(version));
            std::process::exit(1)
        }
    }
}

fn supported_list() -> Vec<&'static str> {
    SpecVersion::ALL.iter().map(|v| v.as_str()).collect()
}

fn print_stdout(v: &Value) {
    let mut out = std::io::stdout().lock();
    // Nothing useful can be done if the runtime closed our stdout.
    let _ = serde_json::to_writer(&mut out, v);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Everything between reading stdin and printing: returns the JSON to print
/// (None for commands with no output) or the error with the version to use.
pub fn dispatch<P: CniPlugin>(
    plugin: &P,
    env: Result<CniEnv, crate::env::EnvError>,
    stdin: Vec<u8>,
) -> Result<Option<Value>, (SpecVersion, Error)> {
    let early = |e: Error| (SpecVersion::LATEST, e);
    let env = env.map_err(|e| early(e.into()))?;
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": SpecVersion::LATEST.as_str(),
            "supportedVersions": supported_list(),
        })));
    }
    let raw = config::parse_stdin(&stdin).map_err(early)?;
    let conf: NetConf = config::decode(&raw).map_err(early)?;
    let (level, file) = plugin.log_settings(&conf, &raw);
    crate::logging::init(plugin.name(), level.as_deref(), file.as_deref());
    let version = config::spec_version(&conf).map_err(early)?;
    let fail = |e: Error| (version, e);
    let min = match env.command {
        Command::Check => Some(SpecVersion::V0_4_0),
        Command::Gc | Command::Status => Some(SpecVersion::V1_1_0),
        _ => None,
    };
    if let Some(min) = min
        && version < min
    {
        return Err(fail(Error::IncompatibleVersion {
            given: format!(
                "{version} (CNI_COMMAND={} needs {min} or later)",
                env.command.as_str()
            ),
        }));
    }
    let req = Request {
        stdin,
        raw,
        conf,
        version,
        cni_path: env.path.clone(),
    };
    match env.command {
        Command::Version => Ok(None),
        Command::Status => plugin.status(&req).map(|()| None).map_err(fail),
        Command::Gc => {
            let keep = req.conf.gc_keep_list();
            let gc = GcRequest { req, keep };
            plugin.gc(&gc).map(|()| None).map_err(fail)
        }
        Command::Add | Command::Del | Command::Check => {
            env.args
                .check_known(plugin.args_keys())
                .map_err(|e| fail(e.into()))?;
            let (Some(container_id), Some(ifname)) = (env.container_id, env.ifname) else {
                return Err(fail(Error::Internal(
                    "attachment env missing after validation".into(),
                )));
            };
            let attach = AttachRequest {
                req,
                container_id,
                ifname,
                netns: env.netns,
                args: env.args,
            };
            tracing::info!(
                command = env.command.as_str(),
                container = %attach.container_id,
                ifname = %attach.ifname,
                netns = ?attach.netns,
                "{}", plugin.name()
            );
            match env.command {
                Command::Add => plugin
                    .add(&attach)
                    .map(|r| Some(r.to_json(version)))
                    .map_err(fail),
                Command::Del => plugin.del(&attach).map(|()| None).map_err(fail),
                _ => plugin.check(&attach).map(|()| None).map_err(fail),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Echo;
    impl CniPlugin for Echo {
        fn name(&self) -> &'static str {
            "echo"
        }
        fn add(&self, req: &AttachRequest) -> Result<CniResult, Error> {
            let mut r = CniResult::default();
            r.interfaces.push(crate::result::Interface {
                name: req.ifname.to_string(),
                ..Default::default()
            });
            Ok(r)
        }
        fn del(&self, _: &AttachRequest) -> Result<(), Error> {
            Ok(())
        }
        fn check(&self, _: &AttachRequest) -> Result<(), Error> {
            Err(Error::Check("mismatch".into()))
        }
        fn gc(&self, req: &GcRequest) -> Result<(), Error> {
            if req.keeps("c1", "net1") {
                Ok(())
            } else {
                Err(Error::Internal("keep list lost".into()))
            }
        }
        fn status(&self, _: &Request) -> Result<(), Error> {
            Ok(())
        }
    }

    fn env(cmd: &str) -> Result<CniEnv, crate::env::EnvError> {
        let m: HashMap<&str, &str> = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "net1"),
        ]
        .into();
        CniEnv::from_lookup(|k| m.get(k).map(|v| v.to_string()))
    }

    fn run(cmd: &str, stdin: &str) -> Result<Option<Value>, (SpecVersion, Error)> {
        dispatch(&Echo, env(cmd), stdin.as_bytes().to_vec())
    }

    #[test]
    fn version_lists_every_supported_version() {
        let out = run("VERSION", "").expect("ok").expect("output");
        assert_eq!(
            out["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
    }

    #[test]
    fn add_result_is_emitted_in_the_config_version() {
        let out = run("ADD", r#"{"cniVersion":"0.4.0","name":"n"}"#)
            .expect("ok")
            .expect("out");
        assert_eq!(out["cniVersion"], "0.4.0");
        assert_eq!(out["interfaces"][0]["name"], "net1");
    }

    #[test]
    fn version_gates_and_codes() {
        let (v, e) = run("CHECK", r#"{"cniVersion":"0.3.1","name":"n"}"#).expect_err("check<0.4");
        assert_eq!((v, e.code()), (SpecVersion::V0_3_1, 1));
        let (_, e) = run("GC", r#"{"cniVersion":"1.0.0","name":"n"}"#).expect_err("gc<1.1");
        assert_eq!(e.code(), 1);
        let (_, e) = run("ADD", r#"{"cniVersion":"9.9.9"}"#).expect_err("unknown");
        assert_eq!(e.code(), 1);
        let (_, e) = run("ADD", "not json").expect_err("decode");
        assert_eq!(e.code(), 6);
        let (_, e) = run("CHECK", r#"{"cniVersion":"1.0.0","name":"n"}"#).expect_err("plugin");
        assert_eq!(e.code(), 105);
        let (_, e) = dispatch(&Echo, CniEnv::from_lookup(|_| None), vec![]).expect_err("no env");
        assert_eq!(e.code(), 4);
    }

    #[test]
    fn gc_covers_only_records_of_its_own_network() {
        let gc = |name: Option<&str>| GcRequest {
            req: Request {
                stdin: Vec::new(),
                raw: json!({}),
                conf: NetConf {
                    name: name.map(str::to_string),
                    ..NetConf::default()
                },
                version: SpecVersion::V1_1_0,
                cni_path: Vec::new(),
            },
            keep: Vec::new(),
        };
        let gpu1 = gc(Some("gpu1-sriov"));
        assert!(gpu1.covers(Some("gpu1-sriov")));
        assert!(!gpu1.covers(Some("gpu2-sriov")), "another rail's record");
        assert!(!gpu1.covers(None), "a record that names no network");
        assert!(!gc(None).covers(None), "a nameless GC judges nothing");
    }

    #[test]
    fn gc_accepts_both_attachment_keys() {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let stdin = format!(
                r#"{{"cniVersion":"1.1.0","name":"n","{key}":[{{"containerID":"c1","ifname":"net1"}}]}}"#
            );
            assert!(run("GC", &stdin).expect("gc").is_none(), "{key}");
        }
    }
}
