//! `move`: one stand-in VF into a pod and back with a static address:
//! `sriov` (+ Debian's `static` IPAM) against Go `host-device` (+ `static`).
//! Both move a host netdev into the pod's netns, rename it, address it and
//! bring it back under its name on DEL.

use integration::Netns;
use serde_json::json;

use super::rig::Rig;
use super::{Bins, Call, dratio, footer, go, heading, median, ms, table};

pub fn section(bins: &Bins) {
    const ROUNDS: usize = 40;
    heading("move: sriov vs Go host-device, one stand-in VF, static address");
    println!(
        "Median of {ROUNDS} ADD and {ROUNDS} DEL execs each, interleaved; ratio = Go / ours. \
         `sriov` is the release profile built with the test-build features \
         (target/testbin/release): this kernel has no SR-IOV PF, so the PF side \
         (one VF-table read on ADD; nothing is programmed in this config) goes to \
         the simulated PF, one small JSON file in the fake sysfs tree, where the \
         release binary sends one RTM_GETLINK to the PF. Everything else (netns, \
         moves, rename, addresses, state files, IPAM exec) is the release code path.\n"
    );
    let rig = Rig::new(1, 1);
    let vf = rig.vfs[0][0].clone();
    let pod = Netns::new("bmove");
    let ipam = json!({"type": "static", "addresses": [{"address": "10.60.0.2/24", "gateway": "10.60.0.1"}]});
    let ours = json!({"cniVersion": "1.0.0", "name": "move", "type": "sriov", "deviceID": vf.pci,
        "stateDir": rig.path("sriov"), "sysfsRoot": vf.sysfs, "ipam": ipam});
    let theirs = json!({"cniVersion": "1.0.0", "name": "move", "type": "host-device",
        "device": vf.netdev, "ipam": ipam});
    let (sriov, host_device) = (bins.sim("sriov"), go("host-device"));
    let (mut oa, mut od, mut ga, mut gd) = (vec![], vec![], vec![], vec![]);
    for i in 0..ROUNDS {
        let call = Call::new("ADD", &format!("m{i}"), &pod.path(), "net1");
        let add = call.must(&sriov, &ours);
        let mut with_prev = ours.clone();
        with_prev["prevResult"] = add.ok("sriov ADD");
        oa.push(add.took);
        od.push(call.with("DEL").must(&sriov, &with_prev).took);
        let add = call.must(&host_device, &theirs);
        let mut with_prev = theirs.clone();
        with_prev["prevResult"] = add.ok("host-device ADD");
        ga.push(add.took);
        gd.push(call.with("DEL").must(&host_device, &with_prev).took);
    }
    let (oa, od, ga, gd) = (median(&oa), median(&od), median(&ga), median(&gd));
    table(
        &[
            "command",
            "sriov + static",
            "host-device + static (Go)",
            "ratio",
        ],
        &[
            vec!["ADD".into(), ms(oa), ms(ga), dratio(ga, oa)],
            vec!["DEL".into(), ms(od), ms(gd), dratio(gd, od)],
            vec![
                "ADD + DEL".into(),
                ms(oa + od),
                ms(ga + gd),
                dratio(ga + gd, oa + od),
            ],
        ],
    );
    footer();
}
