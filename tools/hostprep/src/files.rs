//! Paths from the command line, and atomic file replacement: a temp file in
//! the target directory (O_EXCL, O_NOFOLLOW), written, fsynced, renamed over
//! the target, and the directory fsynced. A reader (or an exec of the
//! binary) sees the old file or the new one, never a partial one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::HostprepError;

/// A directory given on the command line: absolute, no `..`, no NUL.
pub fn abs_dir(flag: &'static str, value: &str) -> Result<PathBuf, HostprepError> {
    let path = Path::new(value);
    if value.is_empty() || !path.is_absolute() {
        return Err(HostprepError::invalid(
            flag,
            value,
            "must be an absolute path",
        ));
    }
    if value.contains('\0') || path.components().any(|c| c == Component::ParentDir) {
        return Err(HostprepError::invalid(
            flag,
            value,
            "must not contain '..' or NUL",
        ));
    }
    Ok(path.to_path_buf())
}

/// A plain file name: 1-64 bytes of `[A-Za-z0-9._-]`, not starting with '.'.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// The prefix of `name`'s temp files in its directory.
pub fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp.")
}

/// Replaces `dir/name` atomically with what `fill` writes, with `mode`.
pub fn replace_with(
    dir: &Path,
    name: &str,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), HostprepError> {
    let target = dir.join(name);
    let tmp = dir.join(format!(
        "{}{}.{}",
        temp_prefix(name),
        std::process::id(),
        nanos()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(HostprepError::io("create", &tmp))?;
        fill(&mut file).map_err(HostprepError::io("write", &tmp))?;
        // The umask may have cut bits from `mode`.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(HostprepError::io("set the mode of", &tmp))?;
        file.sync_all().map_err(HostprepError::io("fsync", &tmp))?;
        fs::rename(&tmp, &target).map_err(HostprepError::io("rename into place", &target))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Replaces `dir/name` atomically with `bytes`.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), HostprepError> {
    replace_with(dir, name, mode, |f| f.write_all(bytes))
}

pub fn sync_dir(dir: &Path) -> Result<(), HostprepError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(HostprepError::io("fsync directory", dir))
}

/// Reads a small text file (at most `limit` bytes); None when absent.
/// Symlinks are followed, as modprobe follows them in modprobe.d (a dangling
/// one is absent); what they lead to must be a regular file (O_NONBLOCK:
/// opening a FIFO does not hang).
pub fn read_text(path: &Path, limit: u64) -> Result<Option<String>, HostprepError> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(HostprepError::io("open", path)(e)),
    };
    let meta = file
        .metadata()
        .map_err(HostprepError::io("inspect", path))?;
    if !meta.is_file() {
        return Err(HostprepError::Conflict(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut text = String::new();
    file.take(limit)
        .read_to_string(&mut text)
        .map_err(HostprepError::io("read", path))?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn dirs_must_be_absolute_without_dotdot() {
        assert!(abs_dir("--to", "/opt/cni/bin").is_ok());
        for bad in ["", "opt/cni", "/opt/../etc", "/a/b/.."] {
            let e = abs_dir("--to", bad).expect_err(bad);
            assert!(e.to_string().contains("--to"), "{e}");
        }
    }

    #[test]
    fn file_names_are_plain() {
        assert!(valid_file_name("ib-sriov"));
        assert!(valid_file_name("rdma_hostprep.v2"));
        for bad in ["", ".hidden", "a/b", "..", "x y", &"a".repeat(65)] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn atomic_write_replaces_with_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_atomic(dir.path(), "f", b"one", 0o644).expect("first");
        let ino1 = fs::metadata(dir.path().join("f")).expect("meta").ino();
        write_atomic(dir.path(), "f", b"two", 0o755).expect("second");
        let meta = fs::metadata(dir.path().join("f")).expect("meta");
        assert_eq!(fs::read(dir.path().join("f")).expect("read"), b"two");
        assert_eq!(meta.mode() & 0o777, 0o755);
        assert_ne!(
            meta.ino(),
            ino1,
            "replaced by rename, not rewritten in place"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert_eq!(names, ["f"]);
    }

    #[test]
    fn read_text_follows_symlinks_and_refuses_non_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("real.conf"), "options x y=1\n").expect("w");
        std::os::unix::fs::symlink("real.conf", dir.path().join("link.conf")).expect("ln");
        std::os::unix::fs::symlink("gone.conf", dir.path().join("dangling.conf")).expect("ln");
        let read = |n: &str| read_text(&dir.path().join(n), 1 << 10);
        assert_eq!(
            read("link.conf").expect("link").as_deref(),
            Some("options x y=1\n")
        );
        assert_eq!(read("dangling.conf").expect("dangling"), None);
        assert_eq!(read("absent.conf").expect("absent"), None);
        nix::unistd::mkfifo(&dir.path().join("fifo.conf"), nix::sys::stat::Mode::S_IRWXU)
            .expect("mkfifo");
        let e = read("fifo.conf").expect_err("fifo").to_string();
        assert!(e.contains("not a regular file"), "{e}");
        fs::create_dir(dir.path().join("d.conf")).expect("mkdir");
        assert!(read("d.conf").is_err());
        assert_eq!(
            read_text(&dir.path().join("real.conf"), 7)
                .expect("capped")
                .as_deref(),
            Some("options")
        );
    }

    #[test]
    fn failed_fill_leaves_target_and_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_atomic(dir.path(), "f", b"old", 0o644).expect("first");
        let e = replace_with(dir.path(), "f", 0o644, |_| Err(io::Error::other("boom")))
            .expect_err("fails");
        assert!(e.to_string().contains("boom"), "{e}");
        assert_eq!(fs::read(dir.path().join("f")).expect("read"), b"old");
        assert_eq!(fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
