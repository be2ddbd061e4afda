//! libcni's RDMA netlink (`libcni::rdma::RdmaSocket`) against the real
//! kernel, inside the VM lane: soft-RoCE (rdma_rxe) on a veth.
//!
//! tests/vm/rxe.sh loads rdma_rxe, creates `rxe0` on `veth0` and runs this
//! binary one test at a time (`scripts/vm-lane/lane.sh` builds it with
//! `--features vm-lane`; without it every test is ignored, never passed).
//! Every test starts and ends with the subsystem in the mode it found and no
//! extra network namespace, since the kernel refuses to switch modes while
//! one exists. What is compared: our socket against iproute2's `rdma` tool.

use std::process::Command;
use std::time::{Duration, Instant};

use libcni::netns::NetNs;
use libcni::rdma::{NetnsMode, RdmaDevice, RdmaError, RdmaSocket};
use serde_json::Value;

/// What tests/vm/rxe.sh creates.
const RXE: &str = "rxe0";
const NETDEV: &str = "veth0";

fn rdma(args: &[&str]) -> String {
    let out = Command::new("rdma").args(args).output().expect("run rdma");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rdma {args:?}: {err}");
    text
}

fn rdma_json(args: &[&str]) -> Vec<Value> {
    let text = rdma(&[&["-j"], args].concat());
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("rdma -j {args:?}: {e}: {text}"))
}

/// `rdma system show` prints `netns shared copy-on-fork on`.
fn tool_mode() -> NetnsMode {
    let text = rdma(&["system", "show"]);
    let mut words = text.split_whitespace();
    match words.by_ref().skip_while(|w| *w != "netns").nth(1) {
        Some("shared") => NetnsMode::Shared,
        Some("exclusive") => NetnsMode::Exclusive,
        other => panic!("rdma system show: no netns mode ({other:?}) in {text:?}"),
    }
}

fn sock() -> RdmaSocket {
    RdmaSocket::new().expect("RDMA netlink socket")
}

fn other(mode: NetnsMode) -> NetnsMode {
    match mode {
        NetnsMode::Shared => NetnsMode::Exclusive,
        NetnsMode::Exclusive => NetnsMode::Shared,
    }
}

/// Sets the mode, retrying while a deleted netns is still being cleaned up
/// (the kernel removes it from its list asynchronously). Returns the retries.
fn set_mode_eventually(mode: NetnsMode) -> u32 {
    let start = Instant::now();
    for retries in 0.. {
        match sock().set_netns_mode(mode) {
            Ok(()) => return retries,
            Err(e)
                if e.errno() == Some(libc::EBUSY) && start.elapsed() < Duration::from_secs(20) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("set_netns_mode({mode:?}) after {retries} retries: {e}"),
        }
    }
    unreachable!()
}

/// Restores the mode a test found, even when it fails.
struct RestoreMode(NetnsMode);
impl Drop for RestoreMode {
    fn drop(&mut self) {
        let retries = set_mode_eventually(self.0);
        eprintln!("restored netns mode {:?} ({retries} EBUSY retries)", self.0);
    }
}

fn node_guid(g: u64) -> String {
    let w = |s: u32| (g >> s) & 0xffff;
    format!("{:04x}:{:04x}:{:04x}:{:04x}", w(48), w(32), w(16), w(0))
}

