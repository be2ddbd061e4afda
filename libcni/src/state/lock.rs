//! Advisory file locks (flock) with a timeout.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{StateDir, StateError};

/// An exclusive lock, released when dropped (or when the process dies, so a
/// killed plugin never leaves a resource locked).
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Locks `<dir>/<name>`, creating it 0600. Waits at most `timeout`.
    pub fn acquire(dir: &StateDir, name: &str, timeout: Duration) -> Result<FileLock, StateError> {
        let path = dir.entry(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    StateError::Symlink { path: path.clone() }
                } else {
                    StateError::Io {
                        op: "open lock",
                        path: path.clone(),
                        source: e,
                    }
                }
            })?;
        let meta = file.metadata().map_err(|source| StateError::Io {
            op: "inspect lock",
            path: path.clone(),
            source,
        })?;
        if meta.uid() != nix::unistd::geteuid().as_raw() {
            return Err(StateError::ForeignOwner {
                path,
                uid: meta.uid(),
            });
        }
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(FileLock { file, path }),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(source)) => {
                    return Err(StateError::Io {
                        op: "lock",
                        path,
                        source,
                    });
                }
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(StateError::LockTimeout { path, waited });
            }
            std::thread::sleep(pause.min(timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _: io::Result<()> = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_locker_times_out_then_succeeds_after_release() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(tmp.path()).expect("dir");
        let first = FileLock::acquire(&dir, "vf.lock", Duration::from_secs(1)).expect("first");
        let err = FileLock::acquire(&dir, "vf.lock", Duration::from_millis(30)).expect_err("held");
        match err {
            StateError::LockTimeout { waited, .. } => assert!(waited >= Duration::from_millis(30)),
            other => panic!("unexpected {other}"),
        }
        drop(first);
        FileLock::acquire(&dir, "vf.lock", Duration::from_millis(30)).expect("released");
    }

    #[test]
    fn symlinked_lock_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(&tmp.path().join("d")).expect("dir");
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), dir.path().join("x.lock"))
            .expect("symlink");
        assert!(matches!(
            FileLock::acquire(&dir, "x.lock", Duration::from_millis(10)),
            Err(StateError::Symlink { .. })
        ));
        assert!(!tmp.path().join("elsewhere").exists());
    }
}
