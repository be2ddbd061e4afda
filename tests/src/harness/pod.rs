//! A pod (its netns and attachments) and what a test or an operator looks at
//! inside it: addresses, rules, route tables, counters, pings per rail.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::cluster::Cluster;
use super::{Result, ip_in, ip_json_in, setup};
use crate::Netns;

/// A pod on a node: its netns and what was attached.
pub struct Pod {
    pub name: String,
    pub namespace: String,
    /// Index into [`Cluster::nodes`].
    pub node: usize,
    pub container_id: String,
    pub ns: Netns,
    /// (rail index, ifname, ADD result); eth0 is not listed.
    pub rails: Vec<(usize, String, Value)>,
}

/// One rule of `ip rule`: priority, `from` (or "all") and table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub priority: u64,
    pub from: String,
    pub table: String,
}

impl Pod {
    pub fn path(&self) -> String {
        self.ns.path()
    }

    /// The interface names in the pod, `lo` left out, sorted.
    pub fn interfaces(&self) -> Result<Vec<String>> {
        let v = self.ip_json(&["link", "show"])?;
        let mut names: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["ifname"].as_str().map(str::to_string))
                    .filter(|n| n != "lo")
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    /// The global-scope addresses (with prefix) of `ifname`.
    pub fn addresses(&self, ifname: &str) -> Result<Vec<String>> {
        let v = self.ip_json(&["addr", "show", "dev", ifname])?;
        Ok(v[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|i| i["scope"] == "global")
                    .map(|i| {
                        format!(
                            "{}/{}",
                            i["local"].as_str().unwrap_or_default(),
                            i["prefixlen"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The pod's IPv4 address on `ifname` (without prefix).
    pub fn ipv4(&self, ifname: &str) -> Result<String> {
        self.addresses(ifname)?
            .into_iter()
            .find(|a| !a.contains(':'))
            .and_then(|a| a.split('/').next().map(str::to_string))
            .ok_or_else(|| setup(format!("{}: no IPv4 address on {ifname}", self.name)))
    }

    /// The rules of one family (`-4`/`-6`), in priority order.
    pub fn rules(&self, family: &str) -> Result<Vec<Rule>> {
        let v = self.ip_json(&[family, "rule", "show"])?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|r| Rule {
                        priority: r["priority"].as_u64().unwrap_or_default(),
                        from: r["src"].as_str().unwrap_or("all").to_string(),
                        table: match &r["table"] {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        },
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The routes of `table` (`main`, `101`...) in one family, as
    /// `(dst, gateway or "-", dev)`.
    pub fn routes(&self, family: &str, table: &str) -> Result<Vec<(String, String, String)>> {
        let v = self.ip_json(&[family, "route", "show", "table", table])?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                        (s("dst"), s("gateway"), s("dev"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `ip` in the pod (plain text, for people).
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        ip_in(&self.ns.name, args)
    }

    pub fn ip_json(&self, args: &[&str]) -> Result<Value> {
        ip_json_in(&self.ns.name, args)
    }

    /// The MTU of `ifname`.
    pub fn mtu(&self, ifname: &str) -> Result<u64> {
        let v = self.ip_json(&["link", "show", "dev", ifname])?;
        v[0]["mtu"]
            .as_u64()
            .ok_or_else(|| setup(format!("{}: no MTU for {ifname}", self.name)))
    }

    /// Waits up to 5 s until no IPv6 address is tentative (DAD done).
    pub fn wait_dad(&self) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.ip(&["-6", "addr"])?.contains("tentative") {
            if std::time::Instant::now() > deadline {
                return Err(setup(format!("{}: IPv6 DAD did not finish", self.name)));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(())
    }

    /// `ping -c <count> -I <src> <extra...> <dst>` from the pod, 0.1 s
    /// apart; returns how many replies came back and ping's output.
    pub fn ping(&self, src: &str, dst: &str, count: u64, extra: &[&str]) -> Result<(u64, String)> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "ping", "-n", "-q"])
            .args(["-c", &count.to_string(), "-i", "0.1", "-W", "1"])
            .args(["-I", src])
            .args(extra)
            .arg(dst)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| setup(format!("ping: {e}")))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let received = text
            .split([',', '\n'])
            .find_map(|p| p.trim().strip_suffix(" received")?.parse().ok())
            .unwrap_or(0);
        Ok((received, text))
    }

    /// The attachments as the runtime lists them for GC: (containerID, ifname).
    pub fn attachment_keys(&self) -> Vec<(String, String)> {
        self.rails
            .iter()
            .map(|(_, ifname, _)| (self.container_id.clone(), ifname.clone()))
            .collect()
    }
}

/// What a ping on one rail showed.
#[derive(Clone, Debug)]
pub struct RailPing {
    pub ifname: String,
    pub from: String,
    pub to: String,
    pub sent: u64,
    pub received: u64,
    /// Per interface of the answering pod, the packets it sent that were
    /// not IPv6 (tx packets minus the kernel's `Ip6OutTransmits`), so the
    /// neighbour discovery and MLD chatter of freshly configured links
    /// does not count: the echo replies (and ARP).
    pub replier_tx: BTreeMap<String, u64>,
    /// rx packet deltas of the asking pod's interfaces.
    pub asker_rx: BTreeMap<String, u64>,
    /// ping's summary lines.
    pub output: String,
}

impl RailPing {
    /// The answering pod's interfaces other than the rail's that sent at
    /// least as many non-IPv6 packets as there were replies (so could have
    /// carried them), with their counts.
    pub fn replies_elsewhere(&self) -> Vec<(String, u64)> {
        self.replier_tx
            .iter()
            .filter(|(n, d)| **n != self.ifname && **d >= self.received.max(1))
            .map(|(n, d)| (n.clone(), *d))
            .collect()
    }
}

/// Per interface of a pod (lo left out): (rx packets, tx packets, IPv6
/// packets transmitted).
fn link_counters(pod: &Pod) -> Result<BTreeMap<String, (u64, u64, u64)>> {
    let links = pod.ip_json(&["-s", "link", "show"])?;
    let v6 = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pod.ns.name,
            "grep",
            "-r",
            "^Ip6OutTransmits",
        ])
        .arg("/proc/net/dev_snmp6")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| setup(format!("reading /proc/net/dev_snmp6: {e}")))?;
    // "/proc/net/dev_snmp6/net1:Ip6OutTransmits   12"; kernels before 6.3
    // have no such counter: nothing is subtracted then.
    let v6_out: BTreeMap<String, u64> = String::from_utf8_lossy(&v6.stdout)
        .lines()
        .filter_map(|l| {
            let (path, rest) = l.split_once(':')?;
            let name = path.rsplit('/').next()?.to_string();
            let n = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((name, n))
        })
        .collect();
    Ok(links
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| {
                    let name = l["ifname"].as_str()?.to_string();
                    let s = &l["stats64"];
                    let rx = s["rx"]["packets"].as_u64().unwrap_or_default();
                    let tx = s["tx"]["packets"].as_u64().unwrap_or_default();
                    let six = v6_out.get(&name).copied().unwrap_or_default();
                    (name != "lo").then_some((name, (rx, tx, six)))
                })
                .collect()
        })
        .unwrap_or_default())
}

impl Cluster {
    /// Pings `to`'s address on `ifname` from `from`'s address on it
    /// (`count` requests 0.1 s apart) and reads, from the link counters,
    /// which interfaces of `to` sent and which of `from` received.
    pub fn ping_rail(&self, from: &Pod, to: &Pod, ifname: &str, count: u64) -> Result<RailPing> {
        let src = from.ipv4(ifname)?;
        let dst = to.ipv4(ifname)?;
        let before = (link_counters(to)?, link_counters(from)?);
        let (received, text) = from.ping(&src, &dst, count, &[])?;
        let after = (link_counters(to)?, link_counters(from)?);
        let replier_tx = after
            .0
            .iter()
            .map(|(n, (_, tx, six))| {
                let (_, tx0, six0) = before.0.get(n).copied().unwrap_or((0, *tx, *six));
                (
                    n.clone(),
                    tx.saturating_sub(tx0)
                        .saturating_sub(six.saturating_sub(six0)),
                )
            })
            .collect();
        let asker_rx = after
            .1
            .iter()
            .map(|(n, (rx, _, _))| {
                let rx0 = before.1.get(n).map_or(*rx, |c| c.0);
                (n.clone(), rx.saturating_sub(rx0))
            })
            .collect();
        Ok(RailPing {
            ifname: ifname.to_string(),
            from: src,
            to: dst,
            sent: count,
            received,
            replier_tx,
            asker_rx,
            output: text
                .lines()
                .filter(|l| l.contains("packets") || l.contains("rtt"))
                .collect::<Vec<_>>()
                .join("\n"),
        })
    }
}
