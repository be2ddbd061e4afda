//! Per-boot state: records that describe kernel objects which do not outlive
//! a reboot (a VF's netns and PF settings, an RDMA device's namespace, a
//! pod's routes) need to survive a killed plugin, not a power loss.
//!
//! A rename is atomic for every process on the machine whether or not the
//! file was fsynced; only a kernel crash or power loss can lose or tear an
//! unsynced file, and after either the pods it described are gone too. So a
//! per-boot directory writes its records without fsync (the fsyncs were the
//! largest cost of a pod's ADD above the kernel's own work), and carries a
//! marker, `.boot_id`, written durably once per boot before any record. A
//! marker from another boot means the records were written then, possibly
//! torn by the crash that ended it: they are swept before anyone reads them.
//! Without the sweep a torn record would fail every DEL of its pod, and a
//! stale VF owner would keep its VF busy until a netns check.

use std::fs;
use std::io;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{FileLock, StateDir, StateError};

const MARKER: &str = ".boot_id";
const MARKER_LOCK: &str = ".boot_id.lock";
const MARKER_VERSION: u32 = 1;
/// First use in a boot sweeps at most a directory of records: seconds.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The kernel's random id of this boot (`/proc/sys/kernel/random/boot_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootId(String);

impl BootId {
    /// This boot's id; None where /proc does not give one (then state is
    /// kept durable, as it always can be).
    pub fn current() -> Option<BootId> {
        let text = fs::read_to_string(BOOT_ID_PATH).ok()?;
        BootId::parse(text.trim())
    }

    /// A boot id in the kernel's form: a lowercase UUID.
    pub fn parse(text: &str) -> Option<BootId> {
        let ok = text.len() == 36
            && text.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_digit() || ('a'..='f').contains(&c),
            });
        ok.then(|| BootId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How long what a `StateDir` records must last.
#[derive(Clone, Debug)]
pub enum Lifetime {
    /// Survives power loss: every write is fsynced, file and directory.
    Durable,
    /// Survives any process's death but not the boot: no fsync.
    Boot(BootId),
}

impl Lifetime {
    /// `Boot` with this boot's id, or `Durable` where the kernel gives none.
    pub fn this_boot() -> Lifetime {
        match BootId::current() {
            Some(id) => Lifetime::Boot(id),
            None => {
                tracing::debug!("{BOOT_ID_PATH} unreadable: state is written durably");
                Lifetime::Durable
            }
        }
    }

    pub(super) fn is_durable(&self) -> bool {
        matches!(self, Lifetime::Durable)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    version: u32,
    #[serde(rename = "bootID")]
    boot_id: String,
}

/// What the marker says about the records beside it.
enum Recorded {
    ThisBoot,
    /// No marker: the records (if any) were written durably by a build
    /// before per-boot state, in this boot or an earlier one; keep them.
    Unmarked,
    /// Another boot's records, or a marker we never write (tampered): sweep.
    OtherBoot(String),
}

fn recorded(dir: &StateDir, boot: &BootId) -> Result<Recorded, StateError> {
    match dir.read_json::<Marker>(MARKER, MARKER_VERSION) {
        Ok(None) => Ok(Recorded::Unmarked),
        Ok(Some(m)) if m.boot_id == boot.as_str() => Ok(Recorded::ThisBoot),
        Ok(Some(m)) => Ok(Recorded::OtherBoot(m.boot_id)),
        Err(StateError::Corrupt { .. } | StateError::UnsupportedVersion { .. }) => {
            Ok(Recorded::OtherBoot("unreadable".into()))
        }
        Err(e) => Err(e),
    }
}

/// Makes `dir` this boot's: on the first use in a boot, sweeps the records
/// of the boot before and stamps the directory durably. Every later use is
/// one small read.
pub(super) fn claim(dir: &StateDir, boot: &BootId) -> Result<(), StateError> {
    if matches!(recorded(dir, boot)?, Recorded::ThisBoot) {
        return Ok(());
    }
    let _lock = FileLock::acquire(dir, MARKER_LOCK, CLAIM_TIMEOUT)?;
    match recorded(dir, boot)? {
        Recorded::ThisBoot => return Ok(()),
        Recorded::Unmarked => {}
        Recorded::OtherBoot(old) => sweep(dir, &old)?,
    }
    let marker = Marker {
        version: MARKER_VERSION,
        boot_id: boot.as_str().to_string(),
    };
    let bytes = serde_json::to_vec(&marker).map_err(|e| StateError::Corrupt {
        path: dir.path().join(MARKER),
        msg: e.to_string(),
    })?;
    // Durable, and after the sweep: a power loss before this lands leaves
    // the old marker, and the next boot sweeps again.
    dir.replace_durably(MARKER, &[&bytes])
}

/// Removes the records of another boot. A record modified since this boot
/// began is kept: a build without per-boot state (a downgrade and upgrade
/// within one boot) wrote it, durably, for a pod that may be alive.
fn sweep(dir: &StateDir, old: &str) -> Result<(), StateError> {
    let booted = boot_time();
    let mut swept = 0usize;
    for name in dir.list()? {
        let path = dir.entry(&name)?;
        let modified = fs::symlink_metadata(&path).and_then(|m| m.modified());
        match (modified, booted) {
            (Ok(m), Some(b)) if m >= b => {
                tracing::warn!(file = %path.display(), "keeping a record written in this boot by a build without per-boot state");
                continue;
            }
            (Err(e), _) if e.kind() == io::ErrorKind::NotFound => continue,
            _ => {}
        }
        match fs::remove_file(&path) {
            Ok(()) => swept += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Io {
                    op: "remove a record of an earlier boot",
                    path,
                    source,
                });
            }
        }
    }
    if swept > 0 {
        tracing::info!(dir = %dir.path().display(), previous_boot = old, records = swept,
            "removed the records of an earlier boot: the pods they described did not survive it");
    }
    Ok(())
}

