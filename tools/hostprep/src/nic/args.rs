//! `set-nic-addr`'s flags, validated: a NIC name, a unicast host address
//! with its prefix, a gateway inside that subnet, a table that is not one of
//! the kernel's own, a rule priority before `main`, an MTU.

use std::net::IpAddr;

use ipnet::IpNet;
use libcni::ids::IfName;
use serde::{Deserialize, Serialize};

use crate::error::HostprepError;

/// Rules must come before `main` (32766) to take effect.
const MAX_PRIORITY: u32 = 32765;
const PRIORITY_BASE: u32 = 1000;

/// What `set-nic-addr` configures, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicConfig {
    pub nic: IfName,
    pub address: IpNet,
    pub gateway: IpAddr,
    pub table: u32,
    pub priority: u32,
    pub mtu: Option<u32>,
}

/// The flags of `set-nic-addr`, as given.
#[derive(Clone, Debug, Default)]
pub struct NicArgs {
    pub nic: Option<String>,
    pub address: Option<String>,
    pub gateway: Option<String>,
    pub table: Option<String>,
    pub priority: Option<String>,
    pub mtu: Option<String>,
}

fn required<'a>(flag: &'static str, v: &'a Option<String>) -> Result<&'a str, HostprepError> {
    v.as_deref()
        .ok_or_else(|| HostprepError::Usage(format!("set-nic-addr needs {flag}")))
}

pub fn parse_nic(value: &str) -> Result<IfName, HostprepError> {
    IfName::parse(value).map_err(|e| HostprepError::invalid("--nic", value, e.reason))
}

fn parse_u32(flag: &'static str, value: &str) -> Result<u32, HostprepError> {
    value
        .parse()
        .map_err(|_| HostprepError::invalid(flag, value, "is not an unsigned 32-bit number"))
}

/// An address usable on a host NIC, with its prefix.
pub fn parse_address(value: &str) -> Result<IpNet, HostprepError> {
    let bad = |reason: &str| HostprepError::invalid("--address", value, reason);
    if !value.contains('/') {
        return Err(bad("must be ADDRESS/PREFIX (e.g. 172.16.11.10/24)"));
    }
    let net: IpNet = value
        .parse()
        .map_err(|_| bad("is not an IPv4 or IPv6 address with a prefix length"))?;
    if net.prefix_len() == 0 {
        return Err(bad("has prefix length 0"));
    }
    if !usable_unicast(net.addr()) {
        return Err(bad(
            "is not a unicast host address (unspecified, loopback, multicast, broadcast or link-local)",
        ));
    }
    if is_network_or_broadcast(&net, net.addr()) {
        return Err(bad("is the subnet's network or broadcast address"));
    }
    Ok(net)
}

fn usable_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_link_local())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_unicast_link_local())
        }
    }
}

/// IPv4 subnets up to /30 have a network and a broadcast address no host may use.
fn is_network_or_broadcast(net: &IpNet, ip: IpAddr) -> bool {
    matches!(net, IpNet::V4(n) if n.prefix_len() <= 30 && (IpAddr::V4(n.network()) == ip || IpAddr::V4(n.broadcast()) == ip))
}

pub fn parse_gateway(value: &str, address: &IpNet) -> Result<IpAddr, HostprepError> {
    let bad = |reason: &str| HostprepError::invalid("--gateway", value, reason);
    let gw: IpAddr = value
        .parse()
        .map_err(|_| bad("is not an IPv4 or IPv6 address"))?;
    if gw.is_ipv4() != address.addr().is_ipv4() {
        return Err(bad("is not of the address's IP family"));
    }
    if gw == address.addr() {
        return Err(bad("is the NIC's own address"));
    }
    if !usable_unicast(gw) {
        return Err(bad("is not a unicast address"));
    }
    if !address.contains(&gw) || is_network_or_broadcast(address, gw) {
        return Err(bad(&format!(
            "is not a host address of {}",
            address.trunc()
        )));
    }
    Ok(gw)
}

pub fn parse_table(value: &str) -> Result<u32, HostprepError> {
    let t = parse_u32("--table", value)?;
    match t {
        0 | 253..=255 => Err(HostprepError::invalid(
            "--table",
            value,
            "is reserved (0 unspec, 253 default, 254 main, 255 local)",
        )),
        _ => Ok(t),
    }
}

pub fn parse_mtu(value: &str, address: &IpNet) -> Result<u32, HostprepError> {
    let mtu = parse_u32("--mtu", value)?;
    let min = if address.addr().is_ipv6() { 1280 } else { 68 };
    if !(min..=65535).contains(&mtu) {
        return Err(HostprepError::invalid(
            "--mtu",
            value,
            format!("must be {min}-65535"),
        ));
    }
    Ok(mtu)
}

