//! `check`: what a node's RDMA NICs have and lack, per NIC (PFs found in
//! sysfs, or named): link layer, VFs, MTU, link state, addresses and their
//! policy routing, RDMA devices, and the RDMA netns mode now and persisted.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use libcni::ids::{IfName, PciAddr};
use libcni::netlink::{RouteSocket, RuleSpec};
use libcni::rdma::{NetnsMode, RdmaParent};
use libcni::sysfs::Sysfs;
use serde::Serialize;

use crate::error::HostprepError;
use crate::mode::{self, ModeReading, Persisted};

/// ARPHRD_ETHER and ARPHRD_INFINIBAND (`/sys/class/net/<nic>/type`).
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_INFINIBAND: u32 = 32;
/// Default minimum MTU. RoCE carries RDMA's largest path MTU (4096) only
/// when the netdev's MTU also fits the RoCE headers (GRH, BTH, ICRC...):
/// 4200 is the usual figure, and jumbo MTUs (8000, 9000) pass. On
/// InfiniBand: the IPoIB datagram-mode MTU of a 4K IB MTU.
const MIN_MTU_ETHERNET: u32 = 4200;
const MIN_MTU_INFINIBAND: u32 = 4092;

pub struct CheckOptions {
    pub sysfs_root: PathBuf,
    /// Empty: every netdev with `device/sriov_totalvfs` under class/net.
    pub nics: Vec<IfName>,
    pub min_mtu: Option<u32>,
    pub modprobe_dir: PathBuf,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub ready: bool,
    pub rdma_netns_mode: &'static str,
    pub rdma_netns_mode_detail: String,
    pub persisted_netns_mode: Option<PersistedReport>,
    /// Host-wide gaps (per-NIC ones are in each NIC).
    pub missing: Vec<String>,
    pub nics: Vec<NicReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistedReport {
    pub mode: Option<String>,
    pub value: String,
    pub file: PathBuf,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NicReport {
    pub name: String,
    pub pci: Option<String>,
    /// `Ethernet`, `InfiniBand`, `ARPHRD <n>` or `unknown`.
    pub link_layer: String,
    pub num_vfs: Option<u32>,
    pub total_vfs: Option<u32>,
    pub mtu: Option<u32>,
    pub up: Option<bool>,
    pub addresses: Vec<String>,
    pub policy_routes: Vec<PolicyRoute>,
    pub rdma_devices: Vec<String>,
    pub rdma_netns_mode: &'static str,
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRoute {
    pub address: IpAddr,
    pub table: u32,
    pub priority: u32,
    pub default_via: Option<IpAddr>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_u32(path: &Path) -> Option<u32> {
    read_trimmed(path)?.parse().ok()
}

fn class_net(root: &Path) -> PathBuf {
    root.join("class/net")
}

/// Netdevs under class/net that are SR-IOV PFs, sorted.
pub fn discover(root: &Path) -> Result<Vec<IfName>, HostprepError> {
    let dir = class_net(root);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HostprepError::io("list", &dir)(e)),
    };
    let mut nics: Vec<IfName> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| IfName::parse(&n).ok())
        .filter(|n| dir.join(n.as_str()).join("device/sriov_totalvfs").is_file())
        .collect();
    nics.sort();
    Ok(nics)
}

fn link_layer(arphrd: Option<u32>) -> String {
    match arphrd {
        Some(ARPHRD_ETHER) => "Ethernet".into(),
        Some(ARPHRD_INFINIBAND) => "InfiniBand".into(),
        Some(n) => format!("ARPHRD {n}"),
        None => "unknown".into(),
    }
}

/// The rules and tables of this netns, read once for every NIC.
struct Routing {
    rules: Vec<RuleSpec>,
}

impl Routing {
    fn read(sock: &RouteSocket) -> Result<Routing, HostprepError> {
        let mut rules = sock.rules(false)?;
        rules.extend(sock.rules(true)?);
        Ok(Routing { rules })
    }
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn is_link_local(net: &IpNet) -> bool {
    match net {
        IpNet::V4(n) => n.addr().is_link_local(),
        IpNet::V6(n) => n.addr().is_unicast_link_local(),
    }
}

/// Sysfs facts of one NIC.
fn sysfs_facts(root: &Path, nic: &IfName, r: &mut NicReport) {
    let dir = class_net(root).join(nic.as_str());
    if fs::symlink_metadata(&dir).is_err() {
        r.missing
            .push(format!("not found in sysfs ({})", dir.display()));
        return;
    }
    r.link_layer = link_layer(read_u32(&dir.join("type")));
    let pci = fs::read_link(dir.join("device"))
        .ok()
        .and_then(|t| t.file_name()?.to_str().map(str::to_string))
        .and_then(|n| PciAddr::parse(&n).ok());
    r.pci = pci.as_ref().map(|p| p.to_string());
    r.total_vfs = read_u32(&dir.join("device/sriov_totalvfs"));
    r.num_vfs = read_u32(&dir.join("device/sriov_numvfs"));
    match (r.num_vfs, r.total_vfs) {
        (_, None) => r
            .missing
            .push("not an SR-IOV PF (no device/sriov_totalvfs)".into()),
        (None | Some(0), Some(total)) => r.missing.push(format!(
            "no VFs created (sriov_numvfs is 0 of {total}: write the count to {}/device/sriov_numvfs)",
            dir.display()
        )),
        _ => {}
    }
    match pci {
        Some(pci) => match Sysfs::new(root).rdma_devices(&RdmaParent::Pci(pci.clone())) {
            Ok(devs) if !devs.is_empty() => r.rdma_devices = devs,
            Ok(_) => r.missing.push(format!(
                "no RDMA device (nothing under {pci}/infiniband: is the RDMA driver loaded?)"
            )),
            Err(e) => r.missing.push(format!("cannot list RDMA devices: {e}")),
        },
        None => r
            .missing
            .push("no PCI function (device link missing or not a PCI address)".into()),
    }
}

/// Netlink facts of one NIC: MTU, state, addresses, policy routing.
fn netlink_facts(
    sock: &RouteSocket,
    routing: &Routing,
    nic: &IfName,
    min_mtu: u32,
    r: &mut NicReport,
) -> Result<(), HostprepError> {
    let Some(link) = sock.link_by_name(nic.as_str())? else {
        r.missing
            .push(format!("no network device {nic} in this network namespace"));
        return Ok(());
    };
    r.mtu = Some(link.mtu);
    r.up = Some(link.up);
    if link.mtu < min_mtu {
        r.missing.push(format!(
            "MTU {} below {min_mtu} (set-nic-addr --mtu; check --min-mtu sets the bar)",
            link.mtu
        ));
    }
    if !link.up {
        r.missing.push("link is down".into());
    }
    let addrs: Vec<IpNet> = sock
        .addresses(&link)?
        .into_iter()
        .filter(|a| !is_link_local(a))
        .collect();
    if addrs.is_empty() {
        r.missing.push("no IP address (see set-nic-addr)".into());
    }
    for a in &addrs {
        r.addresses.push(a.to_string());
        let ip = a.addr();
        let rules: Vec<&RuleSpec> = routing
            .rules
            .iter()
            .filter(|x| x.from.addr() == ip && x.from.prefix_len() == host_prefix(ip))
            .collect();
        if rules.is_empty() {
            r.missing.push(format!(
                "no policy routing for {ip} (no `from {ip} lookup <table>` rule; see set-nic-addr)"
            ));
        }
        for rule in rules {
            let default_via = sock
                .routes(ip.is_ipv6(), rule.table)?
                .into_iter()
                .find(|x| x.is_default() && x.oif == Some(link.index))
                .and_then(|x| x.gateway);
            if default_via.is_none() {
                r.missing.push(format!(
                    "table {} (rule from {ip}) has no default route via {nic}",
                    rule.table
                ));
            }
            r.policy_routes.push(PolicyRoute {
                address: ip,
                table: rule.table,
                priority: rule.priority,
                default_via,
            });
        }
    }
    Ok(())
}

fn mode_gap(mode: &ModeReading) -> Option<String> {
    match mode {
        ModeReading::Mode(NetnsMode::Exclusive) => None,
        ModeReading::Mode(NetnsMode::Shared) => {
            Some("RDMA netns mode is shared (rdma-hostprep netns-mode exclusive --persist)".into())
        }
        ModeReading::Unavailable(_) => {
            Some("no RDMA subsystem (RDMA netns mode unavailable)".into())
        }
        ModeReading::Error(e) => Some(format!("RDMA netns mode unknown: {e}")),
    }
}

fn persisted_gap(dir: &Path, p: &Option<Persisted>) -> Option<String> {
    match p {
        Some(p) if p.mode == Some(NetnsMode::Exclusive) => None,
        Some(p) => Some(format!(
            "{} sets netns_mode={}, not exclusive (0)",
            p.file.display(),
            p.value
        )),
        None => Some(format!(
            "exclusive RDMA netns mode not persisted in {} (rdma-hostprep netns-mode exclusive --persist)",
            dir.display()
        )),
    }
}

/// Runs every check. `mode` is the running kernel's RDMA netns mode.
pub fn check(
    opts: &CheckOptions,
    sock: &RouteSocket,
    mode: &ModeReading,
) -> Result<Report, HostprepError> {
    let nics = if opts.nics.is_empty() {
        discover(&opts.sysfs_root)?
    } else {
        opts.nics.clone()
    };
    let persisted = mode::persisted_mode(&opts.modprobe_dir)?;
    let mut missing = Vec::new();
    if nics.is_empty() {
        missing.push(format!(
            "no SR-IOV NIC found under {} (no netdev with device/sriov_totalvfs)",
            class_net(&opts.sysfs_root).display()
        ));
    }
    missing.extend(persisted_gap(&opts.modprobe_dir, &persisted));
    let routing = Routing::read(sock)?;
    let mut reports = Vec::new();
    for nic in &nics {
        let mut r = NicReport {
            name: nic.to_string(),
            link_layer: link_layer(None),
            rdma_netns_mode: mode.label(),
            ..NicReport::default()
        };
        sysfs_facts(&opts.sysfs_root, nic, &mut r);
        let min_mtu = opts.min_mtu.unwrap_or(if r.link_layer == "InfiniBand" {
            MIN_MTU_INFINIBAND
        } else {
            MIN_MTU_ETHERNET
        });
        netlink_facts(sock, &routing, nic, min_mtu, &mut r)
            .map_err(|e| e.step(format!("check {nic}")))?;
        r.missing.extend(mode_gap(mode));
        reports.push(r);
    }
    let ready = missing.is_empty() && reports.iter().all(|r| r.missing.is_empty());
    Ok(Report {
        ready,
        rdma_netns_mode: mode.label(),
        rdma_netns_mode_detail: mode.describe(),
        persisted_netns_mode: persisted.map(|p| PersistedReport {
            mode: p.mode.map(|m| m.to_string()),
            value: p.value,
            file: p.file,
        }),
        missing,
        nics: reports,
    })
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "?".to_string(), |v| v.to_string())
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

impl Report {
    /// The text form of the report.
    pub fn text(&self) -> String {
        let mut out = format!("RDMA netns mode: {}\n", self.rdma_netns_mode_detail);
        out.push_str(&match &self.persisted_netns_mode {
            Some(p) => format!(
                "persisted netns mode: {} (netns_mode={} in {})\n",
                p.mode.as_deref().unwrap_or("invalid"),
                p.value,
                p.file.display()
            ),
            None => "persisted netns mode: not set\n".into(),
        });
        for m in &self.missing {
            out.push_str(&format!("missing: {m}\n"));
        }
        for n in &self.nics {
            out.push_str(&n.text());
        }
        let gaps = self.missing.len() + self.nics.iter().map(|n| n.missing.len()).sum::<usize>();
        out.push_str(&if self.ready {
            "ready: yes\n".to_string()
        } else {
            format!("ready: no ({gaps} missing)\n")
        });
        out
    }
}

impl NicReport {
    fn text(&self) -> String {
        let routes: Vec<String> = self
            .policy_routes
            .iter()
            .map(|p| {
                format!(
                    "from {} lookup {} priority {} (default via {})",
                    p.address,
                    p.table,
                    p.priority,
                    opt(p.default_via)
                )
            })
            .collect();
        let mut out = format!("NIC {} (PCI {})\n", self.name, opt(self.pci.as_deref()));
        out.push_str(&format!("  link layer:      {}\n", self.link_layer));
        out.push_str(&format!(
            "  VFs:             {} of {}\n",
            opt(self.num_vfs),
            opt(self.total_vfs)
        ));
        out.push_str(&format!("  MTU:             {}\n", opt(self.mtu)));
        let state = self.up.map(|u| if u { "up" } else { "down" });
        out.push_str(&format!("  state:           {}\n", opt(state)));
        out.push_str(&format!("  addresses:       {}\n", list(&self.addresses)));
        out.push_str(&format!("  policy routes:   {}\n", list(&routes)));
        out.push_str(&format!(
            "  RDMA devices:    {}\n",
            list(&self.rdma_devices)
        ));
        let mode = if self.rdma_netns_mode == "unavailable" {
            "unavailable (no RDMA subsystem)"
        } else {
            self.rdma_netns_mode
        };
        out.push_str(&format!("  RDMA netns mode: {mode}\n"));
        for m in &self.missing {
            out.push_str(&format!("  missing: {m}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn discovers_only_sriov_pfs_with_valid_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        for (nic, pci, sriov) in [
            ("pf0", "0000:af:00.0", true),
            ("eth0", "0000:01:00.0", false),
        ] {
            let dev = root.join("bus/pci/devices").join(pci);
            fs::create_dir_all(&dev).expect("mkdir");
            if sriov {
                fs::write(dev.join("sriov_totalvfs"), "8\n").expect("w");
            }
            let class = root.join("class/net").join(nic);
            fs::create_dir_all(&class).expect("mkdir");
            symlink(
                format!("../../../bus/pci/devices/{pci}"),
                class.join("device"),
            )
            .expect("link");
        }
        let found = discover(root).expect("discover");
        assert_eq!(
            found.iter().map(IfName::as_str).collect::<Vec<_>>(),
            ["pf0"]
        );
        assert!(
            discover(&root.join("nonexistent"))
                .expect("none")
                .is_empty()
        );
    }

    #[test]
    fn link_layers_from_arphrd() {
        assert_eq!(link_layer(Some(1)), "Ethernet");
        assert_eq!(link_layer(Some(32)), "InfiniBand");
        assert_eq!(link_layer(Some(772)), "ARPHRD 772");
        assert_eq!(link_layer(None), "unknown");
    }

    #[test]
    fn mode_gaps() {
        assert_eq!(mode_gap(&ModeReading::Mode(NetnsMode::Exclusive)), None);
        assert!(
            mode_gap(&ModeReading::Mode(NetnsMode::Shared))
                .expect("gap")
                .starts_with("RDMA netns mode is shared")
        );
        assert_eq!(
            mode_gap(&ModeReading::Unavailable("x".into())).as_deref(),
            Some("no RDMA subsystem (RDMA netns mode unavailable)")
        );
    }
}