/// When this boot began, on the wall clock file times use.
fn boot_time() -> Option<SystemTime> {
    let up = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let up = Duration::new(up.tv_sec().try_into().ok()?, up.tv_nsec().try_into().ok()?);
    SystemTime::now().checked_sub(up)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const OLD: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const NEW: &str = "11111111-2222-3333-4444-555555555555";

    fn boot(id: &str) -> Lifetime {
        Lifetime::Boot(BootId::parse(id).expect("valid id"))
    }

    fn age(path: &std::path::Path) {
        // A file last written a day ago: before any test machine's boot.
        let day_ago = SystemTime::now() - Duration::from_secs(86_400);
        let f = fs::File::options().write(true).open(path).expect("open");
        f.set_modified(day_ago).expect("set mtime");
    }

    #[test]
    fn boot_ids_are_validated() {
        assert!(BootId::parse(OLD).is_some());
        for bad in [
            "",
            "x",
            "../../etc/passwd",
            &OLD.to_uppercase(),
            &format!("{OLD}0"),
        ] {
            assert!(BootId::parse(bad).is_none(), "{bad:?}");
        }
        let this = BootId::current().expect("Linux gives a boot id");
        assert_eq!(this.as_str().len(), 36);
    }

    #[test]
    fn a_boot_stamps_its_directory_and_keeps_its_records() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open_with(tmp.path(), &boot(NEW)).expect("open");
        dir.write("a.json", b"{}").expect("write");
        let marker: Marker = dir.read_json(MARKER, 1).expect("read").expect("marker");
        assert_eq!(marker.boot_id, NEW);
        let again = StateDir::open_with(tmp.path(), &boot(NEW)).expect("reopen");
        assert_eq!(again.list().expect("list"), ["a.json"]);
        let mode = fs::metadata(tmp.path().join(MARKER)).expect("meta").mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_next_boot_sweeps_the_records_of_the_last_even_torn_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open_with(tmp.path(), &boot(OLD)).expect("open");
        dir.write("whole.json", br#"{"version":1}"#).expect("write");
        // What a power loss can leave of an unsynced record.
        fs::write(tmp.path().join("torn.json"), b"").expect("torn");
        fs::create_dir(tmp.path().join("sub")).expect("subdir");
        for f in ["whole.json", "torn.json"] {
            age(&tmp.path().join(f));
        }
        let dir = StateDir::open_with(tmp.path(), &boot(NEW)).expect("next boot");
        assert_eq!(dir.list().expect("list"), Vec::<String>::new());
        assert!(
            tmp.path().join("sub").is_dir(),
            "subdirectories sweep themselves"
        );
        let marker: Marker = dir.read_json(MARKER, 1).expect("read").expect("marker");
        assert_eq!(marker.boot_id, NEW);
    }

    #[test]
    fn records_written_in_this_boot_by_an_older_build_are_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        StateDir::open_with(tmp.path(), &boot(OLD)).expect("open");
        // Written now, by a build that does not stamp: the pod may be alive.
        fs::write(tmp.path().join("fresh.json"), b"{}").expect("write");
        let dir = StateDir::open_with(tmp.path(), &boot(NEW)).expect("next");
        assert_eq!(dir.list().expect("list"), ["fresh.json"]);
    }

    #[test]
    fn an_unmarked_directory_keeps_its_records() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("old-build.json"), b"{}").expect("write");
        age(&tmp.path().join("old-build.json"));
        let dir = StateDir::open_with(tmp.path(), &boot(NEW)).expect("open");
        assert_eq!(dir.list().expect("list"), ["old-build.json"]);
        assert!(tmp.path().join(MARKER).is_file());
    }

    #[test]
    fn a_garbled_marker_counts_as_another_boot() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join(MARKER), b"\0\0\0").expect("marker");
        fs::write(tmp.path().join("r.json"), b"{").expect("write");
        age(&tmp.path().join("r.json"));
        let dir = StateDir::open_with(tmp.path(), &boot(NEW)).expect("open");
        assert!(dir.list().expect("list").is_empty());
    }

    #[test]
    fn a_symlinked_marker_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("elsewhere");
        fs::write(&target, b"x").expect("write");
        let d = tmp.path().join("d");
        fs::create_dir(&d).expect("mkdir");
        std::os::unix::fs::symlink(&target, d.join(MARKER)).expect("symlink");
        assert!(matches!(
            StateDir::open_with(&d, &boot(NEW)),
            Err(StateError::Symlink { .. })
        ));
        assert_eq!(fs::read(&target).expect("read"), b"x");
    }
}
