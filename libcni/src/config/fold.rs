//! Go-compatible JSON key matching for network configs.
//!
//! Go's `encoding/json` matches object keys to struct fields case-insensitively, ignores
//! unknown keys and treats `null` as "leave the field unset"; configs written for the Go
//! plugins rely on this (`"MTU"`, `"MAC"`, `"deviceid"`). [`from_value`] deserializes a
//! [`serde_json::Value`] through a wrapper that, whenever the target asks for a struct
//! (`deserialize_struct`), first rewrites the object's keys against serde's `fields` slice:
//!
//! * a key equal to a name in `fields` is kept; else a key equal to one under case folding
//!   (`to_lowercase` on both) is renamed to it (the first such name, as Go takes the first
//!   field declared); else it is left alone, for serde to ignore or `deny_unknown_fields`;
//! * when several keys land on one name the last in the document wins, exact match or not
//!   (as Go 1.19 does). This needs serde_json's `preserve_order` feature, which the
//!   workspace enables. Go merges two objects given for one struct field; here the last wins;
//! * keys whose value is `null` are dropped: `Option` fields become `None`, `#[serde(default)]`
//!   fields take their default, and a required field reports "missing field";
//! * values in structs, sequences, tuples, options, map values and newtype structs are
//!   wrapped again, so nested structs fold too. Map keys are never folded (Go matches them
//!   exactly) and deserializing into `serde_json::Value` returns the value unchanged.
//!
//! serde derive lists `#[serde(alias)]` names in `fields`, so aliases fold too; a name and
//! an alias of one field given together fail with "duplicate field", as in serde_json.
//!
//! Not folded, but deserialized exactly as serde_json would: struct contents of externally
//! tagged enum variants, internally tagged and untagged enums (serde buffers them through
//! `deserialize_any`), and structs with `#[serde(flatten)]` (serde derive calls
//! `deserialize_map` for them, with no `fields`, and buffers what they contain).

use serde::Deserialize;
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Map, Value};
use std::fmt;

/// A deserialization error with the path of the offending key.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FoldError {
    /// Canonical path: `vlan`, `runtimeConfig.mac`, `ipam.routes[0].dst`; `.` for the root.
    pub path: String,
    /// The error message, without the path.
    pub message: String,
}

/// Deserialize `value` into `T` with Go's key matching. Errors carry the path of the offending key.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, FoldError> {
    serde_path_to_error::deserialize(Folding(value)).map_err(|err| FoldError {
        path: err.path().to_string(),
        message: err.into_inner().to_string(),
    })
}

/// Renames the keys of a struct's object to the names in `fields` and drops `null` entries.
fn fold_keys(object: Map<String, Value>, fields: &'static [&'static str]) -> Map<String, Value> {
    let mut folded = Map::with_capacity(object.len());
    for (key, value) in object.into_iter().filter(|(_, value)| !value.is_null()) {
        let key = canonical_name(&key, fields).map_or(key, str::to_owned);
        // With `preserve_order`, insert replaces the value of an existing key: last wins.
        folded.insert(key, value);
    }
    folded
}

/// The field name `key` must be renamed to, or `None` to keep `key` as it is.
fn canonical_name(key: &str, fields: &'static [&'static str]) -> Option<&'static str> {
    if fields.contains(&key) {
        return None;
    }
    let lower = key.to_lowercase();
    fields.iter().copied().find(|f| f.to_lowercase() == lower)
}

/// A `serde_json::Value` deserializer that folds struct keys at every level.
struct Folding(Value);

/// Forwards to serde_json's `Value`, wrapping the visitor when a wrapper is named.
macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*) $($wrap:ident)?;)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method($($arg,)* $($wrap)?(visitor))
        }
    )*};
}

impl<'de> Deserializer<'de> for Folding {
    type Error = serde_json::Error;

