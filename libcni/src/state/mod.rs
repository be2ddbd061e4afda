//! State on disk: atomic writes, 0600 files in 0700 directories, versioned
//! JSON, symlinks and foreign owners refused, locks with timeouts.

mod dir;
mod double;
mod lock;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use dir::StateDir;
pub use double::DoubleBufferedFile;
pub use lock::FileLock;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refusing {path}: it is a symlink")]
    Symlink { path: PathBuf },
    #[error("refusing {path}: owned by uid {uid}, not by us")]
    ForeignOwner { path: PathBuf, uid: u32 },
    #[error("refusing {path}: not a directory")]
    NotDirectory { path: PathBuf },
    #[error("refusing {path}: not a regular file")]
    NotRegular { path: PathBuf },
    #[error("refusing state path {path}: must be absolute, without '..', one component per name")]
    BadPath { path: PathBuf },
    #[error("timed out after {waited:?} waiting for lock {path} (another CNI operation holds it)")]
    LockTimeout { path: PathBuf, waited: Duration },
    #[error("state file {path} is corrupt: {msg}")]
    Corrupt { path: PathBuf, msg: String },
    #[error("state file {path} has version {version}, which this binary does not understand")]
    UnsupportedVersion { path: PathBuf, version: u64 },
}
