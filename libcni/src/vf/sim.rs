//! A simulated PF for host-lane tests (feature `sim-pf`, never in release
//! builds). The CI kernel has no SR-IOV hardware, so each VF's PF-side table
//! lives in a JSON file next to the PF in the fake sysfs tree:
//!
//! - `<root>/bus/pci/devices/<pf>/sim-vf<N>.json`: VF N's state (`VfHwState`);
//!   absent means a fresh VF (`VfHwState::default()`).
//! - `<root>/bus/pci/devices/<pf>/sim-unsupported`: words naming what the
//!   simulated driver refuses, like real drivers do: `vlan`, `vlan_8021ad`,
//!   `mac`, `rate`, `min_tx_rate` (only values > 0, as igb), `spoofchk`,
//!   `trust`, `link_state`.
//! - `<root>/bus/pci/devices/<pf>/sim-calls.log`: one line per write, so tests
//!   can assert the order and content of PF-side calls.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use super::programmer::VfProgrammer;
use super::settings::{VfHwState, VfOp, VlanProto};
use crate::error::Error;
use crate::netlink::NetlinkError;
use crate::sysfs::{Sysfs, VfRef};

pub struct SimVfs {
    sysfs: Sysfs,
}

impl SimVfs {
    pub fn new(sysfs: Sysfs) -> SimVfs {
        SimVfs { sysfs }
    }

    fn pf_dir(&self, vf: &VfRef) -> PathBuf {
        self.sysfs.pci_device(&vf.pf.pci)
    }

    fn state_path(&self, vf: &VfRef) -> PathBuf {
        self.pf_dir(vf).join(format!("sim-vf{}.json", vf.index))
    }

    fn refuses(&self, vf: &VfRef, op: &VfOp) -> bool {
        let words = fs::read_to_string(self.pf_dir(vf).join("sim-unsupported")).unwrap_or_default();
        let has = |w: &str| words.split_whitespace().any(|x| x == w);
        match op {
            VfOp::Vlan(v) => has("vlan") || (v.proto == VlanProto::Dot1Ad && has("vlan_8021ad")),
            VfOp::Mac(_) => has("mac"),
            VfOp::Rate(r) => has("rate") || (r.min > 0 && has("min_tx_rate")),
            VfOp::SpoofChk(_) => has("spoofchk"),
            VfOp::Trust(_) => has("trust"),
            VfOp::LinkState(_) => has("link_state"),
        }
    }

    fn io_error(&self, what: String, e: impl std::fmt::Display) -> Error {
        Error::Internal(format!("simulated PF: {what}: {e}"))
    }
}

impl VfProgrammer for SimVfs {
    fn read(&self, vf: &VfRef) -> Result<VfHwState, Error> {
        let path = self.state_path(vf);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| self.io_error(format!("parse {}", path.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(VfHwState::default()),
            Err(e) => Err(self.io_error(format!("read {}", path.display()), e)),
        }
    }

    fn write(&self, vf: &VfRef, op: VfOp) -> Result<(), Error> {
        let log_line = format!("vf {} {op}\n", vf.index);
        let log = self.pf_dir(vf).join("sim-calls.log");
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| f.write_all(log_line.as_bytes()))
            .map_err(|e| self.io_error(format!("append {}", log.display()), e))?;
        if self.refuses(vf, &op) {
            return Err(NetlinkError::Kernel {
                op: format!("set VF {} {op} on PF {}", vf.index, vf.pf.name),
                errno: libc::EOPNOTSUPP,
                reason: Some("simulated PF driver does not support this".into()),
            }
            .into());
        }
        let mut state = self.read(vf)?;
        match op {
            VfOp::Vlan(v) => state.vlan = v,
            VfOp::Mac(m) => state.mac = m,
            VfOp::Rate(r) => state.rate = r,
            VfOp::SpoofChk(b) => state.spoofchk = b,
            VfOp::Trust(b) => state.trust = b,
            VfOp::LinkState(s) => state.link_state = s,
        }
        let path = self.state_path(vf);
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(&state)
            .map_err(|e| self.io_error("encode state".into(), e))?;
        fs::write(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| self.io_error(format!("write {}", path.display()), e))
    }
}
