//! The CNI_* environment (CNI_ARGS above all) and every identifier parser a
//! value from outside goes through. Checks the property that keeps paths
//! safe: whatever parses as a container ID and an interface name joins into
//! one plain file name.
//!
//! Input: newline-separated CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
//! CNI_IFNAME, CNI_ARGS, CNI_PATH.

#![no_main]

use libcni::env::{CniArgs, CniEnv};
use libcni::ids::{ContainerId, IfName, MacAddr, PciAddr};
use libfuzzer_sys::fuzz_target;

fn plain_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let fields: Vec<&str> = text.split('\n').collect();
    let field = |i: usize| fields.get(i).map(|s| s.to_string());
    let vars = [
        "CNI_COMMAND",
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
    ];
    let env = CniEnv::from_lookup(|k| vars.iter().position(|v| *v == k).and_then(field));
    if let Ok(env) = &env {
        let _ = env.args.check_known(&["MAC", "IP"]);
        if let Some((cid, ifname)) = env.attachment() {
            let record = format!("{cid}:{ifname}.json");
            assert!(plain_component(&record), "{record:?}");
            let legacy = format!("{cid}-{ifname}");
            assert!(plain_component(&legacy), "{legacy:?}");
            assert!(record.len() <= 255, "file name too long: {}", record.len());
        }
        if let Some(ns) = &env.netns {
            assert!(ns.is_absolute(), "{ns:?}");
        }
    }
    for part in &fields {
        if let Ok(a) = CniArgs::parse(part) {
            let _ = a.check_known(&["MAC"]);
            let _ = a.ignore_unknown();
        }
        if let Ok(c) = ContainerId::parse(part) {
            assert!(plain_component(c.as_str()) && c.as_str().len() <= 230);
        }
        if let Ok(i) = IfName::parse(part) {
            assert!(plain_component(i.as_str()) && i.as_str().len() <= 15);
        }
        if let Ok(p) = PciAddr::parse(part) {
            assert!(plain_component(p.as_str()) && p.as_str().len() == 12);
        }
        let _ = MacAddr::parse_unicast(part);
        let _ = libcni::vf::Guid::parse(part);
        if let Some(libcni::rdma::RdmaParent::Aux(a)) = libcni::rdma::RdmaParent::parse(part) {
            assert!(plain_component(&a), "{a:?}");
        }
        let _ = libcni::pool::parse_range(part);
        if libcni::pool::valid_pool_name(part) {
            assert!(plain_component(part));
        }
    }
});
