//! A simulated RDMA subsystem for host-lane tests (feature `sim-pf`, never in
//! release builds): the CI kernel has no RDMA devices. State lives in
//! `<sysfs root>/sim-rdma.json`:
//!
//! ```text
//! {"mode": "exclusive", "devices": {"mlx5_3": {"netns": "<dev>:<ino>", "path": "/var/run/netns/x"}}}
//! ```
//!
//! A device without an entry is in the host. Like the kernel in exclusive
//! mode, a device whose netns is gone is back in the host.

use std::fs;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::{NetnsMode, RdmaControl};
use crate::error::Error;
use crate::netns::NetNs;

pub struct SimRdma {
    file: PathBuf,
}

impl SimRdma {
    pub fn new(sysfs_root: &std::path::Path) -> SimRdma {
        SimRdma {
            file: sysfs_root.join("sim-rdma.json"),
        }
    }

    fn load(&self) -> Result<Value, Error> {
        match fs::read(&self.file) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Internal(format!("simulated RDMA: {e}"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(json!({"mode": "exclusive", "devices": {}}))
            }
            Err(e) => Err(Error::Internal(format!("simulated RDMA: {e}"))),
        }
    }

    /// Serialises the read-modify-write of `move_device` across processes
    /// (the kernel's moves are atomic; concurrent soak tests run many).
    fn lock(&self) -> Result<fs::File, Error> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.file.with_extension("lock"))
            .map_err(|e| Error::Internal(format!("simulated RDMA lock: {e}")))?;
        f.lock()
            .map_err(|e| Error::Internal(format!("simulated RDMA lock: {e}")))?;
        Ok(f)
    }

    fn save(&self, v: &Value) -> Result<(), Error> {
        let tmp = self
            .file
            .with_extension(format!("json.tmp.{}", std::process::id()));
        fs::write(&tmp, v.to_string())
            .and_then(|()| fs::rename(&tmp, &self.file))
            .map_err(|e| Error::Internal(format!("simulated RDMA: {e}")))
    }

    /// The netns id the device is in; None = the host.
    fn location(v: &Value, name: &str) -> Option<String> {
        let entry = &v["devices"][name];
        let id = entry["netns"].as_str()?;
        let path = entry["path"].as_str()?;
        // Gone (or replaced) netns: the kernel handed the device back.
        let alive = NetNs::open(std::path::Path::new(path)).is_ok_and(|ns| ns.id() == id);
        alive.then(|| id.to_string())
    }
}

impl RdmaControl for SimRdma {
    fn netns_mode(&self) -> Result<NetnsMode, Error> {
        Ok(match self.load()?["mode"].as_str() {
            Some("shared") => NetnsMode::Shared,
            _ => NetnsMode::Exclusive,
        })
    }

    fn move_device(&self, name: &str, from: &NetNs, to: &NetNs) -> Result<(), Error> {
        let _lock = self.lock()?;
        let mut v = self.load()?;
        let host = NetNs::current()?.id();
        let here = SimRdma::location(&v, name).unwrap_or(host.clone());
        if here != from.id() {
            return Err(Error::Device {
                device: name.to_string(),
                reason: format!(
                    "no such RDMA device in the {} network namespace",
                    from.name()
                ),
            });
        }
        if to.id() == host {
            if let Some(devs) = v["devices"].as_object_mut() {
                devs.remove(name);
            }
        } else {
            v["devices"][name] = json!({"netns": to.id(), "path": to.name()});
        }
        self.save(&v)
    }

    fn is_in(&self, name: &str, ns: &NetNs) -> Result<bool, Error> {
        let v = self.load()?;
        let host = NetNs::current()?.id();
        Ok(SimRdma::location(&v, name).unwrap_or(host) == ns.id())
    }
}
