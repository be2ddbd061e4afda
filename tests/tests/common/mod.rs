//! Harness for the integration tests: runs the real plugin binaries as a
//! runtime does (CNI_* environment, config on stdin), in network namespaces
//! and veth pairs the test creates, against a fake sysfs tree per test.
//!
//! These tests need root. They are compiled with the `root-tests` feature
//! (scripts/test.sh); without it they are reported as ignored, never passed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libcni::sysfs::fake::FakePf;
use serde_json::{Value, json};

pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "integration tests need root (network namespaces, moving links); run scripts/test.sh as root"
    );
}

/// Directory of the test build of the plugins (simulated PF + failpoints).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CNI_TEST_BIN_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/testbin/debug")
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build the test binaries first (scripts/test.sh does: cargo build --workspace --bins --features sriov/test-build --target-dir target/testbin)",
        p.display()
    );
    p
}

pub use integration::{Netns, ip, ip_json, ip_ok, unique};

pub use integration::Outcome;

/// Assertions on a plugin run.
pub trait OutcomeExt {
    fn json(&self) -> Value;
    fn ok(&self) -> Value;
    fn err(&self) -> Value;
    fn err_code(&self) -> u64;
}

impl OutcomeExt for Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}): {:?}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts success and returns the parsed result (Null for empty output).
    fn ok(&self) -> Value {
        assert_eq!(
            self.status, 0,
            "plugin failed: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts failure with a well-formed CNI error and returns it.
    fn err(&self) -> Value {
        assert_ne!(
            self.status, 0,
            "plugin unexpectedly succeeded: {}",
            self.stdout
        );
        let e = self.json();
        assert!(e["code"].is_u64(), "error without code: {e}");
        assert!(e["msg"].is_string(), "error without msg: {e}");
        assert!(e["cniVersion"].is_string(), "error without cniVersion: {e}");
        assert!(
            !self.stderr.contains("panicked"),
            "plugin panicked: {}",
            self.stderr
        );
        e
    }

    fn err_code(&self) -> u64 {
        self.err()["code"].as_u64().unwrap_or_default()
    }
}

/// One invocation's environment, as a runtime sets it.
#[derive(Clone, Debug)]
pub struct Call {
    pub command: String,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    pub cni_args: Option<String>,
    pub cni_path: String,
    pub extra_env: Vec<(String, String)>,
}

impl Call {
    pub fn new(command: &str, container_id: &str, netns: &str, ifname: &str) -> Call {
        Call {
            command: command.into(),
            container_id: container_id.into(),
            netns: Some(netns.into()),
            ifname: ifname.into(),
            cni_args: None,
            cni_path: "/usr/lib/cni".into(),
            extra_env: Vec::new(),
        }
    }

    /// The same attachment, another command (runtimes reuse the environment).
    pub fn with(&self, command: &str) -> Call {
        let mut c = self.clone();
        c.command = command.into();
        c
    }

    pub fn env(mut self, k: &str, v: &str) -> Call {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    pub fn run(&self, plugin: &str, conf: &Value) -> Outcome {
        run_with_stdin(self.command(bin(plugin)), conf.to_string().as_bytes())
    }

    /// `program` with this call's environment and nothing else: the
    /// plugin itself, or a wrapper that execs it.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.container_id)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_PATH", &self.cni_path);
        if let Some(ns) = &self.netns {
            cmd.env("CNI_NETNS", ns);
        }
        if let Some(a) = &self.cni_args {
            cmd.env("CNI_ARGS", a);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }
}

#[allow(unused_imports)]
pub use integration::run_with_stdin;

/// A stand-in VF: a veth end in the host whose peer sits in the node's
/// "wire" netns (the switch side).
#[derive(Clone, Debug)]
pub struct StandIn {
    pub pci: String,
    pub name: String,
    pub peer: String,
    pub mac: String,
    pub mtu: u32,
}

/// A fake node: one PF with VFs stood in by veth ends, a fake sysfs tree,
/// a state dir and an IPAM data dir, all in a temp dir.
pub struct FakeNode {
    pub dir: tempfile::TempDir,
    pub sysfs: PathBuf,
    pub state: PathBuf,
    pub ipam_dir: PathBuf,
    pub wire: Netns,
    /// With `per_rail`: one "switch" netns per VF holding its peer end.
    pub switches: Vec<Netns>,
    pub pf_pci: String,
    pub pf: FakePf,
    pub vfs: Vec<StandIn>,
}

pub const PF_PCI: &str = "0000:af:00.1";

impl FakeNode {
    /// `vfs` stand-in VFs with netdevs (driver iavf), PF MTU `pf_mtu`.
    pub fn new(vfs: usize, pf_mtu: u32) -> FakeNode {
        FakeNode::build(vfs, pf_mtu, false)
    }

    /// Each VF's peer in a switch netns of its own (`switches[i]`), where a
    /// test puts the rail's gateway addresses.
    pub fn per_rail(vfs: usize, pf_mtu: u32) -> FakeNode {
        FakeNode::build(vfs, pf_mtu, true)
    }

    fn build(vfs: usize, pf_mtu: u32, per_rail: bool) -> FakeNode {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let sysfs = dir.path().join("sys");
        let pf = FakePf::create(&sysfs, PF_PCI, "pf0", pf_mtu).expect("fake PF");
        let wire = Netns::new("wire");
        let mut node = FakeNode {
            state: dir.path().join("state"),
            ipam_dir: dir.path().join("ipam"),
            sysfs,
            dir,
            wire,
            switches: Vec::new(),
            pf_pci: PF_PCI.into(),
            pf,
            vfs: Vec::new(),
        };
        for i in 0..vfs {
            if per_rail {
                node.switches.push(Netns::new("sw"));
            }
            node.add_netdev_vf(i as u32);
        }
        node
    }

    fn add_netdev_vf(&mut self, index: u32) {
        let tok = unique();
        let name = format!("sv{tok}h");
        let peer = format!("sv{tok}p");
        let ns = self
            .switches
            .get(index as usize)
            .unwrap_or(&self.wire)
            .name
            .clone();
        ip(&[
            "link", "add", &name, "type", "veth", "peer", "name", &peer, "netns", &ns,
        ]);
        ip(&["-n", &ns, "link", "set", &peer, "up"]);
        let pci = format!("0000:af:06.{index}");
        self.pf
            .add_vf(index, &pci, Some(&name), "iavf")
            .expect("fake VF");
        self.set_sim_vf(index, &fresh_vf());
        let link = &ip_json(&["link", "show", &name])[0];
        self.vfs.push(StandIn {
            pci,
            name,
            peer,
            mac: link["address"].as_str().unwrap_or_default().into(),
            mtu: link["mtu"].as_u64().unwrap_or_default() as u32,
        });
    }

    /// A VF bound to vfio-pci: no netdev (DPDK mode).
    pub fn add_userspace_vf(&self, index: u32) -> String {
        let pci = format!("0000:af:06.{index}");
        self.pf
            .add_vf(index, &pci, None, "vfio-pci")
            .expect("fake VF");
        self.set_sim_vf(index, &fresh_vf());
        pci
    }

    /// The `sriov` config for VF `vf` with `extra` keys merged in.
    pub fn conf(&self, vf: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": "rail1",
            "type": "sriov",
            "deviceID": vf,
            "stateDir": self.state,
            "sysfsRoot": self.sysfs,
        });
        if let (Some(obj), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                obj.insert(k.clone(), v.clone());
            }
        }
        c
    }

    /// host-local IPAM storing its leases under this node's temp dir.
    pub fn host_local(&self, subnet: &str, gateway: &str) -> Value {
        json!({
            "type": "host-local",
            "dataDir": self.ipam_dir,
            "ranges": [[{"subnet": subnet, "gateway": gateway}]],
            "routes": [{"dst": "10.200.0.0/16"}],
        })
    }

    fn pf_dir(&self) -> PathBuf {
        self.sysfs.join("bus/pci/devices").join(&self.pf_pci)
    }

    pub fn sim_vf(&self, index: u32) -> Value {
        std::fs::read(self.pf_dir().join(format!("sim-vf{index}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    pub fn set_sim_vf(&self, index: u32, state: &Value) {
        std::fs::write(
            self.pf_dir().join(format!("sim-vf{index}.json")),
            state.to_string(),
        )
        .expect("write sim");
    }

    pub fn sim_calls(&self) -> String {
        std::fs::read_to_string(self.pf_dir().join("sim-calls.log")).unwrap_or_default()
    }

    /// Makes the simulated PF driver refuse these attributes (as igb does).
    pub fn refuse(&self, words: &str) {
        std::fs::write(self.pf_dir().join("sim-unsupported"), words).expect("write");
    }

    /// Everything an attachment may change on the host, for before/after equality.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut s = BTreeMap::new();
        for (i, vf) in self.vfs.iter().enumerate() {
            let link = if ip_ok(&["link", "show", &vf.name]) {
                let l = &ip_json(&["-d", "link", "show", &vf.name])[0];
                format!(
                    "name={} mac={} mtu={} altnames={}",
                    l["ifname"], l["address"], l["mtu"], l["altnames"]
                )
            } else {
                "absent from host".to_string()
            };
            s.insert(format!("vf{i} link"), link);
            s.insert(format!("vf{i} pf-side"), canonical(&self.sim_vf(i as u32)));
        }
        s.insert("state files".into(), list_files(&self.state).join(","));
        s.insert("ipam leases".into(), self.leases().join(","));
        s
    }

    /// host-local's lease files (not its lock and last-reserved bookkeeping).
    pub fn leases(&self) -> Vec<String> {
        list_files(&self.ipam_dir)
            .into_iter()
            .filter(|f| !f.ends_with("/lock") && !f.contains("last_reserved_ip"))
            .collect()
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        for vf in &self.vfs {
            let _ = Command::new("ip")
                .args(["link", "del", &vf.name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The PF-side state of a freshly created VF.
pub fn fresh_vf() -> Value {
    json!({"mac": "00:00:00:00:00:00", "vlan": {"id": 0, "qos": 0, "proto": "802.1Q"},
           "spoofchk": true, "trust": false, "link_state": "auto", "rate": {"min": 0, "max": 0}})
}

/// JSON with object keys sorted (the harness's, shared by every test).
pub use integration::harness::canonical;

/// The `address` of each entry of a CNI result's `ips`.
pub fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|ip| ip["address"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Writes an executable shell script `name` into `dir` (a fake plugin).
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("mkdir");
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// An IPAM plugin that speaks every spec version and always hands out
/// 10.1.0.5/24 (Debian's IPAM plugins stop at spec 1.0.0).
pub fn any_version_ipam(dir: &Path) -> PathBuf {
    script(
        dir,
        "any-version-ipam",
        r#"in=$(cat)
v=$(printf '%s' "$in" | sed -n 's/.*"cniVersion":"\([^"]*\)".*/\1/p')
case "$CNI_COMMAND" in
ADD) printf '{"cniVersion":"%s","ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"}],"routes":[{"dst":"10.200.0.0/16"}]}' "$v" ;;
VERSION) echo '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}' ;;
esac"#,
    )
}

/// Regular files under `dir` that record something, relative, sorted.
pub use integration::harness::state_files as list_files;

/// The config a runtime sends for CHECK and DEL: the ADD config plus the cached result.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

#[allow(unused_imports)] // used by some test files only
pub use integration::Etcd;

/// What the ippool file store under `data_dir` reports for `pool`
/// (Null when it has no state for it).
pub fn pool_state(data_dir: &Path, pool: &str) -> Value {
    libcni::pool::FileStore::open(data_dir)
        .and_then(|s| s.inspect(pool))
        .expect("inspect pool")
        .unwrap_or(Value::Null)
}

/// Runs a chain's ADD as libcni does: each plugin gets the previous result
/// as `prevResult`; returns the final result.
pub fn chain_add(call: &Call, plugins: &[(&str, Value)]) -> Value {
    let mut prev: Option<Value> = None;
    for (bin, conf) in plugins {
        let mut c = conf.clone();
        if let Some(p) = &prev {
            c["prevResult"] = p.clone();
        }
        prev = Some(call.with("ADD").run(bin, &c).ok());
    }
    prev.unwrap_or(Value::Null)
}

/// DEL in reverse order, each plugin with the cached final result.
pub fn chain_del(call: &Call, plugins: &[(&str, Value)], cached: &Value) {
    for (bin, conf) in plugins.iter().rev() {
        call.with("DEL").run(bin, &with_prev(conf, cached)).ok();
    }
}

/// CHECK to every plugin with the cached final result.
pub fn chain_check(call: &Call, plugins: &[(&str, Value)], cached: &Value) -> Vec<Outcome> {
    plugins
        .iter()
        .map(|(bin, conf)| call.with("CHECK").run(bin, &with_prev(conf, cached)))
        .collect()
}

/// (rx_packets, tx_packets) of an interface in a netns.
pub fn packets(ns: &Netns, ifname: &str) -> (u64, u64) {
    let v = ns.ip_json(&["-s", "link", "show", ifname]);
    let stats = &v[0]["stats64"];
    (
        stats["rx"]["packets"].as_u64().unwrap_or_default(),
        stats["tx"]["packets"].as_u64().unwrap_or_default(),
    )
}

/// Waits until no IPv6 address in `ns` is tentative (DAD done), up to 5 s.
pub fn settle_ipv6(ns: &Netns) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while ns.ip(&["-6", "addr"]).contains("tentative") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Where the test build's simulated RDMA subsystem (`<sysfs>/sim-rdma.json`)
/// has device `dev`: a netns path, or "host". Like the kernel in exclusive
/// mode, a device whose netns died is back in the host.
pub fn sim_rdma_location(sysfs: &Path, dev: &str) -> String {
    let v: Value = std::fs::read(sysfs.join("sim-rdma.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    v["devices"][dev]["path"]
        .as_str()
        .filter(|p| Path::new(p).exists())
        .map_or_else(|| "host".to_string(), str::to_string)
}