fn rxe(sock: &RdmaSocket) -> RdmaDevice {
    let dev = sock.device_by_name(RXE).expect("device_by_name");
    dev.unwrap_or_else(|| panic!("{RXE} is not visible (tests/vm/rxe.sh creates it)"))
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn netns_mode_matches_rdma_system_show() {
    let mode = sock().netns_mode().expect("netns_mode");
    assert_eq!(mode, tool_mode());
    eprintln!("netns mode: {mode:?} (rdma system show agrees)");
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn set_netns_mode_round_trips() {
    let s = sock();
    let initial = s.netns_mode().expect("netns_mode");
    let _restore = RestoreMode(initial);
    for mode in [other(initial), other(initial), initial] {
        // The second time sets the current mode: a no-op the kernel accepts.
        s.set_netns_mode(mode).expect("set_netns_mode");
        assert_eq!(s.netns_mode().expect("netns_mode"), mode);
        assert_eq!(tool_mode(), mode, "rdma system show after setting {mode:?}");
    }
    eprintln!("{initial:?} -> {:?} -> {initial:?}: ok", other(initial));
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn switching_mode_while_another_netns_exists_is_ebusy() {
    let s = sock();
    let initial = s.netns_mode().expect("netns_mode");
    let _restore = RestoreMode(initial);
    let ns = NetNs::temporary().expect("netns");
    s.set_netns_mode(initial)
        .expect("setting the current mode is a no-op");
    let err = s
        .set_netns_mode(other(initial))
        .expect_err("switch with a netns");
    eprintln!("switch to {:?} with a netns: {err}", other(initial));
    match &err {
        RdmaError::Kernel { errno, .. } => assert_eq!(*errno, libc::EBUSY, "{err}"),
        _ => panic!("want RdmaError::Kernel(EBUSY), got {err:?}"),
    }
    assert_eq!(s.netns_mode().expect("netns_mode"), initial);
    drop(ns);
    let retries = set_mode_eventually(other(initial));
    eprintln!("after the netns is dropped: switched with {retries} EBUSY retries");
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn devices_match_rdma_dev_and_link_show() {
    let s = sock();
    let devices = s.devices().expect("devices");
    eprintln!("devices(): {devices:?}");
    let tool_devs = rdma_json(&["dev", "show"]);
    let tool_links = rdma_json(&["link", "show"]);
    assert_eq!(
        devices.len(),
        tool_devs.len(),
        "rdma dev show: {tool_devs:?}"
    );
    for dev in &devices {
        let t = tool_devs.iter().find(|d| d["ifname"] == dev.name.as_str());
        let t = t.unwrap_or_else(|| panic!("{} not in rdma dev show", dev.name));
        assert_eq!(t["ifindex"], dev.index, "index of {}", dev.name);
        let guid = dev.node_guid.map(node_guid);
        assert_eq!(
            t["node_guid"].as_str(),
            guid.as_deref(),
            "GUID of {}",
            dev.name
        );
        let links: Vec<_> = tool_links
            .iter()
            .filter(|l| l["ifname"] == dev.name.as_str())
            .collect();
        assert_eq!(
            links.len(),
            dev.ports.len(),
            "ports of {}: {links:?}",
            dev.name
        );
        for (l, p) in links.iter().zip(&dev.ports) {
            assert_eq!(l["port"], p.index);
            assert_eq!(l["netdev"].as_str(), p.netdev_name.as_deref());
            assert_eq!(l["netdev_index"].as_u64(), p.netdev_index.map(u64::from));
        }
    }
    let dev = rxe(&s);
    assert!(devices.contains(&dev), "device_by_name({RXE}) = {dev:?}");
    let ifindex: u32 = std::fs::read_to_string(format!("/sys/class/net/{NETDEV}/ifindex"))
        .expect("veth ifindex")
        .trim()
        .parse()
        .expect("ifindex");
    assert_eq!(dev.ports.len(), 1, "{dev:?}");
    assert_eq!(dev.ports[0].netdev_name.as_deref(), Some(NETDEV));
    assert_eq!(dev.ports[0].netdev_index, Some(ifindex));
    let sysfs_guid = std::fs::read_to_string(format!("/sys/class/infiniband/{RXE}/node_guid"));
    assert_eq!(
        sysfs_guid.expect("sysfs node_guid").trim(),
        node_guid(dev.node_guid.expect("guid"))
    );
    assert_eq!(s.device_by_name("nosuchdev0").expect("lookup"), None);
}

/// The move of rxe0 into a fresh netns is refused with EOPNOTSUPP, and rxe0
/// stays in init_net with its port and netdev.
fn move_is_refused(mode: NetnsMode) {
    let s = sock();
    let initial = s.netns_mode().expect("netns_mode");
    let _restore = RestoreMode(initial);
    set_mode_eventually(mode); // before any netns exists
    let before = rxe(&s);
    let ns = NetNs::temporary().expect("netns");
    let err = s
        .move_to_netns(&before, std::os::fd::AsFd::as_fd(&ns))
        .expect_err("move of rxe");
    eprintln!("{mode:?} mode: {err}");
    match &err {
        RdmaError::Kernel { errno, .. } => assert_eq!(*errno, libc::EOPNOTSUPP, "{err}"),
        _ => panic!("want RdmaError::Kernel(EOPNOTSUPP), got {err:?}"),
    }
    assert_eq!(rxe(&s), before, "{RXE} after the refused move");
    let inside = ns
        .run(|| RdmaSocket::new().and_then(|s| s.devices()))
        .expect("run in netns");
    let inside = inside.expect("devices() in the new netns");
    eprintln!("devices() inside the new netns: {inside:?}");
    match mode {
        // Exclusive: rxe0 belongs to init_net only, so the new netns sees nothing.
        NetnsMode::Exclusive => assert!(inside.is_empty(), "{inside:?}"),
        // Shared: visible everywhere, but its netdev is in init_net only.
        NetnsMode::Shared => {
            let d = inside
                .iter()
                .find(|d| d.name == RXE)
                .expect("shared: visible");
            assert_eq!(
                (d.index, d.ports[0].netdev_index),
                (before.index, None),
                "{d:?}"
            );
        }
    }
    drop(ns);
}

#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn move_rxe_is_eopnotsupp_in_shared_mode() {
    move_is_refused(NetnsMode::Shared);
}

/// Exclusive mode is where a move can succeed: EOPNOTSUPP here is rxe's own
/// refusal (the driver lacks `disassociate_ucontext`), not the mode's.
#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn move_rxe_is_eopnotsupp_in_exclusive_mode() {
    move_is_refused(NetnsMode::Exclusive);
}

/// The kernel answers an unknown DEV_INDEX with EINVAL (not ENODEV), checked
/// before the mode and the driver: `is_not_found` cannot tell, names can.
#[test]
#[cfg_attr(not(feature = "vm-lane"), ignore = "runs inside the VM lane")]
fn unknown_device_index_is_einval() {
    let ghost = RdmaDevice {
        index: 4242,
        name: "ghost0".into(),
        node_guid: None,
        ports: vec![],
    };
    let ns = NetNs::current().expect("own netns");
    let err = sock()
        .move_to_netns(&ghost, std::os::fd::AsFd::as_fd(&ns))
        .expect_err("ghost");
    eprintln!("move of device index 4242: {err}");
    assert_eq!(err.errno(), Some(libc::EINVAL), "{err:?}");
    assert!(!err.is_not_found());
}
