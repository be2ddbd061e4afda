//! State on disk: atomic writes, 0600 files in 0700 directories, versioned
//! JSON, symlinks and foreign owners refused, locks with timeouts; durable,
//! or per boot where what is recorded cannot outlive the boot.

mod boot;
mod dir;
mod double;
mod lock;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use boot::{BootId, Lifetime};
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
    #[error(
        "refusing {path}: it is a symlink (state files never are: find out who made it, then remove it)"
    )]
    Symlink { path: PathBuf },
    #[error(
        "refusing {path}: owned by uid {uid}, not by us (state belongs to the plugin's user: find out who wrote it, then remove it)"
    )]
    ForeignOwner { path: PathBuf, uid: u32 },
    #[error("refusing {path}: not a directory")]
    NotDirectory { path: PathBuf },
    #[error(
        "refusing {path}: not a regular file (a FIFO, device or directory planted in the state directory: remove it)"
    )]
    NotRegular { path: PathBuf },
    #[error(
        "refusing {path}: it has {links} hard links; a state file must have one (remove the extra links)"
    )]
    HardLinked { path: PathBuf, links: u64 },
    #[error("refusing state path {path}: must be absolute, without '..', one component per name")]
    BadPath { path: PathBuf },
    #[error(
        "timed out after {waited:?} waiting for lock {path}: another CNI operation holds it (the runtime retries; if it persists, `fuser {path}` names the holder)"
    )]
    LockTimeout { path: PathBuf, waited: Duration },
    #[error(
        "state file {path} is corrupt: {msg} (moving it aside lets the plugin start afresh, but forgets what it recorded: check what still uses it first)"
    )]
    Corrupt { path: PathBuf, msg: String },
    #[error(
        "state file {path} has version {version}, which this binary does not understand (written by a newer release: upgrade the plugin, or finish with the release that wrote it)"
    )]
    UnsupportedVersion { path: PathBuf, version: u64 },
}
