//! Network configuration: the keys every plugin shares, and Go-compatible
//! decoding (case-insensitive keys, unknown keys ignored) for plugin structs.

pub mod fold;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Error;
use crate::version::SpecVersion;

/// `ipam` as far as delegation needs it; the rest goes to the delegate verbatim.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct ValidAttachment {
    #[serde(rename = "containerID", default)]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// Keys common to every plugin's config.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: Option<String>,
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub plugin_type: Option<String>,
    pub ipam: Option<IpamConf>,
    #[serde(rename = "prevResult")]
    pub prev_result: Option<Value>,
    #[serde(rename = "logLevel")]
    pub log_level: Option<String>,
    #[serde(rename = "logFile")]
    pub log_file: Option<String>,
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// The 1.1.0 spec tag's spelling (a spec bug); libcni HEAD sends both.
    #[serde(rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<ValidAttachment>>,
}

impl NetConf {
    /// The IPAM plugin to delegate to, if `ipam.type` is set.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam
            .as_ref()
            .map(|i| i.plugin_type.as_str())
            .filter(|t| !t.is_empty())
    }

    /// GC's list of attachments to keep (either key; both merged).
    pub fn gc_keep_list(&self) -> Vec<ValidAttachment> {
        let mut all = self.valid_attachments.clone().unwrap_or_default();
        all.extend(self.attachments.clone().unwrap_or_default());
        all
    }
}

/// An absolute path without `..` from config key `key` (or `default`):
/// state and sysfs roots become file paths, so they are checked here once.
pub fn abs_path(
    key: &str,
    value: Option<String>,
    default: &str,
) -> Result<std::path::PathBuf, Error> {
    let text = value.unwrap_or_else(|| default.to_string());
    // A NUL would cut the path short in the kernel: refuse it here, as
    // invalid config, rather than as an I/O error later.
    if text.contains('\0') {
        return Err(Error::config(
            key,
            format!("{:?} contains a NUL byte", shorten(&text)),
        ));
    }
    let p = std::path::PathBuf::from(text);
    if !p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
        return Err(Error::config(
            key,
            format!(
                "{} must be an absolute path without '..'",
                shorten(&p.to_string_lossy())
            ),
        ));
    }
    Ok(p)
}

/// A value from the input as messages quote it: at most 80 characters, so a
/// hostile megabyte is not echoed into logs and error JSON.
pub fn shorten(value: &str) -> String {
    const MAX: usize = 80;
    match value.char_indices().nth(MAX) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &value[..cut], value.len()),
    }
}

/// A message that quotes a value (serde's "invalid type: string ...") cut
/// to its head and tail when the value is huge.
pub fn elide(message: &str) -> String {
    const HEAD: usize = 160;
    const TAIL: usize = 60;
    let chars = message.chars().count();
    if chars <= HEAD + TAIL + 40 {
        return message.to_string();
    }
    let head: String = message.chars().take(HEAD).collect();
    let tail: String = message.chars().skip(chars - TAIL).collect();
    format!(
        "{head}... ({} bytes cut) ...{tail}",
        message.len() - head.len() - tail.len()
    )
}

/// Parses stdin into a JSON object; syntax errors are CNI code 6.
pub fn parse_stdin(stdin: &[u8]) -> Result<Value, Error> {
    let value: Value = serde_json::from_slice(stdin)
        .map_err(|e| Error::Decode(format!("network config is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::Decode("network config must be a JSON object".into()));
    }
    Ok(value)
}

/// Decodes a plugin's config struct from the stdin object with Go's rules.
/// A wrong type is an invalid-config error naming the key.
pub fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, Error> {
    fold::from_value(value.clone()).map_err(|e| Error::Config {
        key: e.path,
        reason: elide(&e.message),
    })
}

/// Resolves `cniVersion`; a missing version means 0.1.0 (as Go's decoder
/// treats it), which this suite does not speak.
pub fn spec_version(conf: &NetConf) -> Result<SpecVersion, Error> {
    let given = conf.cni_version.as_deref().unwrap_or("");
    SpecVersion::parse(given).ok_or_else(|| Error::IncompatibleVersion {
        given: if given.is_empty() {
            "(missing, meaning 0.1.0)".to_string()
        } else {
            shorten(given)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn common_keys_decode_case_insensitively() {
        let v = json!({"CNIVersion": "1.0.0", "Name": "rail1", "IPAM": {"Type": "host-local"},
                       "loglevel": "debug", "cni.dev/valid-attachments": [{"containerID": "c", "ifname": "net1"}],
                       "unknownKey": 1});
        let c: NetConf = decode(&v).expect("decode");
        assert_eq!(c.cni_version.as_deref(), Some("1.0.0"));
        assert_eq!(c.ipam_type(), Some("host-local"));
        assert_eq!(c.log_level.as_deref(), Some("debug"));
        assert_eq!(c.gc_keep_list().len(), 1);
        assert_eq!(spec_version(&c).expect("v"), SpecVersion::V1_0_0);
    }

    #[test]
    fn bad_inputs_get_the_right_codes() {
        assert_eq!(parse_stdin(b"{").map(drop).expect_err("syntax").code(), 6);
        assert_eq!(parse_stdin(b"[1]").map(drop).expect_err("array").code(), 6);
        let e = decode::<NetConf>(&json!({"name": 5})).expect_err("type");
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("name"), "{e}");
        let none = NetConf::default();
        assert_eq!(spec_version(&none).expect_err("missing").code(), 1);
        let old: NetConf = decode(&json!({"cniVersion": "0.2.0"})).expect("decode");
        let e = spec_version(&old).expect_err("0.2.0");
        assert!(
            e.to_string().contains("0.2.0") && e.to_string().contains("1.1.0"),
            "{e}"
        );
    }

    #[test]
    fn state_paths_refuse_nul_and_messages_shorten_hostile_values() {
        // Found by tests/corpus/hostile/*/statedir-nul.json: was an I/O error (5).
        let e = abs_path("stateDir", Some("/var/lib/x\0y".into()), "/d").expect_err("NUL");
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("stateDir"), "{e}");
        assert!(abs_path("stateDir", None, "/var/lib/cni").is_ok());
        let huge = "9".repeat(3_000_000);
        let e = spec_version(&decode::<NetConf>(&json!({"cniVersion": huge})).expect("decode"))
            .expect_err("unknown");
        assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
        assert!(e.to_string().contains("3000000 bytes"), "{e}");
        let huge = json!({"cni.dev/valid-attachments": "x".repeat(1_000_000)});
        let msg = decode::<NetConf>(&huge).expect_err("type").to_string();
        assert!(msg.len() < 400 && msg.contains("bytes cut"), "{msg}");
        assert!(
            msg.contains("cni.dev/valid-attachments") && msg.ends_with("a sequence"),
            "{msg}"
        );
    }
}
