//! `floor`: a pod's kernel work with nothing around it. One process issues
//! the operations our chain issues for an 8-rail pod, back to back through
//! libcni: open the pod's netns and rtnetlink sockets once, then per rail
//! move the netdev in and rename it (one RTM_NEWLINK), link up,
//! the interface sysctls (arp_notify, rp_filter), the address, the gateway
//! probe, the rail's table, routes and rule; DEL reverts the rules and
//! routes and brings each netdev home the same way. No exec, no JSON, no
//! state files, no locks, no IPAM. The simulated RDMA move is left out (it
//! is no kernel work here). Two variants show what parts of it cost: no
//! probes, and Go host-device's crossing (move, then rename in the pod).

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use libcni::ids::IfName;
use libcni::netdev::{self, NetdevOrigin};
use libcni::netlink::RouteSocket;
use libcni::netns::NetNs;
use libcni::policy::{self, Applied, InterfaceRouting};
use libcni::probe::{self, ProbeSettings};
use libcni::undo::Undo;
use libcni::{ipconf, sysctl};

use super::pod::{Chain, Pod, RAILS};
use super::rig::{Rig, gateway};
use super::{Bins, footer, heading, median, ms, table};

pub struct FloorRun {
    pub add: Duration,
    pub del: Duration,
    pub probes: Duration,
}

/// How a netdev crosses into the pod and back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// libcni's: one RTM_NEWLINK that moves and renames.
    Libcni,
    /// Go host-device's: into the pod, then renamed there (two requests).
    MoveThenRename,
}

/// One pod's ADD and DEL on `slot`, in the calling process; with
/// `after_add`, waits there between the two (concurrent pods: every ADD
/// ends before any DEL starts, as in the pod section's rounds).
pub fn floor_pod(
    rig: &Rig,
    slot: usize,
    pod_path: &str,
    with_probe: bool,
    crossing: Crossing,
    after_add: Option<&Barrier>,
) -> FloorRun {
    let start = Instant::now();
    let host = RouteSocket::new().expect("host socket");
    let host_ns = NetNs::current().expect("host netns");
    let pod = NetNs::open(Path::new(pod_path)).expect("pod netns");
    let pod_sock = pod.route_socket().expect("pod socket");
    let mut probes = Duration::ZERO;
    let mut done: Vec<(IfName, NetdevOrigin, Applied)> = Vec::new();
    for (r, vf) in rig.vfs[slot].iter().enumerate() {
        let ifname = IfName::parse(&format!("net{}", r + 1)).expect("ifname");
        let link = host
            .link_by_name(&vf.netdev)
            .expect("lookup")
            .expect("VF in the host");
        let origin = NetdevOrigin::of(&link).expect("origin");
        let moved = match crossing {
            Crossing::Libcni => {
                netdev::move_into_pod(&host, &host_ns, &link, &pod, &pod_sock, &ifname)
                    .expect("move in")
            }
            Crossing::MoveThenRename => {
                host.set_up(&link, false).expect("down");
                host.move_to_netns(&link, pod.as_fd()).expect("move in");
                let l = pod_sock
                    .link_by_name(&link.name)
                    .expect("lookup")
                    .expect("in the pod");
                netdev::rename(&pod_sock, &l, ifname.as_str()).expect("rename")
            }
        };
        pod_sock.set_up(&moved, true).expect("up");
        let addr: IpNet = format!("10.{}.0.{}/24", 101 + r, 10 + slot)
            .parse()
            .expect("address");
        let gw: IpAddr = gateway(r + 1).parse().expect("gateway");
        pod.run(|| {
            ipconf::prepare_sysctls(&ifname, false);
            for scope in ["all", "default", ifname.as_str()] {
                let scope = IfName::parse(scope).expect("scope");
                sysctl::set_iface("ipv4", &scope, "rp_filter", "0").expect("rp_filter");
            }
        })
        .expect("in pod");
        pod_sock.add_address(&moved, &addr).expect("address");
        let link = pod_sock
            .link_by_index(moved.index)
            .expect("lookup")
            .expect("in the pod");
        if with_probe {
            let t = Instant::now();
            let settings = ProbeSettings {
                timeout: Duration::from_millis(200),
                retries: 3,
            };
            let mac: [u8; 6] = link.mac.as_slice().try_into().expect("Ethernet MAC");
            pod.run(|| {
                probe::probe_gateway(&link.name, link.index, mac, addr.addr(), gw, &settings)
            })
            .expect("in pod")
            .expect("gateway answers");
            probes += t.elapsed();
        }
        let table = 100 + r as u32;
        let plan = policy::plan_interface(
            &pod_sock,
            &InterfaceRouting {
                link: &link,
                addrs: &[addr],
                gateways: &[gw],
                table,
                priority: 1000 + table,
                keep_default_in_main: false,
                extra: &[],
            },
        )
        .expect("plan");
        let mut undo = Undo::new();
        let applied = policy::apply(&pod_sock, &plan, &mut undo).expect("routing");
        undo.commit();
        done.push((ifname, origin, applied));
    }
    let add = start.elapsed();
    if let Some(b) = after_add {
        b.wait();
    }
    let start = Instant::now();
    for (ifname, origin, applied) in done.iter().rev() {
        assert!(
            policy::revert(&pod_sock, applied).is_empty(),
            "revert routing"
        );
        if crossing == Crossing::Libcni {
            netdev::return_to_host(&pod_sock, &pod, ifname, &host_ns, &host, origin)
                .expect("move home");
            continue;
        }
        let l = pod_sock
            .link_by_name(ifname.as_str())
            .expect("lookup")
            .expect("in the pod");
        pod_sock.set_up(&l, false).expect("down");
        let l = netdev::rename(&pod_sock, &l, origin.name.as_str()).expect("rename");
        pod_sock
            .move_to_netns(&l, host_ns.as_fd())
            .expect("move home");
    }
    FloorRun {
        add,
        del: start.elapsed(),
        probes,
    }
}

