//! `rdma-hostprep`, the real binary, in network namespaces made here: a veth
//! end stands for the host's RDMA NIC, a fake sysfs tree gives it a PCI
//! function with VFs and an RDMA device. Asserted through `ip -j`, the files
//! written and the exit codes. The RDMA netns mode switch itself needs a
//! kernel with an RDMA subsystem: tests/vm/hostprep.sh (VM lane, rdma_rxe).
//!
//! Also: scripts/install.sh into a temporary destination, the DaemonSet's
//! entrypoint (`install-cni --sleep`), and deploy/ checked against the
//! workspace's binaries (no image is built here).

mod common;
#[path = "hostprep/install.rs"]
mod install;
#[path = "hostprep/node.rs"]
mod node;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Netns, bin};
use node::Node;
use serde_json::{Value, json};

const PLUGINS: [&str; 5] = ["sriov", "ib-sriov", "rdma", "ippool", "coordinator"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What one run printed and returned.
#[derive(Debug)]
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(cmd: &mut Command) -> Run {
        let out = cmd.stdin(Stdio::null()).output().expect("spawn");
        let run = Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(!run.stderr.contains("panicked"), "panic: {}", run.stderr);
        run
    }

    fn ok(self) -> Run {
        assert_eq!(self.status, 0, "failed: {}{}", self.stdout, self.stderr);
        self
    }

    /// Asserts exit code `code` and that stderr says `needle`.
    fn fails(self, code: i32, needle: &str) -> Run {
        assert_eq!(self.status, code, "{}{}", self.stdout, self.stderr);
        assert!(
            self.stderr.contains(needle),
            "want {needle:?} in: {}",
            self.stderr
        );
        self
    }
}

/// `rdma-hostprep ARGS` inside `ns`.
fn hostprep(ns: &Netns, args: &[&str]) -> Run {
    Run::of(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(bin("rdma-hostprep"))
            .args(args),
    )
}

