//! Applying an IPAM result to an interface: addresses, then routes.

use std::net::IpAddr;

use crate::error::{Error, StepExt};
use crate::ids::IfName;
use crate::netlink::{Link, RouteSocket, RouteSpec};
use crate::result::CniResult;
use crate::sysctl;

/// Per-interface sysctls set before addresses go on: announce address
/// changes (ARP/NA) and let IPv6 addresses be used during DAD. Errors are
/// ignored: kernels without IPv6 or optimistic DAD lack some of these files.
/// Must run inside the pod netns (`NetNs::run`).
pub fn prepare_sysctls(ifname: &IfName, has_ipv6: bool) {
    let _ = crate::announce::enable_kernel_announcements(ifname);
    if has_ipv6 {
        let _ = sysctl::set_iface("ipv6", ifname, "disable_ipv6", "0");
        let _ = sysctl::set_iface("ipv6", ifname, "optimistic_dad", "1");
    }
}

/// Adds every address of `result` to `link`, then every route through it. A
/// route without a gateway uses the result's gateway of the same family, as
/// the Go plugins' ConfigureIface does.
pub fn configure(sock: &RouteSocket, link: &Link, result: &CniResult) -> Result<(), Error> {
    for ip in &result.ips {
        sock.add_address(link, &ip.address)
            .step(|| format!("configure {} on {}", ip.address, link.name))?;
    }
    for route in &result.routes {
        let v4 = route.dst.addr().is_ipv4();
        let gw: Option<IpAddr> = route.gw.or_else(|| result.gateway_for(v4));
        let mut spec = RouteSpec::new(route.dst, gw, link.index);
        spec.metric = route.priority;
        spec.mtu = route.mtu;
        if let Some(t) = route.table {
            spec.table = t;
        }
        sock.add_route(&spec)
            .step(|| format!("add route {} on {}", route.dst, link.name))?;
    }
    Ok(())
}