/// Pods per second of the floor's ADDs (with probes) with `n` pods at once,
/// each on its own slot and thread, in rounds of `n` until `total` pods:
/// how far the kernel itself lets pods run in parallel on this machine.
fn floor_rate(rig: &Rig, n: usize, total: usize) -> f64 {
    let mut wall = Duration::ZERO;
    for _ in 0..total / n {
        let pods: Vec<integration::Netns> =
            (0..n).map(|_| integration::Netns::new("bfloorc")).collect();
        let barrier = Barrier::new(n + 1);
        std::thread::scope(|s| {
            let start = Instant::now();
            for (slot, pod) in pods.iter().enumerate() {
                let (barrier, path) = (&barrier, pod.path());
                s.spawn(move || floor_pod(rig, slot, &path, true, Crossing::Libcni, Some(barrier)));
            }
            barrier.wait();
            wall += start.elapsed();
        });
    }
    (total / n * n) as f64 / wall.as_secs_f64()
}

/// The floor's pods per second at each of the pod section's levels, and the
/// speed-up over one pod at a time (the pod section's scaling goal).
fn concurrency(levels: &[usize]) {
    const TOTAL: usize = 16;
    println!(
        "\nThe floor with pods at once (ADD with probes, each pod on its own slot and thread, rounds of N \
         until {TOTAL} pods; pods/s = pods / wall time of the rounds' ADDs): the kernel's own scaling \
         on this machine, against which the pod section's speed-up is set.\n"
    );
    let rig = Rig::new(levels.iter().copied().max().unwrap_or(1), RAILS);
    let mut single = 0.0;
    let mut rows = Vec::new();
    for &n in levels {
        let rate = floor_rate(&rig, n, TOTAL);
        if n == 1 {
            single = rate;
        }
        rows.push(vec![
            n.to_string(),
            format!("{rate:.2}"),
            format!("{:.2}x", rate / single),
        ]);
    }
    table(&["pods at once", "floor pods/s", "floor speed-up"], &rows);
}

pub fn section(bins: &Bins) {
    const ROUNDS: usize = 10;
    heading("floor: one 8-rail pod, our chain vs the same kernel operations from one process");
    println!(
        "Median of {ROUNDS} pods each, one at a time, interleaved. Ours: the `pod` section's chain (8 x \
         sriov+ippool, rdma, coordinator execs), with its state and IPAM files on the disk (/tmp) and \
         on a tmpfs (/dev/shm, where fsync costs nothing: what the state files' fsyncs cost). Floor: \
         the libcni calls doing the same kernel work in this process (see the module doc of \
         tests/src/bench/floor.rs), with and without the gateway probes, and with Go host-device's \
         crossing (moved into the pod, then renamed there: two requests where libcni sends one).\n"
    );
    let rig = Rig::new(1, RAILS);
    let shm = Rig::new_in(1, RAILS, std::path::Path::new("/dev/shm"));
    let mut v: [Vec<Duration>; 11] = Default::default();
    for round in 0..ROUNDS {
        for (n, rig) in [(0, &rig), (2, &shm)] {
            let pod = Pod::new(bins, rig, Chain::Ours, 0, &format!("floor{n}-{round}"));
            let mut times = Vec::new();
            let t = Instant::now();
            let cached = pod.add(&mut times);
            v[n].push(t.elapsed());
            let t = Instant::now();
            pod.del(&cached, &mut times);
            v[n + 1].push(t.elapsed());
        }
        let pod = integration::Netns::new("bfloor");
        for (n, probe, crossing) in [
            (4, true, Crossing::Libcni),
            (7, false, Crossing::Libcni),
            (9, false, Crossing::MoveThenRename),
        ] {
            let f = floor_pod(&rig, 0, &pod.path(), probe, crossing, None);
            v[n].push(f.add);
            v[n + 1].push(f.del);
            if probe {
                v[6].push(f.probes);
            }
        }
    }
    let m: Vec<Duration> = v.iter().map(|x| median(x)).collect();
    let x = |a: Duration, b: Duration| format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64());
    table(
        &["per pod (8 rails)", "ADD", "DEL"],
        &[
            vec![
                "ours (chain of execs), state on disk".into(),
                ms(m[0]),
                ms(m[1]),
            ],
            vec![
                "ours, state on tmpfs (no fsync cost)".into(),
                ms(m[2]),
                ms(m[3]),
            ],
            vec!["floor (with gateway probes)".into(), ms(m[4]), ms(m[5])],
            vec!["of which the 8 probes".into(), ms(m[6]), "-".into()],
            vec!["floor without probes".into(), ms(m[7]), ms(m[8])],
            vec![
                "floor without probes, Go host-device's crossing: move, then rename".into(),
                ms(m[9]),
                ms(m[10]),
            ],
            vec![
                "ours - floor (our overhead)".into(),
                ms(m[0].saturating_sub(m[4])),
                ms(m[1].saturating_sub(m[5])),
            ],
            vec![
                "ours / floor (goal <= 1.5x)".into(),
                x(m[0], m[4]),
                x(m[1], m[5]),
            ],
        ],
    );
    concurrency(&super::pod::LEVELS);
    footer();
}