    forward! {
        deserialize_any(); deserialize_bool(); deserialize_char(); deserialize_str(); deserialize_string();
        deserialize_i8(); deserialize_i16(); deserialize_i32(); deserialize_i64(); deserialize_i128();
        deserialize_u8(); deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_bytes(); deserialize_byte_buf();
        deserialize_unit(); deserialize_unit_struct(name: &'static str);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier(); deserialize_ignored_any();
        deserialize_seq() FoldVisitor; deserialize_tuple(len: usize) FoldVisitor;
        deserialize_tuple_struct(name: &'static str, len: usize) FoldVisitor; deserialize_map() FoldVisitor;
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let value = match self.0 {
            Value::Object(object) => Value::Object(fold_keys(object, fields)),
            other => other,
        };
        // serde_json reports non-objects itself (and accepts a struct given as an array).
        value.deserialize_struct(name, fields, FoldVisitor(visitor))
    }
}

/// Wraps the visitor given to serde_json so that the values it sees are folded too.
/// serde_json's `Value` only calls `visit_seq`, `visit_map` or `expecting` on it.
struct FoldVisitor<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for FoldVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(formatter)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(FoldAccess(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(FoldAccess(map))
    }
}

/// A `SeqAccess` or `MapAccess` whose elements and values are deserialized through [`Folding`].
/// Map keys go straight to serde_json, which keeps its handling of non-string key types.
struct FoldAccess<A>(A);

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for FoldAccess<A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.0.next_element_seed(FoldSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for FoldAccess<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(seed)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.0.next_value_seed(FoldSeed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

/// Takes the value back out of serde_json's element deserializer and re-wraps it.
struct FoldSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for FoldSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        let value = Value::deserialize(deserializer)?;
        // A `Value`-built serde_json::Error has no position, so its Display is the bare message.
        self.0.deserialize(Folding(value)).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::{BTreeMap, HashMap};

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Conf {
        #[serde(rename = "deviceID")]
        device_id: Option<String>,
        mac: Option<String>,
        mtu: Option<u32>,
        vlan: Option<i32>,
        #[serde(rename = "vlanQoS")]
        vlan_qos: Option<u8>,
        #[serde(default = "default_trust")]
        trust: String,
        link_state: Option<LinkState>,
        runtime_config: Option<RuntimeConfig>,
        #[serde(default)]
        ipam: Ipam,
        args: Option<HashMap<String, String>>,
        extra: Option<Value>,
    }

    fn default_trust() -> String {
        "off".into()
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum LinkState {
        Auto,
        Disable,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct RuntimeConfig {
        mac: Option<String>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Ipam {
        #[serde(rename = "type", default)]
        kind: String,
        #[serde(default)]
        routes: Vec<Route>,
        labels: Option<BTreeMap<String, u32>>,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Route {
        dst: String,
        gw: Option<String>,
    }

    fn route(dst: &str, gw: Option<&str>) -> Route {
        let (dst, gw) = (dst.to_owned(), gw.map(str::to_owned));
        Route { dst, gw }
    }

    fn ok<T: DeserializeOwned>(value: Value) -> T {
        from_value(value).unwrap_or_else(|err| panic!("unexpected error: {err}"))
    }

    fn conf(value: Value) -> Conf {
        ok(value)
    }

    fn mac(value: Value) -> String {
        conf(value).mac.unwrap_or_default()
    }

    /// Each line of `table` is `json | path: message` (or a `#` comment); checks the path,
    /// the message (which must not repeat the path) and the Display of the error.
    fn check_errors<T: DeserializeOwned + fmt::Debug>(table: &str) {
        let lines = table.lines().map(str::trim);
        for line in lines.filter(|line| !line.is_empty() && !line.starts_with('#')) {
            let (input, want) = line.split_once(" | ").unwrap_or_default();
            let value = serde_json::from_str(input).unwrap_or_else(|e| panic!("{line}: {e}"));
            let err = from_value::<T>(value).err();
            let got = err.map(|e| (e.to_string(), e.path, e.message));
            let (path, message) = want.split_once(": ").unwrap_or_default();
            let want = (want.to_owned(), path.to_owned(), message.to_owned());
            assert_eq!(got, Some(want), "{line}");
        }
    }

    #[test]
    fn renamed_fields_match_in_any_case() {
        for key in ["deviceID", "deviceid", "DEVICEID", "DeviceId"] {
            let device_id = conf(json!({ key: "0000:af:00.1" })).device_id;
            assert_eq!(device_id.as_deref(), Some("0000:af:00.1"));
        }
        for key in ["mac", "MAC", "Mac"] {
            assert_eq!(mac(json!({ key: "aa:bb" })), "aa:bb");
        }
        let c = conf(json!({"MTU": 9000, "VLANQOS": 3, "vlanqos": 4, "RuntimeCONFIG": {}}));
        assert_eq!((c.mtu, c.vlan_qos), (Some(9000), Some(4)));
        assert_eq!(c.runtime_config, Some(RuntimeConfig::default()));
    }

    #[test]
    fn last_key_wins_whether_exact_or_folded() {
        // Go 1.19 decodes every key in turn into the field it matches, so the last one wins.
        assert_eq!(mac(json!({"mac": "exact", "MAC": "fold"})), "fold");
        assert_eq!(mac(json!({"MAC": "fold", "mac": "exact"})), "exact");
        assert_eq!(mac(json!({"MAC": "a", "Mac": "b"})), "b");
        assert_eq!(mac(json!({"Mac": "b", "MAC": "a"})), "a");
        // A later null leaves the earlier value alone, as in Go.
        assert_eq!(mac(json!({"mac": "x", "MAC": null})), "x");
    }

    #[test]
    fn ambiguous_fold_takes_first_field_and_exact_names_stay() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Two {
            #[serde(rename = "foo")]
            lower: Option<u8>,
            #[serde(rename = "FOO")]
            upper: Option<u8>,
        }
        let [a, b]: [Two; 2] = ok(json!([{"Foo": 1}, {"FOO": 2}]));
        let got = [a.lower, a.upper, b.lower, b.upper];
        assert_eq!(got, [Some(1), None, None, Some(2)]);
    }

    #[test]
    fn unknown_keys_ignored_unless_denied() {
        let c = conf(json!({"bogus": 1, "Bogus": null, "mTu": 1500}));
        assert_eq!(c.mtu, Some(1500));
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Strict {
            name: String,
        }
        assert_eq!(ok::<Strict>(json!({"NAME": "a"})).name, "a");
        check_errors::<Strict>(r#"{"NAME": "a", "x": 1} | x: unknown field `x`, expected `name`"#);
    }

    #[test]
    fn null_gives_none_or_default() {
        let c = conf(json!({"mac": null, "trust": null, "ipam": null, "runtimeConfig": null}));
        assert_eq!((c.mac, c.trust.as_str()), (None, "off"));
        assert_eq!((c.ipam, c.runtime_config), (Ipam::default(), None));
        assert_eq!(conf(json!({"TRUST": "on"})).trust, "on");
    }

    #[test]
    fn nested_structs_fold() {
        let c = conf(json!({
            "RuntimeConfig": {"MAC": "aa:bb", "macAddress": "x"},
            "IPAM": {"TYPE": "host-local", "Routes": [{"DST": "0/0", "GW": "gw"}, {"Dst": "10/8"}]},
        }));
        let rc = c.runtime_config.unwrap_or_default();
        assert_eq!(rc.mac.as_deref(), Some("aa:bb"));
        assert_eq!(c.ipam.kind, "host-local");
        let routes = [route("0/0", Some("gw")), route("10/8", None)];
        assert_eq!(c.ipam.routes, routes);
        // Sequences, tuples, options, map values and newtype structs pass folding on.
        #[derive(Debug, Deserialize, PartialEq)]
        struct Wrapper(Route);
        let (list, map): (Vec<Option<Wrapper>>, HashMap<String, Route>) =
            ok(json!([[{"DST": "a"}, null], {"K": {"Dst": "b"}}]));
        assert_eq!(list, [Some(Wrapper(route("a", None))), None]);
        assert_eq!(map["K"], route("b", None));
    }

    #[test]
    fn map_keys_and_values_are_not_folded() {
        let c = conf(json!({
            "ARGS": {"Foo": "1", "foo": "2"},
            "ipam": {"LABELS": {"B": 2, "a": 1}},
            "Extra": {"MAC": null, "Nested": [{"X": 1}]},
        }));
        let args = c.args.unwrap_or_default();
        assert_eq!((args["Foo"].as_str(), args["foo"].as_str()), ("1", "2"));
        let labels = BTreeMap::from([("B".into(), 2), ("a".into(), 1)]);
        assert_eq!(c.ipam.labels, Some(labels));
        assert_eq!(c.extra, Some(json!({"MAC": null, "Nested": [{"X": 1}]})));
        let value = json!({"Mac": null, "list": [1, "x", {"A": null}], "n": 1.5});
        assert_eq!(ok::<Value>(value.clone()), value);
        // Non-string map keys keep serde_json's handling.
        let numbered: HashMap<u16, String> = ok(json!({"7": "x"}));
        assert_eq!(numbered[&7], "x");
    }

    #[test]
    fn unit_enums_from_strings() {
        let c = conf(json!({"LinkState": "auto"}));
        assert_eq!(c.link_state, Some(LinkState::Auto));
        let c = conf(json!({"linkstate": "disable"}));
        assert_eq!(c.link_state, Some(LinkState::Disable));
    }

    #[test]
    fn errors_carry_canonical_path() {
        check_errors::<Conf>(
            r#"
            # Type errors at the top level and nested, under the canonical field names.
            {"VLAN": "100"}                     | vlan: invalid type: string "100", expected i32
            {"ipam": {"ROUTES": [{"Dst": 5}]}}  | ipam.routes[0].dst: invalid type: integer `5`, expected a string
            {"runtimeconfig": {"MAC": ["x"]}}   | runtimeConfig.mac: invalid type: sequence, expected a string
            {"ipam": {"routes": [{"gw": "x"}]}} | ipam.routes[0]: missing field `dst`
            # A non-object where a struct (or a sequence) is expected.
            {"ipam": "host-local"}              | ipam: invalid type: string "host-local", expected struct Ipam
            5                                   | .: invalid type: integer `5`, expected struct Conf
            {"ipam": {"routes": {"dst": "x"}}}  | ipam.routes: invalid type: map, expected a sequence
            # Numbers out of range name the key.
            {"vlanqos": 300}                    | vlanQoS: invalid value: integer `300`, expected u8
            {"MTU": -1}                         | mtu: invalid value: integer `-1`, expected u32
            # Enum variants are matched exactly, as serde_json does.
            {"linkState": "Auto"}               | linkState: unknown variant `Auto`, expected `auto` or `disable`
            "#,
        );
    }

    #[test]
    fn aliases_are_in_fields_and_fold() {
        // serde derive lists aliases in `fields`, so a case-folded alias is renamed to it.
        #[derive(Debug, Deserialize, PartialEq)]
        struct Aliased {
            #[serde(alias = "hwAddr")]
            mac: Option<String>,
        }
        let aliased: Aliased = ok(json!({"HWADDR": "aa"}));
        assert_eq!(aliased.mac.as_deref(), Some("aa"));
        // Name and alias together are two entries for one field: serde's own error, as in serde_json.
        check_errors::<Aliased>(r#"{"MAC": "a", "hwaddr": "b"} | .: duplicate field `mac`"#);
    }

    #[test]
    fn flatten_and_untagged_are_not_folded() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Flat {
            name: Option<String>,
            #[serde(flatten)]
            rest: BTreeMap<String, Value>,
        }
        let flat: Flat = ok(json!({"NAME": "x", "name": "y"}));
        assert_eq!(flat.name.as_deref(), Some("y"));
        assert_eq!(flat.rest, BTreeMap::from([("NAME".to_owned(), json!("x"))]));
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(untagged)]
        enum Either {
            R(Route),
            S(String),
        }
        let list: Vec<Either> = ok(json!(["s", {"dst": "d"}]));
        assert_eq!(list, [Either::S("s".into()), Either::R(route("d", None))]);
        // Like serde_json, an untagged Route given as `DST` matches no variant.
        let table =
            r#"[{"DST": "d"}] | [0]: data did not match any variant of untagged enum Either"#;
        check_errors::<Vec<Either>>(table);
    }
}
