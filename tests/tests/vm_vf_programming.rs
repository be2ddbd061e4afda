//! VF programming through libcni (not the plugin) against a real kernel PF
//! driver: netdevsim, inside the VM lane.
//!
//! netdevsim implements every PF-side VF attribute the suite programs (MAC,
//! VLAN with QoS and 802.1ad, spoofchk, trust, link state, min and max rate),
//! so each write goes through the kernel's rtnetlink VF code and a driver, and
//! is read back two ways: `NetlinkVfs::read` (our decoder) and `ip -d -j link
//! show`'s `vfinfo_list` (iproute2's). Both must equal what was written, with
//! every other attribute unchanged.
//!
//! The guest script tests/vm/netdevsim.sh creates the device first (`1 1` to
//! /sys/bus/netdevsim/new_device, 4 VFs) and runs this binary one test at a
//! time; `scripts/vm-lane/lane.sh` builds it with `--features vm-lane`.
//! Without that feature every test is reported as ignored, never passed.
//! netdevsim has no PCI VFs, so each `VfRef` is built by hand from the PF's
//! netdev name and the VF index (`NetlinkVfs` uses nothing else).

use std::process::Command;

use libcni::Error;
use libcni::ids::{IfName, MacAddr, PciAddr};
use libcni::netlink::RouteSocket;
use libcni::sysfs::{PfPort, Sysfs, VfRef};
use libcni::undo::Undo;
use libcni::vf::{
    self, LinkState, NetlinkVfs, TxRate, VfHwState, VfOp, VfProgrammer, VfSettings, Vlan, VlanProto,
};
use serde_json::Value;

/// The device tests/vm/netdevsim.sh creates, and its VF count.
const NSIM_DEVICE: &str = "netdevsim1";
const NUM_VFS: u32 = 4;

/// The netdevsim PF's netdev, from `<sysfs>/bus/netdevsim/devices/netdevsim1/net`.
fn nsim_pf() -> IfName {
    let sysfs = Sysfs::new("/sys");
    let net = sysfs
        .root()
        .join("bus/netdevsim/devices")
        .join(NSIM_DEVICE)
        .join("net");
    let mut names: Vec<String> = std::fs::read_dir(&net)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (tests/vm/netdevsim.sh creates the device before running this binary)",
                net.display()
            )
        })
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    let name = names
        .first()
        .unwrap_or_else(|| panic!("{} lists no netdev", net.display()));
    IfName::parse(name).expect("netdevsim PF name")
}

/// Any valid PCI address: `NetlinkVfs` only uses the PF's name and the index.
fn placeholder_pci() -> PciAddr {
    PciAddr::parse("0000:00:00.0").expect("pci")
}

fn vf_ref(pf: &IfName, index: u32) -> VfRef {
    VfRef {
        pci: placeholder_pci(),
        pf: PfPort {
            name: pf.clone(),
            pci: placeholder_pci(),
        },
        index,
        netdev: None,
        driver: None,
    }
}

fn programmer() -> NetlinkVfs {
    NetlinkVfs::new(RouteSocket::new().expect("rtnetlink socket"))
}

fn mac(s: &str) -> MacAddr {
    MacAddr::parse(s).expect("mac")
}

fn vlan(id: u16, qos: u8, proto: VlanProto) -> Vlan {
    Vlan { id, qos, proto }
}

/// VF `index` as `ip -d -j link show <pf>` reports it.
fn ip_vf_state(pf: &IfName, index: u32) -> VfHwState {
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", pf.as_str()])
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip -d -j link show {pf:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    let entry = links[0]["vfinfo_list"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| e["vf"].as_u64() == Some(u64::from(index)))
        })
        .unwrap_or_else(|| panic!("ip shows no VF {index} on {pf:?}: {links}"));
    parse_vfinfo(entry)
}

