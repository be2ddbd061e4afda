//! Named failpoints after every ADD/DEL step, for tests that prove rollback
//! and crash consistency. Compiled to nothing unless the `failpoints` feature
//! is on (test builds only; release builds are checked by scripts/test.sh).
//!
//! Configure with `FAILPOINTS="sriov.add.after_move=return"` (fail crate
//! syntax). Actions: `return` fails the step with an error; `return(kill)`
//! SIGKILLs the process on the spot, as a node crash or OOM kill would.

use crate::error::Error;

/// Fails (or kills the process) when failpoint `name` is armed.
#[inline]
pub fn hit(name: &str) -> Result<(), Error> {
    fail::fail_point!(name, |arg: Option<String>| {
        if arg.as_deref() == Some("kill") {
            kill_self();
        }
        Err(Error::Internal(format!("failpoint {name} triggered")))
    });
    let _ = name;
    Ok(())
}

/// True when failpoint `name` is armed (for failpoints that must do
/// something before dying, like writing half a record).
#[inline]
pub fn armed(name: &str) -> bool {
    fail::fail_point!(name, |_| true);
    let _ = name;
    false
}

/// SIGKILL ourselves: no destructor, no rollback, like a crash.
pub fn kill_self() {
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

/// Reads FAILPOINTS from the environment; call once at start-up.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
