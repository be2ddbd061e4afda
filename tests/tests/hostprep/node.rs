//! The test node of hostprep.rs: a netns with two veth NICs, a state
//! directory, a modprobe.d directory and a fake sysfs tree.

use std::fs;
use std::os::unix::fs::symlink;

use serde_json::{Value, json};

use super::{Run, hostprep};
use crate::common::{Netns, require_root};

/// A node: a netns with NICs hp0 and hp1 (veth, peers inside too), a state
/// dir, a modprobe.d dir and a fake sysfs.
pub struct Node {
    pub ns: Netns,
    pub tmp: tempfile::TempDir,
}

impl Node {
    pub fn new() -> Node {
        require_root();
        let ns = Netns::new("hp");
        for i in 0..2 {
            ns.ip(&[
                "link",
                "add",
                &format!("hp{i}"),
                "type",
                "veth",
                "peer",
                "name",
                &format!("hpp{i}"),
            ]);
        }
        Node {
            ns,
            tmp: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn dir(&self, name: &str) -> String {
        self.tmp.path().join(name).display().to_string()
    }

    pub fn set(&self, nic: &str, address: &str, gateway: &str, table: &str, extra: &[&str]) -> Run {
        let state = self.dir("state");
        let mut args = vec![
            "set-nic-addr",
            "--nic",
            nic,
            "--address",
            address,
            "--gateway",
            gateway,
        ];
        args.extend(["--table", table, "--state-dir", &state]);
        args.extend(extra);
        hostprep(&self.ns, &args)
    }

    pub fn unset(&self, nic: &str) -> Run {
        hostprep(
            &self.ns,
            &[
                "unset-nic-addr",
                "--nic",
                nic,
                "--state-dir",
                &self.dir("state"),
            ],
        )
    }

    /// Everything set-nic-addr may change, as `ip -j` shows it.
    pub fn snapshot(&self) -> Value {
        let link = |n: &str| {
            let l = &self.ns.ip_json(&["link", "show", n])[0];
            json!({"mtu": l["mtu"], "up": l["flags"].as_array().is_some_and(|f| f.contains(&json!("UP")))})
        };
        let addrs = |n: &str| {
            let a = &self.ns.ip_json(&["addr", "show", n])[0]["addr_info"];
            let list = a.as_array().cloned().unwrap_or_default();
            list.iter()
                .filter(|x| x["scope"] == "global")
                .map(|x| format!("{}/{}", x["local"].as_str().unwrap_or("?"), x["prefixlen"]))
                .collect::<Vec<_>>()
        };
        json!({
            "hp0": link("hp0"), "hp1": link("hp1"),
            "hp0 addrs": addrs("hp0"), "hp1 addrs": addrs("hp1"),
            "rules": self.ns.ip_json(&["rule", "show"]), "rules6": self.ns.ip_json(&["-6", "rule", "show"]),
            "tables": (111..=113).map(|t| self.table("-4", t)).collect::<Vec<_>>(),
            "tables6": (111..=113).map(|t| self.table("-6", t)).collect::<Vec<_>>(),
        })
    }

    /// The routes of table `t` (`ip route show table N` fails on a table
    /// that never existed, so every table is dumped and filtered).
    pub fn table(&self, family: &str, t: u32) -> Value {
        let all = self.ns.ip_json(&[family, "route", "show", "table", "all"]);
        let routes = all.as_array().cloned().unwrap_or_default();
        let table = json!(t.to_string());
        routes
            .into_iter()
            .filter(|r| r["table"] == table)
            .map(|mut r| {
                r.as_object_mut().map(|o| o.remove("table"));
                r
            })
            .collect()
    }

    /// class/net/<nic> -> a PCI function with `type`, SR-IOV counts and
    /// (optionally) an RDMA device, as /sys has them.
    pub fn fake_pf(&self, nic: &str, pci: &str, arphrd: u32, vfs: (u32, u32), rdma: Option<&str>) {
        let sys = self.tmp.path().join("sys");
        let dev = sys.join("bus/pci/devices").join(pci);
        fs::create_dir_all(&dev).expect("mkdir");
        fs::write(dev.join("sriov_numvfs"), format!("{}\n", vfs.0)).expect("numvfs");
        fs::write(dev.join("sriov_totalvfs"), format!("{}\n", vfs.1)).expect("totalvfs");
        if let Some(r) = rdma {
            fs::create_dir_all(dev.join("infiniband").join(r)).expect("rdma dev");
        }
        let class = sys.join("class/net").join(nic);
        fs::create_dir_all(&class).expect("mkdir");
        fs::write(class.join("type"), format!("{arphrd}\n")).expect("type");
        symlink(
            format!("../../../bus/pci/devices/{pci}"),
            class.join("device"),
        )
        .expect("link");
    }

    pub fn check(&self, extra: &[&str]) -> Run {
        let (sys, mp) = (self.dir("sys"), self.dir("modprobe.d"));
        let mut args = vec!["check", "--sysfs-root", &sys, "--modprobe-dir", &mp];
        args.extend(extra);
        hostprep(&self.ns, &args)
    }
}
