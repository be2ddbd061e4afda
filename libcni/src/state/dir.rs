//! A state directory we own: 0700, never a symlink, files written atomically.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StateError;
use super::boot::{self, Lifetime};

/// A directory holding state files. Names passed to its methods are single
/// path components built from validated identifiers; anything else is refused.
#[derive(Clone, Debug)]
pub struct StateDir {
    path: PathBuf,
    lifetime: Lifetime,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn check_owner(path: &Path, meta: &fs::Metadata) -> Result<(), StateError> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(StateError::ForeignOwner {
            path: path.to_path_buf(),
            uid: meta.uid(),
        });
    }
    Ok(())
}

/// A state file we read or update in place: regular, ours, and its only
/// name. A second hard link would be another path to the same bytes (a file
/// of the system linked in), and an in-place update would write through it.
pub(super) fn check_file(path: &Path, meta: &fs::Metadata) -> Result<(), StateError> {
    if !meta.is_file() {
        return Err(StateError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    check_owner(path, meta)?;
    if meta.nlink() > 1 {
        return Err(StateError::HardLinked {
            path: path.to_path_buf(),
            links: meta.nlink(),
        });
    }
    Ok(())
}

/// open(2) flags for state files: never follow a symlink, never block on a
/// FIFO or device planted in the directory (O_NONBLOCK does nothing to a
/// regular file, and the checks after open refuse anything else).
pub(super) const OPEN_FLAGS: libc::c_int = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;

impl StateDir {
    /// Opens (creating with 0700 if needed) a state directory. The directory
    /// itself must not be a symlink and must belong to us; group/other access
    /// bits are removed. What it records is durable.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        StateDir::open_with(path, &Lifetime::Durable)
    }

    /// As `open`, for records that last `lifetime`. A per-boot directory is
    /// claimed for this boot first (see `boot`): the records of an earlier
    /// boot are swept before anything reads them.
    pub fn open_with(path: &Path, lifetime: &Lifetime) -> Result<StateDir, StateError> {
        if !path.is_absolute() || path.components().any(|c| c.as_os_str() == "..") {
            return Err(StateError::BadPath {
                path: path.to_path_buf(),
            });
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io_err("create directory", path))?;
        let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
        if meta.file_type().is_symlink() {
            return Err(StateError::Symlink {
                path: path.to_path_buf(),
            });
        }
        if !meta.is_dir() {
            return Err(StateError::NotDirectory {
                path: path.to_path_buf(),
            });
        }
        check_owner(path, &meta)?;
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .map_err(io_err("restrict permissions of", path))?;
        }
        let dir = StateDir {
            path: path.to_path_buf(),
            lifetime: lifetime.clone(),
        };
        dir.sweep_stale_temp_files();
        if let Lifetime::Boot(id) = lifetime {
            boot::claim(&dir, id)?;
        }
        Ok(dir)
    }

    /// Deletes the temporary files of writes whose process died before the
    /// rename (`.<name>.tmp.<pid>.<nanos>`, see `replace`): a SIGKILLed
    /// plugin leaves them, and nothing else ever would. A live pid's file is
    /// left alone (its write is in progress; a recycled pid only delays the
    /// sweep). Best effort: a directory that cannot be listed is the next
    /// operation's error to report.
    fn sweep_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.path) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(temp_file_pid) else {
                continue;
            };
            if pid_is_alive(pid) || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed the temporary file of an interrupted write")
                }
                Err(e) => {
                    tracing::debug!(file = %entry.path().display(), error = %e, "cannot remove a stale temporary file")
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, opened with the same rules and lifetime.
    pub fn subdir(&self, name: &str) -> Result<StateDir, StateError> {
        StateDir::open_with(&self.entry(name)?, &self.lifetime)
    }

    /// A subdirectory whose records last `lifetime`.
    pub fn subdir_with(&self, name: &str, lifetime: &Lifetime) -> Result<StateDir, StateError> {
        StateDir::open_with(&self.entry(name)?, lifetime)
    }

    /// The path of entry `name`; `name` must be one plain path component.
    pub fn entry(&self, name: &str) -> Result<PathBuf, StateError> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(StateError::BadPath {
                path: self.path.join(name),
            });
        }
        Ok(self.path.join(name))
    }

    /// Reads a file; None when absent. Symlinks and files of other owners are refused.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.entry(name)?;
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(OPEN_FLAGS)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(StateError::Symlink { path });
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let meta = file.metadata().map_err(io_err("inspect", &path))?;
        check_file(&path, &meta)?;
        // One read of the known size (plus the EOF probe); capped for sanity.
        let mut buf = Vec::with_capacity(meta.len().min(64 << 20) as usize + 1);
        io::Read::read_to_end(&mut file, &mut buf).map_err(io_err("read", &path))?;
        Ok(Some(buf))
    }

    /// Opens a file for in-place updates; None when absent. Symlinks, other
    /// owners' files and non-regular files are refused, as for `read`.
    pub fn open_rw(&self, name: &str) -> Result<Option<File>, StateError> {
        let path = self.entry(name)?;
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(OPEN_FLAGS)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(StateError::Symlink { path });
            }
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let meta = file.metadata().map_err(io_err("inspect", &path))?;
        check_file(&path, &meta)?;
        Ok(Some(file))
    }

    /// Writes a file atomically: temp file (0600, O_EXCL), rename; in a
    /// durable directory with an fsync of the file before the rename and of
    /// the directory after it.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.replace(name, &[bytes], true)
    }

    /// Atomic replace from several buffers (no concatenation copy). A killed
    /// process leaves the old or the new content. In a durable directory the
    /// file is fsynced before the rename, so a power loss cannot tear it, and
    /// `durable` also fsyncs the directory so the new content survives a
    /// power loss; without it a power loss may bring back the previous
    /// content (still whole). A per-boot directory syncs nothing.
    pub fn replace(&self, name: &str, parts: &[&[u8]], durable: bool) -> Result<(), StateError> {
        let on_disk = self.lifetime.is_durable();
        self.replace_synced(name, parts, on_disk, durable && on_disk)
    }

    /// `replace` with both fsyncs whatever the lifetime: for the per-boot
    /// marker, which must outlive the boot it names.
    pub(super) fn replace_durably(&self, name: &str, parts: &[&[u8]]) -> Result<(), StateError> {
        self.replace_synced(name, parts, true, true)
    }

    fn replace_synced(
        &self,
        name: &str,
        parts: &[&[u8]],
        sync_file: bool,
        sync_dir: bool,
    ) -> Result<(), StateError> {
        let path = self.entry(name)?;
        // The rename would replace a symlink or another owner's file without
        // following it; refuse anyway, as reads do, so tampering is reported
        // instead of silently papered over.
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(StateError::Symlink { path });
            }
            Ok(meta) => check_file(&path, &meta)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", &path)(e)),
        }
        let tmp = self.entry(&format!(".{name}.tmp.{}.{}", std::process::id(), nanos()))?;
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            for part in parts {
                file.write_all(part).map_err(io_err("write", &tmp))?;
            }
            if sync_file {
                file.sync_all().map_err(io_err("fsync", &tmp))?;
            }
            crate::failpoint::hit("state.write.before_rename").map_err(|e| StateError::Io {
                op: "write (failpoint)",
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })?;
            fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
            if sync_dir { self.sync() } else { Ok(()) }
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Removes a file; Ok(false) when it was not there.
    pub fn remove(&self, name: &str) -> Result<bool, StateError> {
        let path = self.entry(name)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                if self.lifetime.is_durable() {
                    self.sync()?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("remove", &path)(e)),
        }
    }

    /// Names of the regular files here, excluding temp and lock files.
    pub fn list(&self) -> Result<Vec<String>, StateError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(io_err("list", &self.path))? {
            let entry = entry.map_err(io_err("list", &self.path))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file && !name.starts_with('.') && !name.ends_with(".lock") {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Reads versioned JSON; refuses versions newer than `max_version`.
    pub fn read_json<T: DeserializeOwned>(
        &self,
        name: &str,
        max_version: u32,
    ) -> Result<Option<T>, StateError> {
        let Some(bytes) = self.read(name)? else {
            return Ok(None);
        };
        let path = self.entry(name)?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if version == 0 || version > u64::from(max_version) {
            return Err(StateError::UnsupportedVersion { path, version });
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| StateError::Corrupt {
                path,
                msg: e.to_string(),
            })
    }

    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
            path: self.path.join(name),
            msg: e.to_string(),
        })?;
        self.write(name, &bytes)
    }

    fn sync(&self) -> Result<(), StateError> {
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &self.path))
    }
}

