//! Validated identifiers. Input reaches a filesystem path or the kernel only
//! through one of these types, so every check lives here once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a value was rejected; the caller adds the key it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} {reason}")]
pub struct InvalidId {
    pub value: String,
    pub reason: &'static str,
}

fn invalid(value: &str, reason: &'static str) -> InvalidId {
    InvalidId {
        value: value.chars().take(80).collect(),
        reason,
    }
}

/// Longest container ID we accept: `<id>-<ifname>.json` must fit in a
/// 255-byte file name.
const MAX_CONTAINER_ID: usize = 230;

/// A container ID: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (the CNI spec's rule).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(String);

impl ContainerId {
    pub fn parse(s: &str) -> Result<ContainerId, InvalidId> {
        let mut chars = s.chars();
        match chars.next() {
            None => return Err(invalid(s, "is empty")),
            Some(c) if !c.is_ascii_alphanumeric() => {
                return Err(invalid(s, "must start with a letter or digit"));
            }
            _ => {}
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
            return Err(invalid(
                s,
                "may contain only letters, digits, '_', '.' and '-'",
            ));
        }
        if s.len() > MAX_CONTAINER_ID {
            return Err(invalid(s, "is longer than 230 characters"));
        }
        Ok(ContainerId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Linux interface name: 1-15 bytes, no '/', ':', whitespace or NUL, not '.' or '..'.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IfName(String);

impl IfName {
    pub fn parse(s: &str) -> Result<IfName, InvalidId> {
        if s.is_empty() {
            return Err(invalid(s, "is empty"));
        }
        if s.len() > 15 {
            return Err(invalid(s, "is longer than 15 bytes (IFNAMSIZ)"));
        }
        if s == "." || s == ".." {
            return Err(invalid(s, "is not a valid interface name"));
        }
        if s.chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
        {
            return Err(invalid(s, "must not contain '/', ':', NUL or whitespace"));
        }
        Ok(IfName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A full PCI address `dddd:bb:dd.f`, stored lower-case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddr(String);

impl PciAddr {
    pub fn parse(s: &str) -> Result<PciAddr, InvalidId> {
        let b = s.as_bytes();
        let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
        let ok = b.len() == 12
            && hex(0..4)
            && b[4] == b':'
            && hex(5..7)
            && b[7] == b':'
            && hex(8..10)
            && b[10] == b'.'
            && (b'0'..=b'7').contains(&b[11]);
        if !ok {
            return Err(invalid(
                s,
                "is not a PCI address of the form dddd:bb:dd.f (e.g. 0000:af:06.0)",
            ));
        }
        Ok(PciAddr(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff` (any case).
    pub fn parse(s: &str) -> Result<MacAddr, InvalidId> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() != 6 {
            return Err(invalid(s, "is not a MAC address (aa:bb:cc:dd:ee:ff)"));
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(invalid(s, "is not a MAC address (aa:bb:cc:dd:ee:ff)"));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| invalid(s, "is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
        }
        Ok(MacAddr(mac))
    }

    /// Parses and requires a unicast, non-zero address (what a VF can be given).
    pub fn parse_unicast(s: &str) -> Result<MacAddr, InvalidId> {
        let mac = MacAddr::parse(s)?;
        if mac.is_zero() {
            return Err(invalid(s, "is the all-zero MAC address"));
        }
        if mac.0[0] & 1 == 1 {
            return Err(invalid(s, "is a multicast MAC address"));
        }
        Ok(mac)
    }

    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(b).ok().map(MacAddr)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

macro_rules! string_id_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $t {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                <$t>::parse(s)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id_impls!(ContainerId);
string_id_impls!(IfName);
string_id_impls!(PciAddr);

impl FromStr for MacAddr {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        MacAddr::parse(s)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MacAddr::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        for ok in ["a", "0", "cnitool-77383ca0a0715733ca6f", "abc_DEF.1-2"] {
            assert!(ContainerId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-a", ".a", "_a", "a/b", "../x", "a b", "a\0b", "é", "a:b",
        ] {
            assert!(ContainerId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ContainerId::parse(&"a".repeat(230)).is_ok());
        assert!(ContainerId::parse(&"a".repeat(231)).is_err());
    }

    #[test]
    fn interface_names() {
        for ok in ["eth0", "net1", "a", "x".repeat(15).as_str(), "vf-0.1"] {
            assert!(IfName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\0",
            &"x".repeat(16),
        ] {
            assert!(IfName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pci_addresses() {
        assert_eq!(
            PciAddr::parse("0000:AF:06.1").map(|p| p.to_string()),
            Ok("0000:af:06.1".to_string())
        );
        for bad in [
            "",
            "af:06.1",
            "0000:af:06.8",
            "0000:af:06",
            "0000:af:06.1 ",
            "../../../etc",
            "0000:zf:06.1",
            "0000/af:06.1",
        ] {
            assert!(PciAddr::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mac_addresses() {
        assert_eq!(
            MacAddr::parse("02:AA:bb:00:11:ff").map(|m| m.to_string()),
            Ok("02:aa:bb:00:11:ff".to_string())
        );
        assert!(MacAddr::parse("02-aa-bb-00-11-ff").is_ok());
        for bad in [
            "",
            "02:aa:bb:00:11",
            "02:aa:bb:00:11:ff:00",
            "0g:aa:bb:00:11:ff",
            "2:aa:bb:00:11:ff",
        ] {
            assert!(MacAddr::parse(bad).is_err(), "{bad:?}");
        }
        assert!(MacAddr::parse_unicast("00:00:00:00:00:00").is_err());
        assert!(MacAddr::parse_unicast("01:00:5e:00:00:01").is_err());
        assert!(MacAddr::parse_unicast("02:00:5e:00:00:01").is_ok());
    }
}
