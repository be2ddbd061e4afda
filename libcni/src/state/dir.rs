//! A state directory we own: 0700, never a symlink, files written atomically.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StateError;

/// A directory holding state files. Names passed to its methods are single
/// path components built from validated identifiers; anything else is refused.
#[derive(Clone, Debug)]
pub struct StateDir {
    path: PathBuf,
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

impl StateDir {
    /// Opens (creating with 0700 if needed) a state directory. The directory
    /// itself must not be a symlink and must belong to us; group/other access
    /// bits are removed.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
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
        Ok(StateDir {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, opened with the same rules.
    pub fn subdir(&self, name: &str) -> Result<StateDir, StateError> {
        StateDir::open(&self.entry(name)?)
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
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
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
        if !meta.is_file() {
            return Err(StateError::NotRegular { path });
        }
        check_owner(&path, &meta)?;
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
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
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
        if !meta.is_file() {
            return Err(StateError::NotRegular { path });
        }
        check_owner(&path, &meta)?;
        Ok(Some(file))
    }

    /// Writes a file atomically: temp file (0600, O_EXCL), fsync, rename, fsync dir.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.replace(name, &[bytes], true)
    }

    /// Atomic replace from several buffers (no concatenation copy). A crash
    /// at any point leaves the old or the new content. `durable` also fsyncs
    /// the directory so the new content survives a power loss; without it a
    /// power loss may bring back the previous content (still whole).
    pub fn replace(&self, name: &str, parts: &[&[u8]], durable: bool) -> Result<(), StateError> {
        let path = self.entry(name)?;
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
            file.sync_all().map_err(io_err("fsync", &tmp))?;
            crate::failpoint::hit("state.write.before_rename").map_err(|e| StateError::Io {
                op: "write (failpoint)",
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })?;
            fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
            if durable { self.sync() } else { Ok(()) }
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
                self.sync()?;
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
}