/// The writer's pid in a temporary file name `.<name>.tmp.<pid>.<nanos>`.
fn temp_file_pid(file: &str) -> Option<i32> {
    let rest = file.strip_prefix('.')?;
    let (_, tail) = rest.rsplit_once(".tmp.")?;
    let (pid, nanos) = tail.split_once('.')?;
    nanos.parse::<u128>().ok()?;
    pid.parse::<i32>().ok().filter(|p| *p > 0)
}

fn pid_is_alive(pid: i32) -> bool {
    // kill(pid, 0) sends nothing: ESRCH means no such process.
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn atomic_write_read_remove() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(&tmp.path().join("a/b")).expect("open");
        let mode = fs::metadata(dir.path()).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o700);
        dir.write("x", b"one").expect("write");
        dir.write("x", b"two").expect("overwrite");
        assert_eq!(dir.read("x").expect("read").as_deref(), Some(&b"two"[..]));
        let fmode = fs::metadata(dir.path().join("x")).expect("meta").mode() & 0o777;
        assert_eq!(fmode, 0o600);
        assert_eq!(dir.list().expect("list"), ["x"]);
        assert!(dir.remove("x").expect("remove"));
        assert!(!dir.remove("x").expect("remove again"));
        assert_eq!(dir.read("x").expect("read"), None);
    }

    #[test]
    fn loose_permissions_are_tightened() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().join("loose");
        fs::create_dir(&p).expect("mkdir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).expect("chmod");
        StateDir::open(&p).expect("open");
        assert_eq!(fs::metadata(&p).expect("meta").mode() & 0o777, 0o700);
    }

    #[test]
    fn symlinks_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(&tmp.path().join("s")).expect("open");
        fs::write(tmp.path().join("secret"), b"x").expect("write");
        symlink(tmp.path().join("secret"), dir.path().join("link")).expect("symlink");
        assert!(matches!(dir.read("link"), Err(StateError::Symlink { .. })));
        symlink(tmp.path(), tmp.path().join("dirlink")).expect("symlink");
        assert!(matches!(
            StateDir::open(&tmp.path().join("dirlink")),
            Err(StateError::Symlink { .. })
        ));
    }

    #[test]
    fn names_must_be_single_components() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(tmp.path()).expect("open");
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(dir.write(bad, b"x").is_err(), "{bad:?}");
        }
        assert!(StateDir::open(Path::new("relative")).is_err());
        assert!(StateDir::open(&tmp.path().join("a/../b")).is_err());
    }

    #[test]
    fn versioned_json() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(tmp.path()).expect("open");
        dir.write("v1", br#"{"version":1,"x":3}"#).expect("w");
        dir.write("v9", br#"{"version":9}"#).expect("w");
        dir.write("bad", b"{").expect("w");
        let v: serde_json::Value = dir.read_json("v1", 1).expect("ok").expect("some");
        assert_eq!(v["x"], 3);
        assert!(matches!(
            dir.read_json::<serde_json::Value>("v9", 1),
            Err(StateError::UnsupportedVersion { version: 9, .. })
        ));
        assert!(matches!(
            dir.read_json::<serde_json::Value>("bad", 1),
            Err(StateError::Corrupt { .. })
        ));
    }

    #[test]
    fn temporary_files_of_dead_writers_are_swept_on_open() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(tmp.path()).expect("open");
        // pid_max is at most 2^22: i32::MAX names no process.
        let dead = format!(".rec.json.tmp.{}.12345", i32::MAX);
        let live = format!(".rec.json.tmp.{}.12345", std::process::id());
        for name in [&dead, &live, &".notes.tmp".to_string()] {
            fs::write(dir.path().join(name), b"{}").expect("write");
        }
        assert_eq!(temp_file_pid(&dead), Some(i32::MAX));
        assert_eq!(temp_file_pid(".rec.json"), None);
        StateDir::open(tmp.path()).expect("reopen");
        assert!(
            !dir.path().join(&dead).exists(),
            "a dead writer's file stays"
        );
        assert!(
            dir.path().join(&live).exists(),
            "a live writer's file was removed"
        );
        assert!(dir.path().join(".notes.tmp").exists(), "not ours to remove");
    }
}
