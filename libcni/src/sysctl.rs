//! Per-interface sysctls under /proc/sys/net. /proc/sys/net shows the netns of
//! the calling thread, so call these from `NetNs::run`.

use std::io;
use std::path::PathBuf;

use crate::ids::IfName;

fn path(family: &str, ifname: &IfName, key: &str) -> PathBuf {
    // ifname is validated (no '/', not '.'/'..'); family and key are our literals.
    PathBuf::from(format!("/proc/sys/net/{family}/conf/{ifname}/{key}"))
}

/// Writes `/proc/sys/net/<family>/conf/<ifname>/<key>`.
pub fn set_iface(family: &str, ifname: &IfName, key: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(family, ifname, key), value)
}
