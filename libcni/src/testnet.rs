//! Network namespaces and links for root tests, made with iproute2 as an
//! operator would (`ip netns add`, veth pairs), and removed even when a test
//! fails.

use std::process::Command;

/// Deletes the test's network namespaces (and so their veth pairs), even after a failure.
pub struct NetnsGuard(pub Vec<String>);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `ip <cmd>` (words split on spaces) and returns its stdout; fails the test if it fails.
pub fn ip(cmd: &str) -> String {
    let out = Command::new("ip").args(cmd.split(' ')).output();
    let ok = out.as_ref().is_ok_and(|o| o.status.success());
    assert!(ok, "ip {cmd}: {out:?}");
    out.map_or(String::new(), |o| String::from_utf8_lossy(&o.stdout).into())
}
