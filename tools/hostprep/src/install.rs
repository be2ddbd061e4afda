//! `install-cni`: copies plugin binaries into a CNI bin directory the way
//! upstream plugins' DaemonSets do (sriov-cni's thin_entrypoint), atomically
//! per binary: a temp file in the target directory, fsync, rename over the
//! old one. A runtime exec'ing a plugin meanwhile gets the old binary or the
//! new one, never a torn one, and a running plugin keeps its (old) inode.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::{SigSet, Signal};

use crate::error::HostprepError;
use crate::files;

/// The plugins of the suite, installed when no `--bin` is given.
pub const PLUGINS: [&str; 5] = ["sriov", "ib-sriov", "rdma", "ippool", "coordinator"];
const MODE: u32 = 0o755;
/// Largest binary we copy (sanity bound on a hostile source).
const MAX_BINARY: u64 = 512 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Installed {
    Copied,
    UpToDate,
}

pub fn parse_bin(value: &str) -> Result<String, HostprepError> {
    if files::valid_file_name(value) {
        Ok(value.to_string())
    } else {
        Err(HostprepError::invalid(
            "--bin",
            value,
            "must be a plain file name of letters, digits, '.', '_' and '-'",
        ))
    }
}

/// A regular, executable source file (symlinks are followed: images often
/// link binaries), at most MAX_BINARY bytes.
fn check_source(path: &Path) -> Result<fs::Metadata, HostprepError> {
    let meta = fs::metadata(path).map_err(HostprepError::io("inspect", path))?;
    if !meta.is_file() {
        return Err(HostprepError::Conflict(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.mode() & 0o111 == 0 {
        return Err(HostprepError::Conflict(format!(
            "{} is not executable",
            path.display()
        )));
    }
    if meta.len() > MAX_BINARY {
        return Err(HostprepError::Conflict(format!(
            "{} is larger than {MAX_BINARY} bytes",
            path.display()
        )));
    }
    Ok(meta)
}

fn same_content(a: &Path, b: &Path, len: u64) -> io::Result<bool> {
    let meta = match fs::symlink_metadata(b) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !meta.is_file() || meta.len() != len || meta.mode() & 0o777 != MODE {
        return Ok(false);
    }
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Temp files of `name` left by an interrupted earlier run.
fn remove_stale_temps(to: &Path, name: &str) -> Result<(), HostprepError> {
    let prefix = files::temp_prefix(name);
    for entry in fs::read_dir(to).map_err(HostprepError::io("list", to))? {
        let entry = entry.map_err(HostprepError::io("list", to))?;
        let Ok(file) = entry.file_name().into_string() else {
            continue;
        };
        if file.starts_with(&prefix) {
            let path = entry.path();
            fs::remove_file(&path).map_err(HostprepError::io("remove stale", &path))?;
        }
    }
    Ok(())
}

/// Installs one binary from `from` into `to`.
pub fn install_one(from: &Path, to: &Path, name: &str) -> Result<Installed, HostprepError> {
    let src = from.join(name);
    let meta = check_source(&src)?;
    let dst = to.join(name);
    remove_stale_temps(to, name)?;
    if same_content(&src, &dst, meta.len()).map_err(HostprepError::io("compare", &dst))? {
        return Ok(Installed::UpToDate);
    }
    let mut input = File::open(&src).map_err(HostprepError::io("open", &src))?;
    files::replace_with(to, name, MODE, |out| io::copy(&mut input, out).map(drop))?;
    Ok(Installed::Copied)
}

/// Creates `to` (0755) if missing; it must be a directory.
pub fn ensure_dir(to: &Path) -> Result<(), HostprepError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(to)
        .map_err(HostprepError::io("create directory", to))?;
    if !fs::metadata(to)
        .map_err(HostprepError::io("inspect", to))?
        .is_dir()
    {
        return Err(HostprepError::Conflict(format!(
            "{} is not a directory",
            to.display()
        )));
    }
    Ok(())
}

/// Installs every binary of `names`; all sources are checked before the
/// first copy, so a missing one changes nothing.
pub fn install(from: &Path, to: &Path, names: &[String]) -> Result<Vec<String>, HostprepError> {
    for name in names {
        check_source(&from.join(name))?;
    }
    ensure_dir(to)?;
    let mut report = Vec::new();
    for name in names {
        let dst: PathBuf = to.join(name);
        let line =
            match install_one(from, to, name).map_err(|e| e.step(format!("install {name}")))? {
                Installed::Copied => format!("{name}: installed {}", dst.display()),
                Installed::UpToDate => format!("{name}: {} up to date", dst.display()),
            };
        report.push(line);
    }
    Ok(report)
}

/// The signals that end `--sleep`.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Blocks the stop signals so they wait for `sleep_until_stopped` (a PID 1
/// ignores SIGTERM without a handler, which would make every pod stop take
/// the whole grace period).
pub fn block_stop_signals() -> Result<(), HostprepError> {
    stop_signals()
        .thread_block()
        .map_err(|e| HostprepError::io("block signals for", "--sleep")(e.into()))
}

/// Sleeps until SIGTERM or SIGINT; returns the signal.
pub fn sleep_until_stopped() -> Result<Signal, HostprepError> {
    stop_signals()
        .wait()
        .map_err(|e| HostprepError::io("wait for a signal in", "--sleep")(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe(dir: &Path, name: &str, body: &[u8]) {
        fs::write(dir.join(name), body).expect("write");
        fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    #[test]
    fn installs_replaces_and_skips_identical() {
        let (from, to) = (
            tempfile::tempdir().expect("from"),
            tempfile::tempdir().expect("to"),
        );
        exe(from.path(), "a", b"binary a v1");
        fs::write(to.path().join(".a.tmp.1.2"), b"stale").expect("stale");
        let names = vec!["a".to_string()];
        let r = install(from.path(), to.path(), &names).expect("install");
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("installed"), "{r:?}");
        let ino = fs::metadata(to.path().join("a")).expect("meta").ino();
        let r = install(from.path(), to.path(), &names).expect("again");
        assert!(r[0].contains("up to date"), "{r:?}");
        assert_eq!(fs::metadata(to.path().join("a")).expect("meta").ino(), ino);
        exe(from.path(), "a", b"binary a v2");
        install(from.path(), to.path(), &names).expect("update");
        let meta = fs::metadata(to.path().join("a")).expect("meta");
        assert_ne!(meta.ino(), ino, "replaced by rename");
        assert_eq!(meta.mode() & 0o777, 0o755);
        assert_eq!(fs::read(to.path().join("a")).expect("read"), b"binary a v2");
        assert_eq!(
            fs::read_dir(to.path()).expect("ls").count(),
            1,
            "stale temp removed"
        );
    }

    #[test]
    fn a_missing_or_non_executable_source_changes_nothing() {
        let (from, to) = (
            tempfile::tempdir().expect("from"),
            tempfile::tempdir().expect("to"),
        );
        exe(from.path(), "a", b"a");
        fs::write(from.path().join("b"), b"not executable").expect("w");
        let e = install(from.path(), to.path(), &["a".into(), "b".into()])
            .expect_err("b not executable")
            .to_string();
        assert!(e.contains("not executable"), "{e}");
        let e = install(from.path(), to.path(), &["a".into(), "c".into()])
            .expect_err("c missing")
            .to_string();
        assert!(e.contains("/c"), "{e}");
        assert_eq!(fs::read_dir(to.path()).expect("ls").count(), 0);
    }

    #[test]
    fn bin_names_are_plain() {
        assert_eq!(parse_bin("ib-sriov").ok().as_deref(), Some("ib-sriov"));
        assert!(parse_bin("../sh").is_err());
        assert!(parse_bin(".x").is_err());
    }
}
