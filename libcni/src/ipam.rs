//! Delegation to an IPAM plugin: exec `ipam.type` from CNI_PATH with our own
//! environment (CNI_COMMAND set per call) and the exact stdin we received.

use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use crate::env::Command;
use crate::result::{CniResult, ResultError};
use crate::version::SpecVersion;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("ipam.type {0:?} is not a plugin name")]
    BadType(String),
    #[error("IPAM plugin {plugin:?} not found in CNI_PATH {searched:?}")]
    NotFound {
        plugin: String,
        searched: Vec<PathBuf>,
    },
    #[error("cannot run IPAM plugin {path}: {source}")]
    Exec {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The delegate answered with a CNI error; its code is passed through.
    #[error("IPAM plugin {plugin} {command} failed: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Delegate {
        plugin: String,
        command: &'static str,
        code: u32,
        msg: String,
        details: String,
    },
    #[error("IPAM plugin {plugin} {command} exited with {status} and no CNI error on stdout")]
    Crashed {
        plugin: String,
        command: &'static str,
        status: String,
    },
    #[error("IPAM plugin {plugin} returned an unreadable result: {source}")]
    BadResult {
        plugin: String,
        #[source]
        source: ResultError,
    },
    #[error("IPAM plugin {plugin} returned invalid JSON: {msg}")]
    BadJson { plugin: String, msg: String },
    #[error("IPAM plugin {plugin} returned no IP addresses")]
    NoAddresses { plugin: String },
}

/// An IPAM plugin reachable through CNI_PATH.
#[derive(Clone, Debug)]
pub struct IpamDelegate {
    plugin: String,
    path: PathBuf,
}

impl IpamDelegate {
    /// Finds `plugin` in the CNI_PATH directories; the name must be a plain file name.
    pub fn find(plugin: &str, cni_path: &[PathBuf]) -> Result<IpamDelegate, IpamError> {
        if plugin.is_empty()
            || plugin == "."
            || plugin == ".."
            || plugin.contains('/')
            || plugin.contains('\0')
        {
            return Err(IpamError::BadType(plugin.to_string()));
        }
        for dir in cni_path {
            let candidate = dir.join(plugin);
            if let Ok(meta) = std::fs::metadata(&candidate)
                && meta.is_file()
                && meta.permissions().mode() & 0o111 != 0
            {
                return Ok(IpamDelegate {
                    plugin: plugin.to_string(),
                    path: candidate,
                });
            }
        }
        Err(IpamError::NotFound {
            plugin: plugin.to_string(),
            searched: cni_path.to_vec(),
        })
    }

    pub fn name(&self) -> &str {
        &self.plugin
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// ADD: the delegate's result, which must hold at least one address.
    pub fn add(&self, stdin: &[u8]) -> Result<CniResult, IpamError> {
        let out = self.exec(Command::Add, stdin)?;
        let value: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| IpamError::BadJson {
                plugin: self.plugin.clone(),
                msg: e.to_string(),
            })?;
        let result = CniResult::parse(&value).map_err(|source| IpamError::BadResult {
            plugin: self.plugin.clone(),
            source,
        })?;
        if result.ips.is_empty() {
            return Err(IpamError::NoAddresses {
                plugin: self.plugin.clone(),
            });
        }
        Ok(result)
    }

    pub fn del(&self, stdin: &[u8]) -> Result<(), IpamError> {
        self.exec(Command::Del, stdin).map(drop)
    }

    pub fn check(&self, stdin: &[u8]) -> Result<(), IpamError> {
        self.exec(Command::Check, stdin).map(drop)
    }

    /// GC, forwarded only to a delegate that speaks spec 1.1.0 (older ones,
    /// like Debian's 1.1.1 plugins, answer GC with a misleading error).
    pub fn gc(&self, stdin: &[u8]) -> Result<(), IpamError> {
        if !self.speaks(SpecVersion::V1_1_0)? {
            tracing::info!(plugin = %self.plugin, "IPAM plugin predates CNI 1.1.0: GC not forwarded");
            return Ok(());
        }
        self.exec(Command::Gc, stdin).map(drop)
    }

    /// STATUS, forwarded like GC.
    pub fn status(&self, stdin: &[u8]) -> Result<(), IpamError> {
        if !self.speaks(SpecVersion::V1_1_0)? {
            return Ok(());
        }
        self.exec(Command::Status, stdin).map(drop)
    }

