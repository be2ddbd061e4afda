//! Network namespace handles.
//!
//! The process never changes its own namespace. Work that must happen inside
//! another netns (opening a netlink socket, writing /proc/sys/net, sending a
//! gratuitous ARP) runs on a short-lived thread that enters the namespace and
//! then exits, so no thread can carry a foreign netns back into our code.
//! Netlink sockets opened that way stay bound to their netns after the thread
//! is gone and are used from the calling thread.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns, unshare};

use crate::netlink::{NetlinkError, RouteSocket};

/// statfs f_type of nsfs.
const NSFS_MAGIC: i64 = 0x6e73_6673;
/// ioctl NS_GET_NSTYPE = _IO(0xb7, 0x3): returns the CLONE_NEW* type of an nsfs fd.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path} does not exist")]
    Gone { path: PathBuf },
    #[error("{path} is not a network namespace")]
    NotNetns { path: PathBuf },
    #[error("cannot open network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create a temporary network namespace: {0}")]
    Create(#[source] io::Error),
    #[error("cannot enter network namespace {name}: {source}")]
    Enter {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start a thread for network namespace {name}: {source}")]
    Thread {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("work inside network namespace {name} panicked")]
    Panicked { name: String },
    #[error("netlink socket in network namespace {name}: {source}")]
    Socket {
        name: String,
        #[source]
        source: NetlinkError,
    },
}

impl NetnsError {
    /// True when the namespace is simply gone (DEL treats that as done).
    pub fn is_gone(&self) -> bool {
        matches!(self, NetnsError::Gone { .. } | NetnsError::NotNetns { .. })
    }
}

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    name: String,
}

impl NetNs {
    /// The calling thread's network namespace (the host, for a CNI plugin).
    pub fn current() -> Result<NetNs, NetnsError> {
        let path = Path::new("/proc/thread-self/ns/net");
        let file = File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(NetNs {
            file,
            name: "host".to_string(),
        })
    }

    /// Opens a netns by path (a bind mount under /run/netns or /proc/PID/ns/net)
    /// and proves it is one: a missing path or anything but an nsfs network
    /// namespace is an error, so hostile paths never reach setns().
    pub fn open(path: &Path) -> Result<NetNs, NetnsError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(NetnsError::Gone {
                    path: path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(NetnsError::Open {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| NetnsError::Open {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
        let magic = fs.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC {
            return Err(NetnsError::NotNetns {
                path: path.to_path_buf(),
            });
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which is open for the call.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(NetnsError::NotNetns {
                path: path.to_path_buf(),
            });
        }
        Ok(NetNs {
            file,
            name: path.display().to_string(),
        })
    }

    /// A fresh, anonymous network namespace that lives as long as this handle.
    ///
    /// Dropping the handle destroys the namespace: the kernel returns physical
    /// devices to the host but deletes virtual ones, so callers move
    /// everything out first.
    pub fn temporary() -> Result<NetNs, NetnsError> {
        let thread = std::thread::Builder::new()
            .name("netns-temp".into())
            .spawn(|| -> io::Result<File> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                File::open("/proc/thread-self/ns/net")
            })
            .map_err(NetnsError::Create)?;
        let file = thread
            .join()
            .map_err(|_| NetnsError::Panicked {
                name: "temporary".into(),
            })?
            .map_err(NetnsError::Create)?;
        Ok(NetNs {
            file,
            name: "temporary".to_string(),
        })
    }

    /// Like [`NetNs::temporary`], but also bind-mounted at `pin` (created
    /// here; it must not exist), so the namespace outlives this process: a
    /// device caught in it by a crash (SIGKILL, OOM kill, node reboot aside)
    /// waits there for the next DEL instead of being deleted (virtual
    /// devices) or dropped into the host under a transient name (physical
    /// ones). [`NetNs::unpin`] removes the pin once the namespace is empty.
    ///
    /// Crash-safe in every order: the pin file exists before the mount, so a
    /// crash in between leaves a plain empty file, which `unpin` removes too.
    ///
    /// Builds before the one-request move (libcni::netdev) parked devices in
    /// such a pin; only tests make one now, to prove those pins are recovered.
    #[cfg(test)]
    pub fn temporary_pinned(pin: &Path) -> Result<NetNs, NetnsError> {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(pin)
            .map_err(|e| {
                NetnsError::Create(io::Error::new(
                    e.kind(),
                    format!("pin file {}: {e}", pin.display()),
                ))
            })?;
        let target = pin.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("netns-pinned".into())
            .spawn(move || -> io::Result<File> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                nix::mount::mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| {
                    io::Error::other(format!("bind mount at {}: {e}", target.display()))
                })?;
                File::open("/proc/thread-self/ns/net")
            })
            .map_err(NetnsError::Create)?;
        let joined = thread.join().map_err(|_| NetnsError::Panicked {
            name: "temporary".into(),
        });
        match joined {
            Ok(Ok(file)) => Ok(NetNs {
                file,
                name: format!("temporary (pinned at {})", pin.display()),
            }),
            Ok(Err(e)) => {
                let _ = NetNs::unpin(pin);
                Err(NetnsError::Create(e))
            }
            Err(e) => {
                let _ = NetNs::unpin(pin);
                Err(e)
            }
        }
    }

    /// Unmounts and deletes a pin made by [`NetNs::temporary_pinned`] (or
    /// the plain file a crash before its mount left). Missing is fine.
    pub fn unpin(pin: &Path) -> Result<(), NetnsError> {
        let err = |source: io::Error| NetnsError::Open {
            path: pin.to_path_buf(),
            source,
        };
        // NOFOLLOW: a pin replaced by a symlink must not unmount its target.
        let flags = nix::mount::MntFlags::MNT_DETACH | nix::mount::MntFlags::UMOUNT_NOFOLLOW;
        match nix::mount::umount2(pin, flags) {
            // EINVAL: not a mount point (a crash before the mount).
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(err(e.into())),
        }
        match std::fs::remove_file(pin) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a dedicated thread inside this namespace and returns its value.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, NetnsError> {
        let fd = self.file.as_fd();
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name("netns".into())
                .spawn_scoped(scope, move || -> io::Result<R> {
                    setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                    Ok(f())
                })
                .map_err(|source| NetnsError::Thread {
                    name: self.name.clone(),
                    source,
                })?;
            handle
                .join()
                .map_err(|_| NetnsError::Panicked {
                    name: self.name.clone(),
                })?
                .map_err(|source| NetnsError::Enter {
                    name: self.name.clone(),
                    source,
                })
        })
    }