/// One `vfinfo_list` entry of iproute2's JSON (6.1): `address`, `vlan_list`
/// (`[{}]` without a VLAN; `protocol` only for 802.1ad), `rate.min_tx` and
/// `rate.max_tx`, `spoofchk`, `trust`, `link_state`.
fn parse_vfinfo(entry: &Value) -> VfHwState {
    let field = |v: &Value, what: &str| -> u64 {
        v.as_u64()
            .unwrap_or_else(|| panic!("vfinfo {what} is not a number: {entry}"))
    };
    let vlan_entry = &entry["vlan_list"][0];
    VfHwState {
        mac: MacAddr::parse(entry["address"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("vfinfo address: {e}: {entry}")),
        vlan: Vlan {
            id: vlan_entry["vlan"].as_u64().unwrap_or(0) as u16,
            qos: vlan_entry["qos"].as_u64().unwrap_or(0) as u8,
            proto: match vlan_entry["protocol"].as_str() {
                Some("802.1ad") => VlanProto::Dot1Ad,
                Some("802.1Q") | None => VlanProto::Dot1Q,
                Some(other) => panic!("unknown VLAN protocol {other}: {entry}"),
            },
        },
        rate: TxRate {
            min: field(&entry["rate"]["min_tx"], "rate.min_tx") as u32,
            max: field(&entry["rate"]["max_tx"], "rate.max_tx") as u32,
        },
        spoofchk: entry["spoofchk"]
            .as_bool()
            .unwrap_or_else(|| panic!("vfinfo spoofchk: {entry}")),
        trust: entry["trust"]
            .as_bool()
            .unwrap_or_else(|| panic!("vfinfo trust: {entry}")),
        link_state: entry["link_state"]
            .as_str()
            .and_then(LinkState::parse)
            .unwrap_or_else(|| panic!("vfinfo link_state: {entry}")),
        // Ethernet VFs (igb, netdevsim) have no GUIDs.
        node_guid: None,
        port_guid: None,
    }
}

/// What `state` becomes after `op`, every other attribute unchanged.
fn applied(state: &VfHwState, op: VfOp) -> VfHwState {
    let mut s = state.clone();
    match op {
        VfOp::Mac(m) => s.mac = m,
        VfOp::Vlan(v) => s.vlan = v,
        VfOp::Rate(r) => s.rate = r,
        VfOp::SpoofChk(b) => s.spoofchk = b,
        VfOp::Trust(b) => s.trust = b,
        VfOp::LinkState(l) => s.link_state = l,
        VfOp::NodeGuid(g) => s.node_guid = Some(g),
        VfOp::PortGuid(g) => s.port_guid = Some(g),
    }
    s
}

/// The kernel's errno inside a libcni error, through its context layers.
fn errno_of(e: &Error) -> Option<i32> {
    match e {
        Error::Netlink(n) => n.errno(),
        Error::Step { source, .. } | Error::RollbackFailed { source, .. } => errno_of(source),
        _ => None,
    }
}

/// One VF of the netdevsim PF, put back as the test found it when the test
/// ends (also when an assertion fails), so tests stay independent.
struct TestVf {
    pf: IfName,
    vf: VfRef,
    prog: NetlinkVfs,
    orig: VfHwState,
}

impl TestVf {
    fn new(index: u32) -> TestVf {
        assert!(index < NUM_VFS);
        let pf = nsim_pf();
        let vf = vf_ref(&pf, index);
        let prog = programmer();
        let orig = prog
            .read(&vf)
            .unwrap_or_else(|e| panic!("read VF {index} of {pf:?}: {e}"));
        assert_eq!(
            ip_vf_state(&pf, index),
            orig,
            "NetlinkVfs::read and ip disagree on VF {index} before the test"
        );
        TestVf { pf, vf, prog, orig }
    }

    fn read(&self) -> VfHwState {
        self.prog
            .read(&self.vf)
            .unwrap_or_else(|e| panic!("read VF {}: {e}", self.vf.index))
    }

    /// Writes `op`; then both readers must report exactly the state before
    /// with `op` applied.
    fn write_and_verify(&self, op: VfOp) {
        let want = applied(&self.read(), op);
        self.prog
            .write(&self.vf, op)
            .unwrap_or_else(|e| panic!("write VF {} {op}: {e}", self.vf.index));
        let via_netlink = self.read();
        let via_ip = ip_vf_state(&self.pf, self.vf.index);
        assert!(
            op.is_reflected_in(&via_netlink),
            "{op} not reflected: {via_netlink:?}"
        );
        assert_eq!(
            via_netlink, want,
            "after {op}: NetlinkVfs::read differs from the expected state"
        );
        assert_eq!(
            via_ip, want,
            "after {op}: ip -d -j link show differs from the expected state"
        );
    }

    /// Writes `ops` in turn, verifying each, then puts the attribute back.
    fn cycle(&self, ops: &[VfOp]) {
        for op in ops {
            self.write_and_verify(*op);
        }
        if let Some(last) = ops.last() {
            self.write_and_verify(last.value_in(&self.orig));
        }
        assert_eq!(self.read(), self.orig, "VF {} not back", self.vf.index);
    }
}

impl Drop for TestVf {
    fn drop(&mut self) {
        let all = VfSettings {
            vlan: Some(self.orig.vlan),
            mac: Some(self.orig.mac),
            rate: Some(self.orig.rate),
            spoofchk: Some(self.orig.spoofchk),
            trust: Some(self.orig.trust),
            link_state: Some(self.orig.link_state),
            guid: None,
        };
        // Best effort: a failing test must not leave the VF changed for the next.
        let _ = vf::restore(&self.prog, &self.vf, &all, &self.orig);
    }
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn mac_is_written_and_read_back() {
    let t = TestVf::new(0);
    t.cycle(&[
        VfOp::Mac(mac("02:11:22:33:44:55")),
        VfOp::Mac(mac("02:aa:bb:cc:dd:ee")),
    ]);
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn vlan_8021q_with_qos_is_written_and_read_back() {
    let t = TestVf::new(1);
    t.cycle(&[
        VfOp::Vlan(vlan(100, 3, VlanProto::Dot1Q)),
        VfOp::Vlan(vlan(4094, 7, VlanProto::Dot1Q)),
        VfOp::Vlan(vlan(0, 0, VlanProto::Dot1Q)),
        VfOp::Vlan(vlan(5, 0, VlanProto::Dot1Q)),
    ]);
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn vlan_8021ad_is_written_and_read_back() {
    let t = TestVf::new(2);
    t.cycle(&[
        VfOp::Vlan(vlan(200, 2, VlanProto::Dot1Ad)),
        VfOp::Vlan(vlan(300, 0, VlanProto::Dot1Ad)),
        // Back to 802.1Q on the same VF: the protocol must follow.
        VfOp::Vlan(vlan(300, 0, VlanProto::Dot1Q)),
        VfOp::Vlan(vlan(400, 5, VlanProto::Dot1Ad)),
    ]);
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn spoofchk_on_and_off_are_written_and_read_back() {
    let t = TestVf::new(3);
    let flipped = !t.orig.spoofchk;
    t.cycle(&[
        VfOp::SpoofChk(flipped),
        VfOp::SpoofChk(!flipped),
        VfOp::SpoofChk(true),
        VfOp::SpoofChk(false),
    ]);
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn trust_on_and_off_are_written_and_read_back() {
    let t = TestVf::new(0);
    t.cycle(&[VfOp::Trust(true), VfOp::Trust(false), VfOp::Trust(true)]);
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn link_state_auto_enable_disable_are_written_and_read_back() {
    let t = TestVf::new(1);
    t.cycle(&[
        VfOp::LinkState(LinkState::Enable),
        VfOp::LinkState(LinkState::Disable),
        VfOp::LinkState(LinkState::Auto),
        VfOp::LinkState(LinkState::Disable),
    ]);
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn min_and_max_tx_rates_are_written_and_read_back() {
    let t = TestVf::new(2);
    t.cycle(&[
        VfOp::Rate(TxRate { min: 10, max: 100 }),
        VfOp::Rate(TxRate { min: 0, max: 1000 }),
        // max 0 = no limit, so any min is valid (README: min <= max unless max is 0).
        VfOp::Rate(TxRate { min: 50, max: 0 }),
        VfOp::Rate(TxRate { min: 0, max: 0 }),
        VfOp::Rate(TxRate { min: 25, max: 25 }),
    ]);
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn every_attribute_of_every_vf_is_independent() {
    // Writing one VF leaves the other VFs of the PF untouched.
    let t = TestVf::new(3);
    let others: Vec<VfHwState> = (0..3).map(|i| ip_vf_state(&t.pf, i)).collect();
    t.write_and_verify(VfOp::Mac(mac("02:33:33:33:33:33")));
    t.write_and_verify(VfOp::Vlan(vlan(33, 3, VlanProto::Dot1Ad)));
    t.write_and_verify(VfOp::Rate(TxRate { min: 3, max: 33 }));
    t.write_and_verify(VfOp::Trust(!t.orig.trust));
    t.write_and_verify(VfOp::SpoofChk(!t.orig.spoofchk));
    t.write_and_verify(VfOp::LinkState(LinkState::Enable));
    for (i, before) in others.iter().enumerate() {
        assert_eq!(
            &ip_vf_state(&t.pf, i as u32),
            before,
            "VF {i} changed by writes to VF 3"
        );
    }
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn program_then_restore_round_trips_to_the_original_state() {
    let t = TestVf::new(3);
    let want = VfSettings {
        vlan: Some(vlan(100, 3, VlanProto::Dot1Q)),
        mac: Some(mac("02:00:00:00:00:21")),
        rate: Some(TxRate { min: 10, max: 100 }),
        spoofchk: Some(!t.orig.spoofchk),
        trust: Some(!t.orig.trust),
        link_state: Some(LinkState::Enable),
        guid: None,
    };
    let mut undo = Undo::new();
    vf::program(&t.prog, &t.vf, &want, &t.orig, &mut undo).expect("program every attribute");
    undo.commit();
    let programmed = t.read();
    assert!(
        want.mismatches(&programmed).is_empty(),
        "after program: {:?}",
        want.mismatches(&programmed)
    );
    assert_eq!(
        ip_vf_state(&t.pf, 3),
        programmed,
        "ip disagrees after program"
    );

    let errors = vf::restore(&t.prog, &t.vf, &want, &t.orig);
    assert!(errors.is_empty(), "restore failed: {errors:?}");
    assert_eq!(t.read(), t.orig, "NetlinkVfs::read after restore");
    assert_eq!(ip_vf_state(&t.pf, 3), t.orig, "ip after restore");

    // 802.1ad too, and a restore is idempotent.
    let want = VfSettings {
        vlan: Some(vlan(200, 1, VlanProto::Dot1Ad)),
        ..Default::default()
    };
    let mut undo = Undo::new();
    vf::program(&t.prog, &t.vf, &want, &t.orig, &mut undo).expect("program 802.1ad");
    undo.commit();
    assert_eq!(ip_vf_state(&t.pf, 3).vlan, vlan(200, 1, VlanProto::Dot1Ad));
    for _ in 0..2 {
        let errors = vf::restore(&t.prog, &t.vf, &want, &t.orig);
        assert!(errors.is_empty(), "restore failed: {errors:?}");
        assert_eq!(ip_vf_state(&t.pf, 3), t.orig, "ip after restore");
    }
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn a_refused_write_rolls_back_the_earlier_ones() {
    // netdevsim refuses a multicast VF MAC (EINVAL). In ADD order the VLAN is
    // written before the MAC: the rollback must undo it.
    let t = TestVf::new(0);
    let want = VfSettings {
        vlan: Some(vlan(123, 4, VlanProto::Dot1Q)),
        mac: Some(mac("01:00:5e:00:00:01")),
        trust: Some(!t.orig.trust),
        ..Default::default()
    };
    let mut undo = Undo::new();
    let err = vf::program(&t.prog, &t.vf, &want, &t.orig, &mut undo)
        .expect_err("a multicast MAC must be refused");
    assert_eq!(errno_of(&err), Some(libc::EINVAL), "errno of {err}");
    assert!(
        err.to_string().contains("mac"),
        "error names the key: {err}"
    );
    assert_eq!(
        ip_vf_state(&t.pf, 0).vlan,
        vlan(123, 4, VlanProto::Dot1Q),
        "the VLAN was written before the refusal"
    );
    let err = undo.rollback(err);
    assert!(
        !matches!(err, Error::RollbackFailed { .. }),
        "rollback failed: {err}"
    );
    assert_eq!(t.read(), t.orig, "NetlinkVfs::read after rollback");
    assert_eq!(ip_vf_state(&t.pf, 0), t.orig, "ip after rollback");
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn kernel_refusals_keep_their_errno_and_change_nothing() {
    let t = TestVf::new(1);
    // rtnetlink itself refuses a QoS above 7.
    let err = t
        .prog
        .write(&t.vf, VfOp::Vlan(vlan(5, 8, VlanProto::Dot1Q)))
        .expect_err("qos 8");
    assert_eq!(errno_of(&err), Some(libc::EINVAL), "qos 8: {err}");
    assert_eq!(t.read(), t.orig);

    // A VF index the PF does not have: writes are refused, reads say so.
    let missing = vf_ref(&t.pf, NUM_VFS);
    let err = t
        .prog
        .write(&missing, VfOp::Trust(true))
        .expect_err("VF beyond sriov_numvfs");
    assert_eq!(errno_of(&err), Some(libc::EINVAL), "missing VF: {err}");
    let err = t.prog.read(&missing).expect_err("read a missing VF");
    assert_eq!(err.code(), libcni::error::code::DEVICE, "{err}");
    assert_eq!(ip_vf_state(&t.pf, 1), t.orig);
}
