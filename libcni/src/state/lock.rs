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
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut file = open_lock(&path)?;
        loop {
            match file.try_lock() {
                // A holder may have removed the file (`remove`) while we
                // waited: our lock is then on an orphan, so open the path anew.
                Ok(()) if is_at(&file, &path) => return Ok(FileLock { file, path }),
                Ok(()) => {
                    file = open_lock(&path)?;
                    continue;
                }
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

    /// Deletes the lock file, then releases the lock: for locks named after
    /// something that is gone for good (a deleted pod), so they do not pile
    /// up. Waiters notice (`acquire` re-checks the path) and use a new file.
    pub fn remove(self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                op: "remove lock",
                path: self.path.clone(),
                source,
            }),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn open_lock(path: &std::path::Path) -> Result<File, StateError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(super::dir::OPEN_FLAGS)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                StateError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                StateError::Io {
                    op: "open lock",
                    path: path.to_path_buf(),
                    source: e,
                }
            }
        })?;
    let meta = file.metadata().map_err(|source| StateError::Io {
        op: "inspect lock",
        path: path.to_path_buf(),
        source,
    })?;
    super::dir::check_file(path, &meta)?;
    Ok(file)
}

/// Is `file` still the file at `path` (not removed or replaced)?
fn is_at(file: &File, path: &std::path::Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
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
    fn a_removed_lock_is_not_shared_by_its_waiter_and_the_next_holder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(tmp.path()).expect("dir");
        let first = FileLock::acquire(&dir, "pod.lock", Duration::from_secs(1)).expect("first");
        let dir2 = dir.clone();
        // The waiter opened the old file before it was removed.
        let waiter = std::thread::spawn(move || {
            FileLock::acquire(&dir2, "pod.lock", Duration::from_secs(5))
        });
        std::thread::sleep(Duration::from_millis(50));
        first.remove().expect("remove");
        let second = waiter.join().expect("join").expect("waiter gets a lock");
        // It holds the lock on the file now at the path, so a third locker waits.
        assert!(tmp.path().join("pod.lock").exists());
        assert!(matches!(
            FileLock::acquire(&dir, "pod.lock", Duration::from_millis(30)),
            Err(StateError::LockTimeout { .. })
        ));
        second.remove().expect("remove");
        assert!(!tmp.path().join("pod.lock").exists());
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
