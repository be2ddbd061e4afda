//! Logging: `logLevel` (error, warning, info, debug; default info) and
//! `logFile` (appended, 0600) from the network config; stderr otherwise.
//! Never stdout: that channel carries only the CNI result or error.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;

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
            Ok(f) => builder.with_writer(Mutex::new(f)).try_init().is_ok(),
            Err(e) => {
                fallback = Some(format!("cannot open logFile {path}: {e}"));
                builder.with_writer(std::io::stderr).try_init().is_ok()
            }
        },
        Some(path) => {
            fallback = Some(format!("logFile {path:?} must be an absolute path"));
            builder.with_writer(std::io::stderr).try_init().is_ok()
        }
        None => builder.with_writer(std::io::stderr).try_init().is_ok(),
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
    fn levels() {
        assert_eq!(parse_level(Some("ERROR")), LevelFilter::ERROR);
        assert_eq!(parse_level(Some("panic")), LevelFilter::ERROR);
        assert_eq!(parse_level(Some("warning")), LevelFilter::WARN);
        assert_eq!(parse_level(Some("debug")), LevelFilter::DEBUG);
        assert_eq!(parse_level(Some("bogus")), LevelFilter::INFO);
        assert_eq!(parse_level(None), LevelFilter::INFO);
    }
}
