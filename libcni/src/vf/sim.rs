//! A simulated PF for host-lane tests (feature `sim-pf`, never in release
//! builds). The CI kernel has no SR-IOV hardware, so each VF's PF-side table
//! lives in a JSON file next to the PF in the fake sysfs tree:
//!
//! - `<root>/bus/pci/devices/<pf>/sim-vf<N>.json`: VF N's state (`VfHwState`);
//!   absent means a fresh VF (`VfHwState::default()`). An optional `ownMac`
//!   models igb: the PF reports the VF's own MAC until an admin MAC is set,
//!   and again once the admin MAC is cleared by writing all zeros.
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
use crate::ids::MacAddr;
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
            VfOp::NodeGuid(_) | VfOp::PortGuid(_) => has("guid"),
        }
    }

    /// The errno a real driver (igb) answers a refused write with.
    fn errno(op: &VfOp) -> i32 {
        match op {
            VfOp::Vlan(v) if v.proto == VlanProto::Dot1Ad => libc::EPROTONOSUPPORT,
            VfOp::Rate(r) if r.min > 0 => libc::EINVAL,
            _ => libc::EOPNOTSUPP,
        }
    }

    fn io_error(&self, what: String, e: impl std::fmt::Display) -> Error {
        Error::Internal(format!("simulated PF: {what}: {e}"))
    }
}

impl SimVfs {
    /// The VF's state and, if the test gave one, the VF's own MAC.
    fn read_file(&self, vf: &VfRef) -> Result<(VfHwState, Option<MacAddr>), Error> {
        let path = self.state_path(vf);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((VfHwState::default(), None));
            }
            Err(e) => return Err(self.io_error(format!("read {}", path.display()), e)),
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.io_error(format!("parse {}", path.display()), e))?;
        let own = value
            .get("ownMac")
            .and_then(|m| m.as_str())
            .and_then(|m| MacAddr::parse(m).ok());
        let state = serde_json::from_value(value)
            .map_err(|e| self.io_error(format!("parse {}", path.display()), e))?;
        Ok((state, own))
    }
}

impl VfProgrammer for SimVfs {
    fn read(&self, vf: &VfRef) -> Result<VfHwState, Error> {
        self.read_file(vf).map(|(state, _)| state)
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
                errno: SimVfs::errno(&op),
                reason: Some("simulated PF driver does not support this".into()),
            }
            .into());
        }
        let (mut state, own) = self.read_file(vf)?;
        match op {
            VfOp::Vlan(v) => state.vlan = v,
            VfOp::Mac(m) if m.is_zero() => state.mac = own.unwrap_or(m),
            VfOp::Mac(m) => state.mac = m,
            VfOp::Rate(r) => state.rate = r,
            VfOp::SpoofChk(b) => state.spoofchk = b,
            VfOp::Trust(b) => state.trust = b,
            VfOp::LinkState(s) => state.link_state = s,
            VfOp::NodeGuid(g) => state.node_guid = Some(g),
            VfOp::PortGuid(g) => state.port_guid = Some(g),
        }
        let path = self.state_path(vf);
        let tmp = path.with_extension("json.tmp");
        let mut record =
            serde_json::to_value(&state).map_err(|e| self.io_error("encode state".into(), e))?;
        if let Some(own) = own {
            record["ownMac"] = serde_json::json!(own);
        }
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| self.io_error("encode state".into(), e))?;
        fs::write(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| self.io_error(format!("write {}", path.display()), e))
    }
}
