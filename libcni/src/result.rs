//! The CNI result: one internal model (the spec 1.1.0 superset), parsed from a result of any
//! supported version (including the legacy 0.1.0/0.2.0 `ip4`/`ip6` layout that old IPAM plugins
//! still print) and emitted exactly as Go's libcni does for a given version.
//!
//! Parsing reads fields as Go's `omitempty` does: `null` counts as absent, and so do `""` for
//! optional strings and IPs and `0` for `mtu`/`advmss`/`priority`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::version::SpecVersion;

/// A CNI result in the internal (1.1.0 superset) representation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// `mtu`, `socket_path` and `pci_id` are emitted for 1.1.0 only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub sandbox: Option<String>,
    pub socket_path: Option<String>,
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Keeps host bits: `10.1.2.3/24`.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`]; absent in IPAM results.
    pub interface: Option<usize>,
}

/// Everything after `gw` is emitted for 1.1.0 only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

impl Route {
    /// A plain route: destination and optional gateway, no 1.1.0 extras.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// Why a result could not be parsed. Values are shown as JSON (strings quoted).
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// `cniVersion` is not one we know (CNI error code 1 territory, not a decode error).
    #[error("cniVersion: unsupported result version {value:?}")]
    UnknownVersion { value: String },
    #[error("{path}: required field missing")]
    Missing { path: String },
    /// Wrong type, unparsable address, `ips[].version` not matching the address family,
    /// `ips[].interface` out of range.
    #[error("{path}: expected {expected}, got {value}")]
    Invalid {
        path: String,
        expected: String,
        value: String,
    },
}

impl CniResult {
    /// Parses a result of spec 0.1.0 through 1.1.0. Unknown keys are ignored.
    ///
    /// # Errors
    /// [`ResultError::UnknownVersion`] for an unknown `cniVersion`, else the first bad field.
    pub fn parse(value: &Value) -> Result<CniResult, ResultError> {
        let top = Obj::new(value, String::new());
        let top = top.map_err(|_| invalid("result".into(), "a JSON object", value))?;
        let legacy = match top.string("cniVersion")? {
            None | Some("") => top.get("ip4").is_some() || top.get("ip6").is_some(),
            Some("0.1.0" | "0.2.0") => true,
            Some(v) if SpecVersion::parse(v).is_some() => false,
            Some(v) => return Err(ResultError::UnknownVersion { value: v.into() }),
        };
        let mut result = CniResult::default();
        if let Some(v) = top.get("dns") {
            let d = Obj::new(v, "dns".into())?;
            result.dns.nameservers = d.strings("nameservers")?;
            result.dns.domain = d.opt_string("domain")?;
            result.dns.search = d.strings("search")?;
            result.dns.options = d.strings("options")?;
        }
        if legacy {
            parse_legacy(&top, &mut result)?;
        } else {
            parse_current(&top, &mut result)?;
        }
        Ok(result)
    }

    /// Emits the result as Go's libcni does for `version`.
    pub fn to_json(&self, version: SpecVersion) -> Value {
        let (v11, ip_version) = (version.has_v11_fields(), version.has_ip_version_field());
        let dns = Out::default()
            .list("nameservers", self.dns.nameservers.clone())
            .put("domain", non_empty(&self.dns.domain))
            .list("search", self.dns.search.clone())
            .list("options", self.dns.options.clone());
        let interfaces = self.interfaces.iter().map(|i| interface_json(i, v11));
        Out::default()
            .put("cniVersion", Some(version.as_str()))
            .list("interfaces", interfaces)
            .list("ips", self.ips.iter().map(|ip| ip_json(ip, ip_version)))
            .list("routes", self.routes.iter().map(|r| route_json(r, v11)))
            .put("dns", Some(dns.done()))
            .done()
    }

    /// Compact JSON text of [`CniResult::to_json`].
    pub fn to_string(&self, version: SpecVersion) -> String {
        self.to_json(version).to_string()
    }

    /// The IPs assigned to `interfaces[index]`.
    pub fn ips_for_interface(&self, index: usize) -> impl Iterator<Item = &IpConfig> {
        let ips = self.ips.iter();
        ips.filter(move |ip| ip.interface == Some(index))
    }

    /// The first gateway of the given family (IPv4 when `family_v4`) among `ips`.
    pub fn gateway_for(&self, family_v4: bool) -> Option<IpAddr> {
        let mut gateways = self.ips.iter().filter_map(|ip| ip.gateway);
        gateways.find(|gw| gw.is_ipv4() == family_v4)
    }
}

fn parse_current(top: &Obj<'_>, result: &mut CniResult) -> Result<(), ResultError> {
    for (i, v) in top.array("interfaces")?.iter().enumerate() {
        let o = Obj::new(v, format!("interfaces[{i}]"))?;
        result.interfaces.push(Interface {
            name: o.string("name")?.ok_or_else(|| o.missing("name"))?.into(),
            mac: o.opt_string("mac")?,
            mtu: o.nonzero_u32("mtu")?,
            sandbox: o.opt_string("sandbox")?,
            socket_path: o.opt_string("socketPath")?,
            pci_id: o.opt_string("pciID")?,
        });
    }
    let count = result.interfaces.len();
    for (i, v) in top.array("ips")?.iter().enumerate() {
        let o = Obj::new(v, format!("ips[{i}]"))?;
        let address = o.cidr("address")?;
        let family = family(&address);
        if let Some(v) = o.get("version").filter(|v| v.as_str() != Some(family)) {
            let expected = format!("\"{family}\" to match address {address}");
            return Err(invalid(o.sub("version"), expected, v));
        }
        let interface = o.uint::<usize>("interface", "a non-negative integer")?;
        if let Some(index) = interface.filter(|index| count > 0 && *index >= count) {
            let expected = format!("an index below {count} (the number of interfaces)");
            return Err(invalid(o.sub("interface"), expected, &index.into()));
        }
        let gateway = o.ip("gateway")?;
        result.ips.push(IpConfig {
            address,
            gateway,
            interface,
        });
    }
    for (i, v) in top.array("routes")?.iter().enumerate() {
        let route = parse_route(&Obj::new(v, format!("routes[{i}]"))?)?;
        result.routes.push(route);
    }
    Ok(())
}

/// 0.1.0/0.2.0 `ip4`/`ip6` objects, converted as Go's libcni does: IPs without an interface,
/// IPv4 routes before IPv6 routes.
fn parse_legacy(top: &Obj<'_>, result: &mut CniResult) -> Result<(), ResultError> {
    for (key, want) in [("ip4", "4"), ("ip6", "6")] {
        let Some(v) = top.get(key) else { continue };
        let o = Obj::new(v, key.into())?;
        let address = o.cidr("ip")?;
        if family(&address) != want {
            let expected = format!("an IPv{want} address");
            return Err(invalid(o.sub("ip"), expected, &address.to_string().into()));
        }
        let gateway = o.ip("gateway")?;
        result.ips.push(IpConfig {
            address,
            gateway,
            interface: None,
        });
        for (i, r) in o.array("routes")?.iter().enumerate() {
            let path = format!("{key}.routes[{i}]");
            result.routes.push(parse_route(&Obj::new(r, path)?)?);
        }
    }
    Ok(())
}

fn parse_route(o: &Obj<'_>) -> Result<Route, ResultError> {
    Ok(Route {
        dst: o.cidr("dst")?,
        gw: o.ip("gw")?,
        mtu: o.nonzero_u32("mtu")?,
        advmss: o.nonzero_u32("advmss")?,
        priority: o.nonzero_u32("priority")?,
        table: o.uint::<u32>("table", "an unsigned 32-bit integer")?,
        scope: o.uint::<u8>("scope", "an integer in 0..=255")?,
    })
}

fn family(address: &IpNet) -> &'static str {
    if address.addr().is_ipv4() { "4" } else { "6" }
}

/// A JSON object being read, with its field path for error messages.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(value: &'a Value, path: String) -> Result<Self, ResultError> {
        match value.as_object() {
            Some(map) => Ok(Obj { map, path }),
            None => Err(invalid(path, "a JSON object", value)),
        }
    }

    fn sub(&self, key: &str) -> String {
        match self.path.as_str() {
            "" => key.into(),
            path => format!("{path}.{key}"),
        }
    }

    fn missing(&self, key: &str) -> ResultError {
        let path = self.sub(key);
        ResultError::Missing { path }
    }

    /// The value of `key` unless missing or `null`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, ResultError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(invalid(self.sub(key), "a string", v)),
        }
    }

    /// An optional string; `""` counts as absent.
    fn opt_string(&self, key: &str) -> Result<Option<String>, ResultError> {
        Ok(self.string(key)?.filter(|s| !s.is_empty()).map(Into::into))
    }

    fn array(&self, key: &str) -> Result<&'a [Value], ResultError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(list)) => Ok(list),
            Some(v) => Err(invalid(self.sub(key), "an array", v)),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, ResultError> {
        let list = self.array(key)?.iter().enumerate();
        list.map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(invalid(format!("{}[{i}]", self.sub(key)), "a string", v)),
        })
        .collect()
    }

    fn uint<T: TryFrom<u64>>(&self, key: &str, expected: &str) -> Result<Option<T>, ResultError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = v.as_u64().and_then(|n| T::try_from(n).ok());
        n.map(Some)
            .ok_or_else(|| invalid(self.sub(key), expected, v))
    }

    /// Go's `int` with `omitempty`: 0 is absent.
    fn nonzero_u32(&self, key: &str) -> Result<Option<u32>, ResultError> {
        let n = self.uint::<u32>(key, "an unsigned 32-bit integer")?;
        Ok(n.filter(|n| *n != 0))
    }

    /// An optional IP address; `""` counts as absent (as Go's `net.IP` reads it).
    fn ip(&self, key: &str) -> Result<Option<IpAddr>, ResultError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_str().map(|s| (s, s.parse())) {
            Some(("", _)) => Ok(None),
            Some((_, Ok(ip))) => Ok(Some(ip)),
            _ => Err(invalid(self.sub(key), "an IP address", v)),
        }
    }

    /// A required CIDR address, host bits kept (`10.1.2.3/24`).
    fn cidr(&self, key: &str) -> Result<IpNet, ResultError> {
        let v = self.get(key).ok_or_else(|| self.missing(key))?;
        let net = v.as_str().and_then(|s| s.parse::<IpNet>().ok());
        net.ok_or_else(|| invalid(self.sub(key), "a CIDR address such as 10.1.2.3/24", v))
    }
}

fn invalid(path: String, expected: impl Into<String>, value: &Value) -> ResultError {
    let text = value.to_string();
    let value = match text.char_indices().nth(120) {
        // `cut` comes from char_indices, so it is a char boundary: slicing cannot panic.
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    };
    let expected = expected.into();
    ResultError::Invalid {
        path,
        expected,
        value,
    }
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Builds a JSON object in insertion order, leaving out absent fields (Go's `omitempty`).
#[derive(Default)]
struct Out(Map<String, Value>);

impl Out {
    fn put(mut self, key: &str, value: Option<impl Into<Value>>) -> Self {
        if let Some(value) = value {
            self.0.insert(key.into(), value.into());
        }
        self
    }

    fn list<T: Into<Value>>(self, key: &str, items: impl IntoIterator<Item = T>) -> Self {
        let items: Vec<Value> = items.into_iter().map(Into::into).collect();
        self.put(key, Some(items).filter(|items| !items.is_empty()))
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn interface_json(i: &Interface, v11: bool) -> Value {
    Out::default()
        .put("name", Some(i.name.as_str()))
        .put("mac", non_empty(&i.mac))
        .put("mtu", i.mtu.filter(|_| v11))
        .put("sandbox", non_empty(&i.sandbox))
        .put("socketPath", non_empty(&i.socket_path).filter(|_| v11))
        .put("pciID", non_empty(&i.pci_id).filter(|_| v11))
        .done()
}

fn ip_json(ip: &IpConfig, with_version: bool) -> Value {
    Out::default()
        .put("version", with_version.then(|| family(&ip.address)))
        .put("interface", ip.interface)
        .put("address", Some(ip.address.to_string()))
        .put("gateway", ip.gateway.map(|gw| gw.to_string()))
        .done()
}

fn route_json(r: &Route, v11: bool) -> Value {
    Out::default()
        .put("dst", Some(r.dst.to_string()))
        .put("gw", r.gw.map(|gw| gw.to_string()))
        .put("mtu", r.mtu.filter(|_| v11))
        .put("advmss", r.advmss.filter(|_| v11))
        .put("priority", r.priority.filter(|_| v11))
        .put("table", r.table.filter(|_| v11))
        .put("scope", r.scope.filter(|_| v11))
        .done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use SpecVersion::*;
    use serde_json::json;

    /// A 0.3.x/0.4.0 plugin result (single stack, with `ips[].version`).
    fn pre1(version: &str) -> Value {
        json!({"cniVersion": version,
            "interfaces": [{"name": "net1", "mac": "7a:1f:c2:00:10:05", "sandbox": "/var/run/netns/x"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.56.217.9/24", "gateway": "10.56.217.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.56.217.1"}, {"dst": "192.168.0.0/16"}],
            "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local",
                    "search": ["default.svc.cluster.local"], "options": ["ndots:5"]}})
    }

    /// `pre1` as a 1.0.0 plugin prints it.
    fn v100() -> Value {
        let mut v = pre1("1.0.0");
        if let Some(ip) = v["ips"][0].as_object_mut() {
            ip.shift_remove("version");
        }
        v
    }

    /// A dual-stack SR-IOV 1.1.0 result using every 1.1.0 field.
    fn v110() -> Value {
        json!({"cniVersion": "1.1.0",
            "interfaces": [{"name": "net1", "mac": "7a:1f:c2:00:10:05", "mtu": 9000,
                "sandbox": "/var/run/netns/x", "socketPath": "/run/vhost/s0", "pciID": "0000:3b:02.1"}],
            "ips": [{"interface": 0, "address": "10.56.217.9/24", "gateway": "10.56.217.1"},
                    {"interface": 0, "address": "fd00:10:56::9/64", "gateway": "fd00:10:56::1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.56.217.1", "mtu": 1500, "advmss": 1460,
                        "priority": 100, "table": 0, "scope": 0},
                       {"dst": "::/0", "gw": "fd00:10:56::1", "table": 254}],
            "dns": {"nameservers": ["10.96.0.10", "fd00:96::a"]}})
    }

    fn parse(v: &Value) -> CniResult {
        CniResult::parse(v).unwrap_or_else(|e| panic!("parse failed: {e}\n{v}"))
    }

    fn assert_err(v: Value, want: &str) {
        match CniResult::parse(&v) {
            Ok(r) => panic!("expected an error for {v}, got {r:?}"),
            Err(e) => assert_eq!(e.to_string(), want),
        }
    }

    /// Same values and same key order.
    fn assert_json(actual: Value, expected: &Value) {
        assert_eq!(actual.to_string(), expected.to_string());
    }

    #[test]
    fn round_trips_each_version() {
        let cases = [
            (pre1("0.3.0"), V0_3_0),
            (pre1("0.3.1"), V0_3_1),
            (pre1("0.4.0"), V0_4_0),
            (v100(), V1_0_0),
            (v110(), V1_1_0),
        ];
        for (input, version) in cases {
            assert_json(parse(&input).to_json(version), &input);
        }
    }

    #[test]
    fn up_conversion() {
        assert_json(parse(&pre1("0.3.1")).to_json(V1_0_0), &v100());
        let mut expected = v100();
        expected["cniVersion"] = json!("1.1.0");
        assert_json(parse(&pre1("0.4.0")).to_json(V1_1_0), &expected);
    }

    #[test]
    fn down_conversion_drops_v11_fields_and_adds_version() {
        let expected = json!({"cniVersion": "0.4.0",
            "interfaces": [{"name": "net1", "mac": "7a:1f:c2:00:10:05", "sandbox": "/var/run/netns/x"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.56.217.9/24", "gateway": "10.56.217.1"},
                {"version": "6", "interface": 0, "address": "fd00:10:56::9/64", "gateway": "fd00:10:56::1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.56.217.1"}, {"dst": "::/0", "gw": "fd00:10:56::1"}],
            "dns": {"nameservers": ["10.96.0.10", "fd00:96::a"]}});
        assert_json(parse(&v110()).to_json(V0_4_0), &expected);
    }

    #[test]
    fn legacy_ip4_ip6_layout() {
        let mut legacy = json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.2.3/24", "gateway": "10.1.2.1",
                    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.2.254"}]},
            "ip6": {"ip": "2001:db8::3/64", "routes": [{"dst": "::/0", "gw": "2001:db8::1"}]},
            "dns": {"nameservers": ["10.1.0.10"]}});
        let expected = json!({"cniVersion": "0.4.0",
            "ips": [{"version": "4", "address": "10.1.2.3/24", "gateway": "10.1.2.1"},
                    {"version": "6", "address": "2001:db8::3/64"}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.9.0.0/16", "gw": "10.1.2.254"},
                       {"dst": "::/0", "gw": "2001:db8::1"}],
            "dns": {"nameservers": ["10.1.0.10"]}});
        let r = parse(&legacy);
        assert!(r.interfaces.is_empty() && r.ips.iter().all(|ip| ip.interface.is_none()));
        assert_eq!(r.routes.len(), 3);
        assert_json(r.to_json(V0_4_0), &expected);
        // Without cniVersion the layout is inferred from the ip4/ip6 keys.
        legacy.as_object_mut().map(|m| m.shift_remove("cniVersion"));
        assert_eq!(parse(&legacy), r);
    }

    #[test]
    fn dual_stack_and_helpers() {
        let r = parse(&v110());
        assert_eq!(r.interfaces[0].pci_id.as_deref(), Some("0000:3b:02.1"));
        assert_eq!((r.routes[0].scope, r.routes[1].table), (Some(0), Some(254)));
        assert_eq!(r.ips_for_interface(0).count(), 2);
        assert_eq!(r.ips_for_interface(1).count(), 0);
        assert_eq!(r.gateway_for(true), "10.56.217.1".parse().ok());
        assert_eq!(r.gateway_for(false), "fd00:10:56::1".parse().ok());
        // A v6 gateway listed first does not answer for v4; IPs without gateway are skipped.
        let ipam = parse(
            &json!({"ips": [{"address": "fd00::2/64", "gateway": "fd00::1"},
            {"address": "10.0.0.2/24"}, {"address": "10.0.1.2/24", "gateway": "10.0.1.1"}]}),
        );
        assert_eq!(ipam.gateway_for(true), "10.0.1.1".parse().ok());
        assert_eq!(ipam.ips_for_interface(0).count(), 0);
        assert_eq!(CniResult::default().gateway_for(false), None);
    }

    #[test]
    fn errors_name_field_and_value() {
        let mut v = pre1("0.4.0");
        v["ips"][0]["version"] = json!("6");
        let want = r#"expected "4" to match address 10.56.217.9/24, got "6""#;
        assert_err(v, &format!("ips[0].version: {want}"));
        let mut v = v100();
        v["ips"][0]["address"] = json!("10.56.217.9");
        let cidr = "a CIDR address such as 10.1.2.3/24";
        assert_err(
            v,
            &format!(r#"ips[0].address: expected {cidr}, got "10.56.217.9""#),
        );
        let mut v = pre1("0.3.1");
        v["ips"][0]["interface"] = json!(1);
        let want = "expected an index below 1 (the number of interfaces), got 1";
        assert_err(v, &format!("ips[0].interface: {want}"));
        // One case per line: input JSON | expected error message.
        let cases = r#"
            {"cniVersion": "0.5.0"} | cniVersion: unsupported result version "0.5.0"
            {"cniVersion": "2.0.0", "ips": []} | cniVersion: unsupported result version "2.0.0"
            {"cniVersion": 1} | cniVersion: expected a string, got 1
            "x" | result: expected a JSON object, got "x"
            {"interfaces": {}} | interfaces: expected an array, got {}
            {"interfaces": [{"mac": "x"}]} | interfaces[0].name: required field missing
            {"ips": [{"gateway": "10.0.0.1"}]} | ips[0].address: required field missing
            {"ips": [{"address": "::/0", "gateway": "::g"}]} | ips[0].gateway: expected an IP address, got "::g"
            {"ips": [{"address": "::/0", "interface": -1}]} | ips[0].interface: expected a non-negative integer, got -1
            {"routes": [{"dst": "default"}]} | routes[0].dst: expected a CIDR address such as 10.1.2.3/24, got "default"
            {"routes": [{"dst": "::/0", "table": 1.5}]} | routes[0].table: expected an unsigned 32-bit integer, got 1.5
            {"routes": [{"dst": "::/0", "scope": 256}]} | routes[0].scope: expected an integer in 0..=255, got 256
            {"dns": {"nameservers": ["a", 5]}} | dns.nameservers[1]: expected a string, got 5
            {"cniVersion": "0.1.0", "ip4": {"ip": "2001:db8::3/64"}} | ip4.ip: expected an IPv4 address, got "2001:db8::3/64"
            {"ip6": {"ip": "::/0", "routes": [{}]}} | ip6.routes[0].dst: required field missing"#;
        let cases: Vec<_> = cases
            .lines()
            .filter_map(|l| l.trim().split_once(" | "))
            .collect();
        assert_eq!(cases.len(), 15);
        for (input, want) in cases {
            assert_err(
                serde_json::from_str(input).expect("test input is JSON"),
                want,
            );
        }
    }

    #[test]
    fn empty_result_emits_dns_object() {
        let empty = CniResult::default();
        assert_eq!(
            empty.to_string(V1_0_0),
            r#"{"cniVersion":"1.0.0","dns":{}}"#
        );
        assert_eq!(parse(&json!({"cniVersion": "0.4.0", "dns": {}})), empty);
        assert_eq!(
            empty.to_string(V0_3_0),
            r#"{"cniVersion":"0.3.0","dns":{}}"#
        );
    }

    #[test]
    fn ipam_result_without_interfaces() {
        let ipam = json!({"cniVersion": "1.0.0",
            "ips": [{"address": "10.56.217.9/24", "gateway": "10.56.217.1"}],
            "routes": [{"dst": "0.0.0.0/0"}], "dns": {}});
        let r = parse(&ipam);
        assert_json(r.to_json(V1_0_0), &ipam);
        let old = json!({"cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "10.56.217.9/24", "gateway": "10.56.217.1"}],
            "routes": [{"dst": "0.0.0.0/0"}], "dns": {}});
        assert_json(r.to_json(V0_3_1), &old);
        // Without interfaces (an IPAM result being passed along) an index is kept as given.
        let r = parse(&json!({"ips": [{"interface": 3, "address": "10.0.0.2/8"}]}));
        assert_eq!(r.ips[0].interface, Some(3));
    }

    #[test]
    fn go_omitempty_reading() {
        let r = parse(&json!({"cniVersion": "1.1.0", "extra": {"x": 1},
            "interfaces": [{"name": "eth0", "mac": "", "sandbox": null, "mtu": 0, "pciID": ""}],
            "ips": [{"address": "10.0.0.2/24", "gateway": "", "interface": null}],
            "routes": null, "dns": {"domain": "", "search": null}}));
        let out = r#"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0"}],"ips":[{"address":"10.0.0.2/24"}],"dns":{}}"#;
        assert_eq!(r.to_string(V1_1_0), out);
    }
}