    /// An rtnetlink socket bound to this namespace.
    pub fn route_socket(&self) -> Result<RouteSocket, NetnsError> {
        self.run(RouteSocket::new)?
            .map_err(|source| NetnsError::Socket {
                name: self.name.clone(),
                source,
            })
    }

    /// A stable identity: the nsfs inode as `<dev>:<ino>`.
    pub fn id(&self) -> String {
        self.file
            .metadata()
            .map(|m| format!("{}:{}", m.dev(), m.ino()))
            .unwrap_or_default()
    }

    /// True when both handles refer to the same namespace.
    pub fn same_as(&self, other: &NetNs) -> bool {
        match (self.file.metadata(), other.file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_and_missing_paths_are_not_netns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("netns");
        std::fs::write(&file, b"").expect("write");
        assert!(matches!(
            NetNs::open(&file),
            Err(NetnsError::NotNetns { .. })
        ));
        assert!(matches!(
            NetNs::open(&dir.path().join("missing")),
            Err(NetnsError::Gone { .. })
        ));
    }

    #[test]
    fn mount_namespace_is_not_a_network_namespace() {
        // nsfs, but the wrong kind: setns(CLONE_NEWNET) must never see it.
        let err = NetNs::open(Path::new("/proc/self/ns/mnt")).expect_err("mnt ns");
        assert!(matches!(err, NetnsError::NotNetns { .. }), "{err}");
    }

    #[test]
    fn own_namespace_opens_and_compares() {
        let host = NetNs::current().expect("current");
        let again = NetNs::open(Path::new("/proc/self/ns/net")).expect("open");
        assert!(host.same_as(&again));
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root (CAP_SYS_ADMIN)")]
    fn temporary_namespace_is_isolated_and_the_caller_stays_home() {
        let host = NetNs::current().expect("current");
        let temp = NetNs::temporary().expect("temporary");
        assert!(!host.same_as(&temp));
        let sock = temp.route_socket().expect("socket");
        let links = sock.links().expect("links");
        // A new netns holds only its loopback device.
        assert_eq!(
            links.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["lo"]
        );
        let after = NetNs::current().expect("current");
        assert!(host.same_as(&after), "calling thread changed netns");
    }

    #[test]
    #[cfg_attr(not(feature = "root-tests"), ignore = "needs root (CAP_SYS_ADMIN)")]
    fn a_pinned_temporary_namespace_outlives_its_handle_until_unpinned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pin = dir.path().join("pin");
        let ns = NetNs::temporary_pinned(&pin).expect("pinned");
        let id = ns.id();
        drop(ns);
        let again = NetNs::open(&pin).expect("still there after the handle is gone");
        assert_eq!(again.id(), id);
        assert!(
            NetNs::temporary_pinned(&pin).is_err(),
            "a second pin at a taken path"
        );
        drop(again);
        NetNs::unpin(&pin).expect("unpin");
        assert!(!pin.exists());
        NetNs::unpin(&pin).expect("unpin twice");
        // The plain file a crash before the mount leaves is removed too.
        std::fs::write(&pin, b"").expect("write");
        NetNs::unpin(&pin).expect("unpin a plain file");
        assert!(!pin.exists());
    }
}
