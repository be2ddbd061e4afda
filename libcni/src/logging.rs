//! Logging: `logLevel` (error, warning, info, debug; default info) and
//! `logFile` (appended, 0600) from the network config; stderr otherwise.
//! Never stdout: that channel carries only the CNI result or error.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Only the suite's own events: libcni's and the plugin's. The crates under
/// the etcd client (tonic, h2, hyper, rustls) log connection internals at
/// debug and trace, which is noise to an operator and the wrong place for
/// anything near credentials or tokens.
fn is_ours(target: &str, crate_name: &str) -> bool {
    ["libcni", crate_name].iter().any(|c| {
        target
            .strip_prefix(c)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

fn only_ours(plugin: &str) -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool + use<>> {
    let crate_name = plugin.replace('-', "_");
    filter_fn(move |meta| is_ours(meta.target(), &crate_name))
}

/// Maps sriov-cni's level names; unknown names fall back to info, as upstream.
pub fn parse_level(level: Option<&str>) -> LevelFilter {
    match level.map(str::to_ascii_lowercase).as_deref() {
        Some("panic" | "error") => LevelFilter::ERROR,
        Some("warning" | "warn") => LevelFilter::WARN,
        Some("debug") => LevelFilter::DEBUG,
        Some("trace") => LevelFilter::TRACE,
        Some("none" | "off") => LevelFilter::OFF,
        _ => LevelFilter::INFO,
    }
}

/// Installs the global subscriber. A log file that cannot be opened (relative
/// path, missing directory, symlink) falls back to stderr with a warning.
pub fn init(plugin: &str, level: Option<&str>, file: Option<&str>) {
    let level = parse_level(level);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false);
    let mut fallback = None;
    let installed = match file.filter(|f| !f.is_empty()) {
        Some(path) if Path::new(path).is_absolute() => match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(f) => builder
                .with_writer(Mutex::new(f))
                .finish()
                .with(only_ours(plugin))
                .try_init()
                .is_ok(),
            Err(e) => {
                fallback = Some(format!("cannot open logFile {path}: {e}"));
                builder
                    .with_writer(std::io::stderr)
                    .finish()
                    .with(only_ours(plugin))
                    .try_init()
                    .is_ok()
            }
        },
        Some(path) => {
            fallback = Some(format!("logFile {path:?} must be an absolute path"));
            builder
                .with_writer(std::io::stderr)
                .finish()
                .with(only_ours(plugin))
                .try_init()
                .is_ok()
        }
        None => builder
            .with_writer(std::io::stderr)
            .finish()
            .with(only_ours(plugin))
            .try_init()
            .is_ok(),
    };
    if let Some(msg) = fallback {
        tracing::warn!(plugin, "{msg}; logging to stderr");
    }
    let _ = installed;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_suites_own_events_are_logged() {
        for (target, ours) in [
            ("libcni", true),
            ("libcni::pool::etcd_store", true),
            ("ib_sriov", true),
            ("ib_sriov::config", true),
            ("sriov", false),
            ("libcnix", false),
            ("h2::proto::connection", false),
            ("tonic::transport", false),
            ("rustls::client", false),
        ] {
            assert_eq!(is_ours(target, "ib_sriov"), ours, "{target}");
        }
    }

    #[test]
    fn levels() {
        assert_eq!(parse_level(Some("ERROR")), LevelFilter::ERROR);
        assert_eq!(parse_level(Some("panic")), LevelFilter::ERROR);
        assert_eq!(parse_level(Some("warning")), LevelFilter::WARN);
        assert_eq!(parse_level(Some("debug")), LevelFilter::DEBUG);
        assert_eq!(parse_level(Some("bogus")), LevelFilter::INFO);
        assert_eq!(parse_level(None), LevelFilter::INFO);
    }
}
