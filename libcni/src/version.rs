//! CNI specification versions this suite speaks.

use std::fmt;

/// A CNI specification version we can parse and emit.
///
/// Ordered, so `v >= SpecVersion::V0_4_0` reads as "CHECK exists".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl SpecVersion {
    pub const ALL: [SpecVersion; 5] = [
        SpecVersion::V0_3_0,
        SpecVersion::V0_3_1,
        SpecVersion::V0_4_0,
        SpecVersion::V1_0_0,
        SpecVersion::V1_1_0,
    ];

    /// The newest version; used when a caller gives none.
    pub const LATEST: SpecVersion = SpecVersion::V1_1_0;

    pub fn parse(s: &str) -> Option<SpecVersion> {
        SpecVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_3_0 => "0.3.0",
            SpecVersion::V0_3_1 => "0.3.1",
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Results before 1.0.0 carry `ips[].version`.
    pub fn has_ip_version_field(self) -> bool {
        self < SpecVersion::V1_0_0
    }

    /// 1.1.0 added interface `mtu`, `pciID`, `socketPath` and route attributes.
    pub fn has_v11_fields(self) -> bool {
        self >= SpecVersion::V1_1_0
    }
}

impl fmt::Display for SpecVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_orders() {
        for v in SpecVersion::ALL {
            assert_eq!(SpecVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(SpecVersion::parse("0.2.0"), None);
        assert_eq!(SpecVersion::parse("1.1"), None);
        assert!(SpecVersion::V0_4_0 > SpecVersion::V0_3_1);
        assert!(SpecVersion::V0_4_0.has_ip_version_field());
        assert!(!SpecVersion::V1_0_0.has_ip_version_field());
        assert!(SpecVersion::V1_1_0.has_v11_fields());
    }
}
