//! The RDMA subsystem's netns mode: read and set now (RDMA netlink), and
//! persistently (`options ib_core netns_mode=N` in modprobe.d, read when
//! ib_core loads; 0 = exclusive, 1 = shared).

use std::fs;
use std::path::{Path, PathBuf};

use libcni::rdma::{NetnsMode, RdmaError, RdmaSocket};

use crate::error::HostprepError;
use crate::files;

/// The file `--persist` writes in the modprobe.d directory.
pub const MODPROBE_FILE: &str = "ib_core.conf";
pub const DEFAULT_MODPROBE_DIR: &str = "/etc/modprobe.d";
const HEADER: &str = "# rdma-hostprep: RDMA netns mode for ib_core (0 = exclusive, 1 = shared)";
/// Where `ip netns` keeps named namespaces (listed in the EBUSY hint).
const NAMED_NETNS_DIR: &str = "/run/netns";

/// What reading the running kernel's mode gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModeReading {
    Mode(NetnsMode),
    /// No RDMA subsystem to ask (NETLINK_RDMA missing, SYS_GET unknown).
    Unavailable(String),
    /// The subsystem is there but the read failed.
    Error(String),
}

impl ModeReading {
    /// `exclusive`, `shared`, `unavailable` or `error` (the JSON value).
    pub fn label(&self) -> &'static str {
        match self {
            ModeReading::Mode(NetnsMode::Exclusive) => "exclusive",
            ModeReading::Mode(NetnsMode::Shared) => "shared",
            ModeReading::Unavailable(_) => "unavailable",
            ModeReading::Error(_) => "error",
        }
    }

    /// The label as the text report says it.
    pub fn describe(&self) -> String {
        match self {
            ModeReading::Mode(m) => m.to_string(),
            ModeReading::Unavailable(why) => format!("unavailable (no RDMA subsystem): {why}"),
            ModeReading::Error(e) => format!("unknown ({e})"),
        }
    }
}

pub fn parse_mode(flag: &'static str, s: &str) -> Result<NetnsMode, HostprepError> {
    match s {
        "exclusive" => Ok(NetnsMode::Exclusive),
        "shared" => Ok(NetnsMode::Shared),
        _ => Err(HostprepError::invalid(
            flag,
            s,
            "must be `exclusive` or `shared`",
        )),
    }
}

/// Why `e` means "there is no RDMA subsystem to talk to", if it does: the
/// socket family is missing (ib_core not loaded: EPROTONOSUPPORT), or the
/// kernel does not know the request (pre-5.3 kernels, no nldev client).
pub fn unavailable_reason(e: &RdmaError) -> Option<String> {
    const NO_FAMILY: [i32; 3] = [libc::EPROTONOSUPPORT, libc::EAFNOSUPPORT, libc::ENOENT];
    const NO_COMMAND: [i32; 4] = [
        libc::EOPNOTSUPP,
        libc::ENOENT,
        libc::ENODEV,
        libc::EPROTONOSUPPORT,
    ];
    match e {
        RdmaError::Socket(io) if io.raw_os_error().is_some_and(|n| NO_FAMILY.contains(&n)) => Some(
            format!("cannot open a NETLINK_RDMA socket ({io}); is ib_core loaded?"),
        ),
        RdmaError::Kernel { errno, .. } if NO_COMMAND.contains(errno) => Some(format!(
            "{e}; the kernel has no RDMA netns mode (needs Linux 5.3 or later with ib_core loaded)"
        )),
        _ => None,
    }
}

fn rdma_error(e: RdmaError) -> HostprepError {
    match unavailable_reason(&e) {
        Some(why) => HostprepError::RdmaUnavailable(why),
        None => HostprepError::Rdma(e),
    }
}

/// The running kernel's mode.
pub fn read_mode() -> ModeReading {
    match RdmaSocket::new().and_then(|s| s.netns_mode()) {
        Ok(m) => ModeReading::Mode(m),
        Err(e) => match unavailable_reason(&e) {
            Some(why) => ModeReading::Unavailable(why),
            None => ModeReading::Error(e.to_string()),
        },
    }
}

/// What `set_mode` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOutcome {
    AlreadySet,
    Changed { from: NetnsMode },
}