/// The host has no RDMA subsystem: what these tests expect of the kernel's
/// mode (the VM lane tests the mode with one).
fn require_no_rdma_subsystem() {
    assert!(
        !Path::new("/sys/module/ib_core").exists(),
        "this host has an RDMA subsystem (ib_core loaded): the host-lane hostprep tests model a \
         node without one; the real mode switch is tested by `scripts/vm-lane/lane.sh hostprep`"
    );
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").mode() & 0o7777
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn set_nic_addr_sets_address_mtu_table_and_rule_and_is_idempotent() {
    let n = Node::new();
    let before = n.snapshot();
    let out = n
        .set(
            "hp0",
            "172.16.11.10/24",
            "172.16.11.254",
            "111",
            &["--mtu", "9000"],
        )
        .ok();
    assert!(
        out.stdout.contains("hp0: MTU 9000 (was 1500)"),
        "{}",
        out.stdout
    );

    let link = &n.ns.ip_json(&["addr", "show", "hp0"])[0];
    assert_eq!(link["mtu"], 9000);
    assert!(
        link["flags"]
            .as_array()
            .expect("flags")
            .contains(&json!("UP"))
    );
    let addrs: Vec<_> = link["addr_info"]
        .as_array()
        .expect("addrs")
        .iter()
        .map(|a| (a["local"].clone(), a["prefixlen"].clone()))
        .collect();
    assert_eq!(addrs, [(json!("172.16.11.10"), json!(24))]);
    let table: Vec<Value> = n.ns.ip_json(&["route", "show", "table", "111"]).as_array().expect("routes").iter()
        .map(|r| json!({"dst": r["dst"], "gateway": r["gateway"], "dev": r["dev"], "prefsrc": r["prefsrc"], "scope": r["scope"]}))
        .collect();
    assert_eq!(
        table,
        [
            json!({"dst": "default", "gateway": "172.16.11.254", "dev": "hp0", "prefsrc": null, "scope": null}),
            json!({"dst": "172.16.11.0/24", "gateway": null, "dev": "hp0", "prefsrc": "172.16.11.10", "scope": "link"}),
        ]
    );
    let rules = n.ns.ip_json(&["rule", "show"]);
    let ours: Vec<&Value> = rules
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["src"] == "172.16.11.10")
        .collect();
    assert_eq!(
        ours,
        [&json!({"priority": 1111, "src": "172.16.11.10", "table": "111"})]
    );
    // The rule has an explicit "to table" action: a lookup through it works.
    let route =
        n.ns.ip(&["route", "get", "192.0.2.1", "from", "172.16.11.10"]);
    assert!(
        route.contains("via 172.16.11.254 dev hp0 table 111"),
        "{route}"
    );

    let state = n.tmp.path().join("state");
    assert_eq!(mode_of(&state), 0o700);
    assert_eq!(mode_of(&state.join("nic-hp0.json")), 0o600);
    let record: Value =
        serde_json::from_slice(&fs::read(state.join("nic-hp0.json")).expect("record"))
            .expect("json");
    assert_eq!(
        record,
        json!({"version": 1, "originalMtu": 1500, "config": {"nic": "hp0",
        "address": "172.16.11.10/24", "gateway": "172.16.11.254", "table": 111, "priority": 1111, "mtu": 9000}})
    );

    let after = n.snapshot();
    let again = n
        .set(
            "hp0",
            "172.16.11.10/24",
            "172.16.11.254",
            "111",
            &["--mtu", "9000"],
        )
        .ok();
    assert_eq!(n.snapshot(), after, "a second run changes nothing");
    assert!(
        !again.stdout.contains("added") && again.stdout.matches("already present").count() == 4,
        "{}",
        again.stdout
    );

    // unset: rule, routes, address gone, MTU back; the link stays up.
    n.unset("hp0").ok();
    let mut back = n.snapshot();
    assert_eq!(back["hp0"], json!({"mtu": 1500, "up": true}));
    back["hp0"]["up"] = json!(false);
    assert_eq!(
        back, before,
        "back to the initial state but the link's UP flag"
    );
    assert!(!state.join("nic-hp0.json").exists());
    let twice = n.unset("hp0").ok();
    assert!(
        twice.stdout.contains("nothing recorded"),
        "{}",
        twice.stdout
    );
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn a_changed_request_replaces_the_old_one_and_ipv6_works() {
    let n = Node::new();
    n.set("hp1", "172.16.12.10/24", "172.16.12.254", "112", &[])
        .ok();
    n.set(
        "hp1",
        "fd00:12::10/64",
        "fd00:12::1",
        "113",
        &["--priority", "500"],
    )
    .ok();
    let s = n.snapshot();
    assert_eq!(s["hp1 addrs"], json!(["fd00:12::10/64"]));
    assert_eq!(
        s["tables"],
        json!([[], [], []]),
        "the IPv4 table is emptied"
    );
    assert!(!s["rules"].to_string().contains("172.16.12.10"));
    let t6: Vec<(Value, Value)> = s["tables6"][2]
        .as_array()
        .expect("t113")
        .iter()
        .map(|r| (r["dst"].clone(), r["gateway"].clone()))
        .collect();
    assert_eq!(
        t6,
        [
            (json!("fd00:12::/64"), Value::Null),
            (json!("default"), json!("fd00:12::1"))
        ]
    );
    let r6: Vec<&Value> = s["rules6"]
        .as_array()
        .expect("rules6")
        .iter()
        .filter(|r| r["priority"] == 500)
        .collect();
    assert_eq!(
        r6,
        [&json!({"priority": 500, "src": "fd00:12::10", "table": "113"})]
    );
    n.set(
        "hp1",
        "fd00:12::10/64",
        "fd00:12::1",
        "113",
        &["--priority", "500"],
    )
    .ok();
    assert_eq!(n.snapshot(), s, "idempotent");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn conflicts_and_bad_input_are_refused_before_any_change() {
    let n = Node::new();
    n.set("hp0", "172.16.11.10/24", "172.16.11.254", "111", &[])
        .ok();
    let before = n.snapshot();
    n.set(
        "hp1",
        "172.16.12.10/24",
        "172.16.12.254",
        "111",
        &["--mtu", "9000"],
    )
    .fails(1, "table 111 is already hp0's");
    n.ns.ip(&["addr", "add", "172.16.12.10/16", "dev", "hp1"]);
    let before = {
        let mut b = before;
        b["hp1 addrs"] = json!(["172.16.12.10/16"]);
        b
    };
    n.set(
        "hp1",
        "172.16.12.10/24",
        "172.16.12.254",
        "112",
        &["--mtu", "9000"],
    )
    .fails(1, "hp1 already has 172.16.12.10/16, not 172.16.12.10/24");
    n.set("hp9", "172.16.12.10/24", "172.16.12.254", "112", &[])
        .fails(1, "no network device hp9");
    for (args, needle) in [
        (
            vec!["--address", "172.16.12.10"],
            "invalid --address \"172.16.12.10\": must be ADDRESS/PREFIX",
        ),
        (vec!["--address", "172.16.12.0/24"], "network or broadcast"),
        (
            vec!["--gateway", "172.16.99.1"],
            "invalid --gateway \"172.16.99.1\": is not a host address of 172.16.12.0/24",
        ),
        (
            vec!["--table", "254"],
            "invalid --table \"254\": is reserved",
        ),
        (vec!["--mtu", "70000"], "invalid --mtu \"70000\""),
        (vec!["--nic", "../x"], "invalid --nic"),
        (
            vec!["--state-dir", "rel/dir"],
            "invalid --state-dir \"rel/dir\": must be an absolute path",
        ),
        (vec!["--bogus", "1"], "unknown flag --bogus"),
    ] {
        let mut full = vec![
            "set-nic-addr",
            "--nic",
            "hp1",
            "--address",
            "172.16.12.10/24",
            "--gateway",
            "172.16.12.254",
            "--table",
            "112",
        ];
        // A later value replaces the default above (flags given twice are refused).
        for pair in args.chunks(2) {
            if let Some(i) = full.iter().position(|a| *a == pair[0]) {
                full[i + 1] = pair[1];
            } else {
                full.extend_from_slice(pair);
            }
        }
        hostprep(&n.ns, &full).fails(2, needle);
    }
    assert_eq!(n.snapshot(), before, "nothing changed");
    let files: Vec<_> = fs::read_dir(n.tmp.path().join("state"))
        .expect("ls")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(!files.contains(&"nic-hp1.json".to_string()), "{files:?}");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn check_reports_each_nic_as_text_and_json() {
    require_no_rdma_subsystem();
    let n = Node::new();
    n.fake_pf("hp0", "0000:af:00.0", 1, (4, 8), Some("mlx5_0"));
    n.fake_pf("hp1", "0000:b0:00.0", 32, (0, 16), None);
    n.set(
        "hp0",
        "172.16.11.10/24",
        "172.16.11.254",
        "111",
        &["--mtu", "9000"],
    )
    .ok();
    n.ns.ip(&["link", "set", "hp1", "up"]);

    let run = n.check(&["--json"]);
    assert_eq!(run.status, 3, "not ready: {}{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).expect("json");
    let mp = n.dir("modprobe.d");
    assert_eq!(report["ready"], false);
    assert_eq!(report["rdmaNetnsMode"], "unavailable");
    assert_eq!(report["persistedNetnsMode"], Value::Null);
    assert_eq!(
        report["missing"],
        json!([format!(
            "exclusive RDMA netns mode not persisted in {mp} (rdma-hostprep netns-mode exclusive --persist)"
        )])
    );
    let no_rdma = "no RDMA subsystem (RDMA netns mode unavailable)";
    assert_eq!(
        report["nics"][0],
        json!({
        "name": "hp0", "pci": "0000:af:00.0", "linkLayer": "Ethernet", "numVfs": 4, "totalVfs": 8,
        "mtu": 9000, "up": true, "addresses": ["172.16.11.10/24"],
        "policyRoutes": [{"address": "172.16.11.10", "table": 111, "priority": 1111, "defaultVia": "172.16.11.254"}],
        "rdmaDevices": ["mlx5_0"], "rdmaNetnsMode": "unavailable", "missing": [no_rdma]})
    );
    let hp1 = &report["nics"][1];
    assert_eq!(
        (
            &hp1["name"],
            &hp1["linkLayer"],
            &hp1["numVfs"],
            &hp1["totalVfs"],
            &hp1["mtu"]
        ),
        (
            &json!("hp1"),
            &json!("InfiniBand"),
            &json!(0),
            &json!(16),
            &json!(1500)
        )
    );
    let sys = n.dir("sys");
    assert_eq!(
        hp1["missing"],
        json!([
            format!(
                "no VFs created (sriov_numvfs is 0 of 16: write the count to {sys}/class/net/hp1/device/sriov_numvfs)"
            ),
            "no RDMA device (nothing under 0000:b0:00.0/infiniband: is the RDMA driver loaded?)",
            "MTU 1500 below 4092 (set-nic-addr --mtu; check --min-mtu sets the bar)",
            "no IP address (see set-nic-addr)",
            no_rdma,
        ])
    );

    // Persisted: reported, and no longer missing. Text form, one NIC named.
    hostprep(
        &n.ns,
        &[
            "netns-mode",
            "exclusive",
            "--persist",
            "--modprobe-dir",
            &mp,
        ],
    )
    .ok();
    let text = n.check(&["--nic", "hp0"]);
    assert_eq!(text.status, 3, "{}", text.stderr);
    let want = format!(
        "RDMA netns mode: unavailable (no RDMA subsystem): cannot open a NETLINK_RDMA socket (Protocol not supported (os error 93)); is ib_core loaded?\n\
         persisted netns mode: exclusive (netns_mode=0 in {mp}/ib_core.conf)\n\
         NIC hp0 (PCI 0000:af:00.0)\n\
         \x20 link layer:      Ethernet\n\
         \x20 VFs:             4 of 8\n\
         \x20 MTU:             9000\n\
         \x20 state:           up\n\
         \x20 addresses:       172.16.11.10/24\n\
         \x20 policy routes:   from 172.16.11.10 lookup 111 priority 1111 (default via 172.16.11.254)\n\
         \x20 RDMA devices:    mlx5_0\n\
         \x20 RDMA netns mode: unavailable (no RDMA subsystem)\n\
         \x20 missing: {no_rdma}\n\
         ready: no (1 missing)\n"
    );
    assert_eq!(text.stdout, want);
    n.check(&["--nic", "hp0", "--min-mtu", "10"])
        .fails(2, "invalid --min-mtu \"10\"");
    hostprep(&n.ns, &["check", "--sysfs-root", "/sys/../etc"]).fails(2, "invalid --sysfs-root");
}

#[test]
#[cfg_attr(not(feature = "root-tests"), ignore = "needs root")]
fn netns_mode_persists_atomically_and_idempotently() {
    require_no_rdma_subsystem();
    let n = Node::new();
    let dir = n.tmp.path().join("modprobe.d");
    fs::create_dir_all(&dir).expect("mkdir");
    let conf = dir.join("ib_core.conf");
    fs::write(&conf, "# site\noptions ib_core foo=1 netns_mode=1\n").expect("seed");
    let d = dir.display().to_string();
    let out = hostprep(
        &n.ns,
        &["netns-mode", "exclusive", "--persist", "--modprobe-dir", &d],
    )
    .ok();
    assert_eq!(
        out.stdout,
        format!(
            "persisted: netns_mode=0 (exclusive) in {d}/ib_core.conf (written)\n\
         RDMA netns mode: not set now: the RDMA subsystem is unavailable (cannot open a NETLINK_RDMA socket (Protocol not supported (os error 93)); is ib_core loaded?); the persisted setting applies when ib_core loads\n"
        )
    );
    let want = "# site\noptions ib_core foo=1\n# rdma-hostprep: RDMA netns mode for ib_core (0 = exclusive, 1 = shared)\noptions ib_core netns_mode=0\n";
    assert_eq!(fs::read_to_string(&conf).expect("read"), want);
    assert_eq!(mode_of(&conf), 0o644);
    let ino = fs::metadata(&conf).expect("stat").ino();
    let again = hostprep(
        &n.ns,
        &["netns-mode", "exclusive", "--persist", "--modprobe-dir", &d],
    )
    .ok();
    assert!(again.stdout.contains("(unchanged)"), "{}", again.stdout);
    assert_eq!(
        (
            fs::read_to_string(&conf).expect("read"),
            fs::metadata(&conf).expect("stat").ino()
        ),
        (want.to_string(), ino)
    );
    let names: Vec<_> = fs::read_dir(&dir)
        .expect("ls")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(names, ["ib_core.conf"], "no temp file left");

    let read = hostprep(&n.ns, &["netns-mode", "--modprobe-dir", &d]).ok();
    assert!(
        read.stdout.ends_with(&format!(
            "persisted: exclusive (netns_mode=0 in {d}/ib_core.conf)\n"
        )),
        "{}",
        read.stdout
    );
    hostprep(&n.ns, &["netns-mode", "exclusive"]).fails(1, "the RDMA subsystem is unavailable");
    // A file modprobe reads later overrides ours: refused, naming it.
    fs::write(dir.join("zz-mlnx.conf"), "options ib_core netns_mode=1\n").expect("w");
    hostprep(
        &n.ns,
        &["netns-mode", "exclusive", "--persist", "--modprobe-dir", &d],
    )
    .fails(
        1,
        &format!("{d}/zz-mlnx.conf sets netns_mode=1 and modprobe reads it later"),
    );
    for (args, needle) in [
        (
            vec!["netns-mode", "Exclusive"],
            "invalid mode \"Exclusive\"",
        ),
        (
            vec![
                "netns-mode",
                "exclusive",
                "--persist",
                "--modprobe-dir",
                "etc/modprobe.d",
            ],
            "must be an absolute path",
        ),
        (vec!["netns-mode", "--persist"], "--persist needs a mode"),
    ] {
        hostprep(&n.ns, &args).fails(2, needle);
    }
}
