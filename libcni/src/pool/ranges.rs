//! Sets of IP addresses as sorted, disjoint, inclusive ranges of u128, so
//! IPv4 and IPv6 share one arithmetic and the k-th address of a pool is a
//! binary search away (no per-address storage).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        // A v4 set only ever holds values below 2^32.
        IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX)))
    }
}

/// Parses `a-b` or a single address `a`.
pub fn parse_range(s: &str) -> Option<(IpAddr, IpAddr)> {
    let s = s.trim();
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b): (IpAddr, IpAddr) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
            (a.is_ipv4() == b.is_ipv4()).then_some((a, b))
        }
        None => s.parse().ok().map(|a| (a, a)),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    v6: bool,
    /// Sorted, disjoint, non-adjacent, inclusive.
    ranges: Vec<(u128, u128)>,
    /// starts[i] = number of addresses before range i.
    starts: Vec<u128>,
}

impl RangeSet {
    pub fn new(v6: bool, mut ranges: Vec<(u128, u128)>) -> RangeSet {
        ranges.retain(|(a, b)| a <= b);
        ranges.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        let mut starts = Vec::with_capacity(merged.len());
        let mut total: u128 = 0;
        for (a, b) in &merged {
            starts.push(total);
            total = total.saturating_add(b - a).saturating_add(1);
        }
        RangeSet {
            v6,
            ranges: merged,
            starts,
        }
    }

    pub fn is_v6(&self) -> bool {
        self.v6
    }

    pub fn ranges(&self) -> &[(u128, u128)] {
        &self.ranges
    }

    /// Number of addresses (saturating at u128::MAX).
    pub fn len(&self) -> u128 {
        match (self.ranges.last(), self.starts.last()) {
            (Some((a, b)), Some(s)) => s.saturating_add(b - a).saturating_add(1),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// This set without the addresses of `other`.
    pub fn subtract(&self, other: &RangeSet) -> RangeSet {
        let mut out = Vec::new();
        for &(a, b) in &self.ranges {
            let mut cur = Some((a, b));
            for &(x, y) in &other.ranges {
                let Some((s, e)) = cur else { break };
                if y < s || x > e {
                    continue;
                }
                if x > s {
                    out.push((s, x - 1));
                }
                cur = if y < e { Some((y + 1, e)) } else { None };
            }
            if let Some(r) = cur {
                out.push(r);
            }
        }
        RangeSet::new(self.v6, out)
    }

    pub fn intersects(&self, other: &RangeSet) -> bool {
        self.v6 == other.v6
            && self
                .ranges
                .iter()
                .any(|&(a, b)| other.ranges.iter().any(|&(x, y)| a <= y && x <= b))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.index_of(ip).is_some()
    }

    /// The k-th address (0-based).
    pub fn nth(&self, k: u128) -> Option<IpAddr> {
        let i = self.starts.partition_point(|s| *s <= k).checked_sub(1)?;
        let (a, b) = self.ranges[i];
        let v = a.checked_add(k - self.starts[i])?;
        (v <= b).then(|| from_u128(v, self.v6))
    }

    /// The position of `ip` in the set.
    pub fn index_of(&self, ip: IpAddr) -> Option<u128> {
        if ip.is_ipv6() != self.v6 {
            return None;
        }
        let v = to_u128(ip);
        let i = self.ranges.partition_point(|r| r.0 <= v).checked_sub(1)?;
        let (a, b) = self.ranges[i];
        (v <= b).then(|| self.starts[i] + (v - a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> u128 {
        to_u128(s.parse().expect("ip"))
    }

    fn set(r: &[(&str, &str)]) -> RangeSet {
        RangeSet::new(false, r.iter().map(|(a, b)| (v4(a), v4(b))).collect())
    }

    #[test]
    fn merge_nth_index_and_len() {
        let s = set(&[
            ("10.0.0.10", "10.0.0.12"),
            ("10.0.0.1", "10.0.0.3"),
            ("10.0.0.4", "10.0.0.5"),
        ]);
        assert_eq!(s.ranges().len(), 2, "adjacent ranges merge");
        assert_eq!(s.len(), 8);
        assert_eq!(s.nth(0), "10.0.0.1".parse().ok());
        assert_eq!(s.nth(4), "10.0.0.5".parse().ok());
        assert_eq!(s.nth(5), "10.0.0.10".parse().ok());
        assert_eq!(s.nth(7), "10.0.0.12".parse().ok());
        assert_eq!(s.nth(8), None);
        for k in 0..8 {
            let ip = s.nth(k).expect("in set");
            assert_eq!(s.index_of(ip), Some(k));
        }
        assert_eq!(s.index_of("10.0.0.7".parse().expect("ip")), None);
        assert_eq!(s.index_of("::1".parse().expect("ip")), None);
    }

    #[test]
    fn subtract_and_intersect() {
        let s = set(&[("10.0.0.1", "10.0.0.254")]);
        let minus = s.subtract(&set(&[
            ("10.0.0.1", "10.0.0.1"),
            ("10.0.0.100", "10.0.0.110"),
            ("10.0.0.254", "10.0.1.9"),
        ]));
        assert_eq!(minus.len(), 254 - 1 - 11 - 1);
        assert!(!minus.contains("10.0.0.105".parse().expect("ip")));
        assert!(minus.contains("10.0.0.111".parse().expect("ip")));
        assert!(s.intersects(&set(&[("10.0.0.254", "10.0.0.255")])));
        assert!(!s.intersects(&set(&[("10.0.1.0", "10.0.1.255")])));
    }

    #[test]
    fn ipv6_sizes_do_not_overflow() {
        let all = RangeSet::new(true, vec![(0, u128::MAX)]);
        assert_eq!(all.len(), u128::MAX);
        let s = RangeSet::new(true, vec![(v4("0.0.0.0") + (1 << 64), (1 << 64) + 9)]);
        assert_eq!(s.len(), 10);
        assert!(s.nth(9).is_some_and(|ip| ip.is_ipv6()));
    }

    #[test]
    fn parse_ranges() {
        assert!(parse_range("10.0.0.1-10.0.0.9").is_some());
        assert!(parse_range(" 10.0.0.1 ").is_some());
        assert!(parse_range("fd00::1-fd00::9").is_some());
        assert!(parse_range("10.0.0.1-fd00::9").is_none());
        assert!(parse_range("10.0.0.1-").is_none());
        assert!(parse_range("nope").is_none());
    }
}