/// Sets the running kernel's mode (`rdma system set netns <mode>`).
pub fn set_mode(mode: NetnsMode) -> Result<SetOutcome, HostprepError> {
    let sock = RdmaSocket::new().map_err(rdma_error)?;
    let current = sock.netns_mode().map_err(rdma_error)?;
    if current == mode {
        return Ok(SetOutcome::AlreadySet);
    }
    sock.set_netns_mode(mode).map_err(|e| {
        if e.errno() == Some(libc::EBUSY) {
            HostprepError::RdmaBusy {
                mode: mode.to_string(),
                namespaces: named_namespaces(Path::new(NAMED_NETNS_DIR)),
                source: e,
            }
        } else {
            rdma_error(e)
        }
    })?;
    let now = sock.netns_mode().map_err(rdma_error)?;
    if now != mode {
        return Err(HostprepError::Conflict(format!(
            "the kernel accepted RDMA netns mode {mode} but still reports {now}"
        )));
    }
    Ok(SetOutcome::Changed { from: current })
}

/// Names under /run/netns (a hint for EBUSY), at most 10.
fn named_namespaces(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| files::valid_file_name(n))
        .collect();
    names.sort();
    names.truncate(10);
    names
}

/// A kernel bool parameter's value (kstrtobool): Some(true) = shared.
fn kernel_bool(v: &str) -> Option<bool> {
    match v {
        "on" => Some(true),
        "off" => Some(false),
        _ => match v.bytes().next() {
            Some(b'1' | b'y' | b'Y' | b't' | b'T') => Some(true),
            Some(b'0' | b'n' | b'N' | b'f' | b'F') => Some(false),
            _ => None,
        },
    }
}

/// modprobe treats `-` and `_` in module names alike.
fn is_ib_core(module: &str) -> bool {
    module.replace('-', "_") == "ib_core"
}

/// The params of an `options ib_core ...` line, else None.
fn ib_core_options(line: &str) -> Option<Vec<&str>> {
    let mut words = line.split_whitespace();
    (words.next() == Some("options") && words.next().is_some_and(is_ib_core))
        .then(|| words.collect())
}

/// The last `netns_mode=` value of `options ib_core` lines in `text`.
fn netns_mode_value(text: &str) -> Option<String> {
    text.lines()
        .filter_map(ib_core_options)
        .flatten()
        .filter_map(|w| w.strip_prefix("netns_mode="))
        .next_back()
        .map(str::to_string)
}

/// `text` with every `netns_mode=` of `options ib_core` lines (and our
/// header) removed, then our two lines appended. Other lines stay as they are.
pub fn merge_modprobe(text: &str, mode: NetnsMode) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line == HEADER {
            continue;
        }
        match ib_core_options(line) {
            Some(params) => {
                let rest: Vec<&str> = params
                    .into_iter()
                    .filter(|w| !w.starts_with("netns_mode="))
                    .collect();
                if !rest.is_empty() {
                    out.push_str(&format!("options ib_core {}\n", rest.join(" ")));
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str(HEADER);
    out.push_str(&format!("\noptions ib_core netns_mode={}\n", mode as u8));
    out
}

/// The mode modprobe.d sets, as modprobe reads it: `*.conf` in name order,
/// the last `netns_mode` wins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persisted {
    /// None when the value is not a boolean the kernel accepts.
    pub mode: Option<NetnsMode>,
    pub value: String,
    pub file: PathBuf,
}

pub fn persisted_mode(dir: &Path) -> Result<Option<Persisted>, HostprepError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HostprepError::io("list", dir)(e)),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".conf") && files::valid_file_name(n))
        .collect();
    names.sort();
    let mut found = None;
    for name in names {
        let path = dir.join(&name);
        let Some(text) = files::read_text(&path, 1 << 20)? else {
            continue;
        };
        if let Some(value) = netns_mode_value(&text) {
            let mode = kernel_bool(&value).map(|shared| {
                if shared {
                    NetnsMode::Shared
                } else {
                    NetnsMode::Exclusive
                }
            });
            found = Some(Persisted {
                mode,
                value,
                file: path,
            });
        }
    }
    Ok(found)
}