    /// Asks the delegate (CNI_COMMAND=VERSION) whether it supports `version`.
    pub fn speaks(&self, version: SpecVersion) -> Result<bool, IpamError> {
        let request = format!(r#"{{"cniVersion":"{version}"}}"#);
        let out = self.exec(Command::Version, request.as_bytes())?;
        let reply: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| IpamError::BadJson {
                plugin: self.plugin.clone(),
                msg: e.to_string(),
            })?;
        Ok(reply["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.iter().any(|s| s.as_str() == Some(version.as_str()))))
    }

    /// Runs the delegate; its stderr goes to ours (the runtime's log).
    fn exec(&self, command: Command, stdin: &[u8]) -> Result<Vec<u8>, IpamError> {
        let exec_err = |source| IpamError::Exec {
            path: self.path.clone(),
            source,
        };
        let mut child = Process::new(&self.path)
            .env("CNI_COMMAND", command.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(exec_err)?;
        if let Some(mut pipe) = child.stdin.take() {
            // A delegate that exits without reading stdin closes the pipe: not our error.
            match pipe.write_all(stdin) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => return Err(exec_err(e)),
                _ => {}
            }
        }
        let output = child.wait_with_output().map_err(exec_err)?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let command = command.as_str();
        match serde_json::from_slice::<serde_json::Value>(&output.stdout) {
            Ok(v) if v.get("code").and_then(serde_json::Value::as_u64).is_some() => {
                let text = |k: &str| {
                    v.get(k)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                Err(IpamError::Delegate {
                    plugin: self.plugin.clone(),
                    command,
                    code: v
                        .get("code")
                        .and_then(serde_json::Value::as_u64)
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(999),
                    msg: text("msg"),
                    details: text("details"),
                })
            }
            _ => Err(IpamError::Crashed {
                plugin: self.plugin.clone(),
                command,
                status: output.status.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn finds_and_runs_a_delegate_with_our_stdin_and_command() {
        let tmp = tempfile::tempdir().expect("tempdir");
        script(
            tmp.path(),
            "fake-ipam",
            r#"in=$(cat); case "$in" in *'"name":"n1"'*) ;; *) exit 9;; esac
echo '{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1"}],"routes":[{"dst":"0.0.0.0/0"}]}'
[ "$CNI_COMMAND" = ADD ] || exit 3"#,
        );
        let d = IpamDelegate::find(
            "fake-ipam",
            &[PathBuf::from("/nonexistent"), tmp.path().into()],
        )
        .expect("found");
        let r = d
            .add(br#"{"cniVersion":"1.0.0","name":"n1"}"#)
            .expect("add");
        assert_eq!(r.ips[0].address.to_string(), "10.1.2.3/24");
        assert_eq!(r.routes.len(), 1);
        // DEL runs the same binary with CNI_COMMAND=DEL: this script then exits 3.
        assert!(matches!(
            d.del(br#"{"name":"n1"}"#),
            Err(IpamError::Crashed { .. })
        ));
    }

    #[test]
    fn delegate_errors_keep_their_code_and_message() {
        let tmp = tempfile::tempdir().expect("tempdir");
        script(
            tmp.path(),
            "failing",
            r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":11,"msg":"pool busy","details":"retry"}'; exit 1"#,
        );
        let d = IpamDelegate::find("failing", &[tmp.path().into()]).expect("found");
        match d.add(b"{}") {
            Err(IpamError::Delegate {
                code, msg, details, ..
            }) => {
                assert_eq!(
                    (code, msg.as_str(), details.as_str()),
                    (11, "pool busy", "retry")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn gc_and_status_skip_delegates_older_than_1_1() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Answers VERSION with 1.0.0 only, and fails anything else.
        script(
            tmp.path(),
            "old",
            r#"cat >/dev/null; [ "$CNI_COMMAND" = VERSION ] || exit 7
echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'"#,
        );
        let d = IpamDelegate::find("old", &[tmp.path().into()]).expect("found");
        assert!(!d.speaks(SpecVersion::V1_1_0).expect("version"));
        d.gc(b"{}").expect("skipped");
        d.status(b"{}").expect("skipped");
        script(
            tmp.path(),
            "new",
            r#"cat >/dev/null; [ "$CNI_COMMAND" = VERSION ] && { echo '{"supportedVersions":["1.1.0"]}'; exit 0; }
echo '{"code":50,"msg":"store down"}'; exit 1"#,
        );
        let d = IpamDelegate::find("new", &[tmp.path().into()]).expect("found");
        assert!(matches!(
            d.status(b"{}"),
            Err(IpamError::Delegate { code: 50, .. })
        ));
    }

    #[test]
    fn empty_result_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        script(
            tmp.path(),
            "empty",
            r#"cat >/dev/null; echo '{"cniVersion":"1.0.0"}'"#,
        );
        let d = IpamDelegate::find("empty", &[tmp.path().into()]).expect("found");
        assert!(matches!(d.add(b"{}"), Err(IpamError::NoAddresses { .. })));
    }

    #[test]
    fn plugin_names_cannot_escape_cni_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for bad in ["", ".", "..", "../sh", "/bin/sh", "a\0b"] {
            assert!(
                matches!(
                    IpamDelegate::find(bad, &[tmp.path().into()]),
                    Err(IpamError::BadType(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            IpamDelegate::find("absent", &[tmp.path().into()]),
            Err(IpamError::NotFound { .. })
        ));
    }
}