fn parse_priority(value: Option<&str>, table: u32) -> Result<u32, HostprepError> {
    match value {
        Some(v) => {
            let p = parse_u32("--priority", v)?;
            if !(1..=MAX_PRIORITY).contains(&p) {
                return Err(HostprepError::invalid(
                    "--priority",
                    v,
                    format!("must be 1-{MAX_PRIORITY} (before the main table's rule)"),
                ));
            }
            Ok(p)
        }
        None => table
            .checked_add(PRIORITY_BASE)
            .filter(|p| *p <= MAX_PRIORITY)
            .ok_or_else(|| {
                HostprepError::Usage(format!(
                    "the default rule priority is 1000 + table, above {MAX_PRIORITY} for table {table}: give --priority"
                ))
            }),
    }
}

impl NicArgs {
    pub fn validate(&self) -> Result<NicConfig, HostprepError> {
        let nic = parse_nic(required("--nic", &self.nic)?)?;
        let address = parse_address(required("--address", &self.address)?)?;
        let gateway = parse_gateway(required("--gateway", &self.gateway)?, &address)?;
        let table = parse_table(required("--table", &self.table)?)?;
        let priority = parse_priority(self.priority.as_deref(), table)?;
        let mtu = self
            .mtu
            .as_deref()
            .map(|m| parse_mtu(m, &address))
            .transpose()?;
        Ok(NicConfig {
            nic,
            address,
            gateway,
            table,
            priority,
            mtu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(address: &str, gateway: &str, table: &str) -> NicArgs {
        NicArgs {
            nic: Some("hp0".into()),
            address: Some(address.into()),
            gateway: Some(gateway.into()),
            table: Some(table.into()),
            ..NicArgs::default()
        }
    }

    #[test]
    fn valid_request_gets_the_default_priority() {
        let cfg = args("172.16.11.10/24", "172.16.11.254", "111")
            .validate()
            .expect("valid");
        assert_eq!(cfg.priority, 1111);
        assert_eq!(cfg.mtu, None);
        let v6 = args("fd00:11::10/64", "fd00:11::1", "112")
            .validate()
            .expect("v6");
        assert_eq!(v6.gateway, "fd00:11::1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn every_flag_is_validated() {
        let cases: [(NicArgs, &str); 14] = [
            (args("172.16.11.10", "172.16.11.254", "111"), "--address"),
            (args("172.16.11.0/24", "172.16.11.254", "111"), "--address"),
            (
                args("172.16.11.255/24", "172.16.11.254", "111"),
                "--address",
            ),
            (args("127.0.0.1/8", "127.0.0.2", "111"), "--address"),
            (args("fe80::1/64", "fe80::2", "111"), "--address"),
            (args("172.16.11.10/24", "172.16.12.254", "111"), "--gateway"),
            (args("172.16.11.10/24", "172.16.11.10", "111"), "--gateway"),
            (args("172.16.11.10/24", "fd00::1", "111"), "--gateway"),
            (args("172.16.11.10/24", "172.16.11.255", "111"), "--gateway"),
            (args("172.16.11.10/24", "172.16.11.254", "254"), "--table"),
            (args("172.16.11.10/24", "172.16.11.254", "0"), "--table"),
            (args("172.16.11.10/24", "172.16.11.254", "-1"), "--table"),
            (
                NicArgs {
                    nic: Some("a/b".into()),
                    ..args("172.16.11.10/24", "172.16.11.254", "111")
                },
                "--nic",
            ),
            (
                NicArgs {
                    mtu: Some("67".into()),
                    ..args("172.16.11.10/24", "172.16.11.254", "111")
                },
                "--mtu",
            ),
        ];
        for (a, flag) in cases {
            let e = a.validate().expect_err(flag).to_string();
            assert!(e.starts_with(&format!("invalid {flag}")), "{flag}: {e}");
        }
        let mut big = args("172.16.11.10/24", "172.16.11.254", "40000");
        assert!(matches!(big.validate(), Err(HostprepError::Usage(_))));
        big.priority = Some("32766".into());
        assert!(big.validate().is_err(), "main's priority refused");
        big.priority = Some("500".into());
        assert_eq!(big.validate().expect("explicit").priority, 500);
        let mut no_gw = args("172.16.11.10/24", "x", "111");
        no_gw.gateway = None;
        assert!(matches!(no_gw.validate(), Err(HostprepError::Usage(_))));
    }
}