/// Writes `mode` into `<dir>/ib_core.conf` (atomically, 0644), keeping its
/// other lines. Returns the file and whether it changed. Fails when another
/// file read after it still overrides the mode.
pub fn persist_mode(dir: &Path, mode: NetnsMode) -> Result<(PathBuf, bool), HostprepError> {
    fs::create_dir_all(dir).map_err(HostprepError::io("create directory", dir))?;
    let path = dir.join(MODPROBE_FILE);
    let old = files::read_text(&path, 1 << 20)?.unwrap_or_default();
    let new = merge_modprobe(&old, mode);
    let changed = new != old;
    if changed {
        files::write_atomic(dir, MODPROBE_FILE, new.as_bytes(), 0o644)?;
    }
    match persisted_mode(dir)? {
        Some(p) if p.mode == Some(mode) => Ok((path, changed)),
        Some(p) => Err(HostprepError::Conflict(format!(
            "wrote netns_mode={} to {}, but {} sets netns_mode={} and modprobe reads it later: \
             remove that setting",
            mode as u8,
            path.display(),
            p.file.display(),
            p.value
        ))),
        None => Err(HostprepError::Conflict(format!(
            "wrote {} but cannot read netns_mode back from it",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_other_lines_and_is_idempotent() {
        let old = "# site options\noptions ib_core foo=1 netns_mode=1\noptions ib-core netns_mode=1\noptions mlx5_core x=2\n";
        let new = merge_modprobe(old, NetnsMode::Exclusive);
        assert_eq!(
            new,
            format!(
                "# site options\noptions ib_core foo=1\noptions mlx5_core x=2\n{HEADER}\noptions ib_core netns_mode=0\n"
            )
        );
        assert_eq!(merge_modprobe(&new, NetnsMode::Exclusive), new);
        assert_eq!(netns_mode_value(&new).as_deref(), Some("0"));
        let shared = merge_modprobe(&new, NetnsMode::Shared);
        assert_eq!(netns_mode_value(&shared).as_deref(), Some("1"));
        assert_eq!(shared.matches(HEADER).count(), 1);
    }

    #[test]
    fn empty_file_gets_just_our_lines() {
        assert_eq!(
            merge_modprobe("", NetnsMode::Exclusive),
            format!("{HEADER}\noptions ib_core netns_mode=0\n")
        );
    }

    #[test]
    fn kernel_bools_as_kstrtobool_reads_them() {
        for (v, want) in [
            ("0", Some(false)),
            ("n", Some(false)),
            ("off", Some(false)),
            ("1", Some(true)),
            ("Y", Some(true)),
            ("on", Some(true)),
            ("x", None),
            ("", None),
        ] {
            assert_eq!(kernel_bool(v), want, "{v:?}");
        }
    }

    #[test]
    fn persisted_mode_is_the_last_file_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(persisted_mode(dir.path()).expect("empty"), None);
        let (path, changed) = persist_mode(dir.path(), NetnsMode::Exclusive).expect("persist");
        assert!(changed);
        let p = persisted_mode(dir.path()).expect("read").expect("found");
        assert_eq!((p.mode, p.file), (Some(NetnsMode::Exclusive), path.clone()));
        let (_, again) = persist_mode(dir.path(), NetnsMode::Exclusive).expect("again");
        assert!(!again, "unchanged the second time");
        // A later file overriding it makes --persist fail, naming that file.
        fs::write(
            dir.path().join("mlnx.conf"),
            "options ib_core netns_mode=1\n",
        )
        .expect("w");
        let e = persist_mode(dir.path(), NetnsMode::Exclusive)
            .expect_err("overridden")
            .to_string();
        assert!(e.contains("mlnx.conf") && e.contains("netns_mode=1"), "{e}");
        // Only *.conf files count (modprobe ignores the rest).
        fs::remove_file(dir.path().join("mlnx.conf")).expect("rm");
        fs::write(
            dir.path().join("zz.conf.bak"),
            "options ib_core netns_mode=1\n",
        )
        .expect("w");
        let p = persisted_mode(dir.path()).expect("read").expect("found");
        assert_eq!(p.mode, Some(NetnsMode::Exclusive));
    }

    #[test]
    fn missing_family_is_unavailable_other_errors_are_not() {
        let no_family = RdmaError::Socket(std::io::Error::from_raw_os_error(libc::EPROTONOSUPPORT));
        let why = unavailable_reason(&no_family).expect("unavailable");
        assert!(why.contains("ib_core"), "{why}");
        let old_kernel = RdmaError::Kernel {
            op: "read".into(),
            errno: libc::EOPNOTSUPP,
            reason: None,
        };
        assert!(unavailable_reason(&old_kernel).is_some());
        let perm = RdmaError::Kernel {
            op: "set".into(),
            errno: libc::EPERM,
            reason: None,
        };
        assert!(unavailable_reason(&perm).is_none());
        assert!(matches!(rdma_error(perm), HostprepError::Rdma(_)));
    }

    #[test]
    fn modes_parse_strictly() {
        assert_eq!(
            parse_mode("mode", "exclusive").ok(),
            Some(NetnsMode::Exclusive)
        );
        assert_eq!(parse_mode("mode", "shared").ok(), Some(NetnsMode::Shared));
        assert!(parse_mode("mode", "Exclusive").is_err());
        assert!(parse_mode("mode", "0").is_err());
    }
}
