//! An explicit undo stack for ADD: every change pushes its inverse; a failure
//! runs them newest first, and success discards them.

use crate::error::Error;

type UndoFn<'a> = Box<dyn FnOnce() -> Result<(), Error> + 'a>;

#[derive(Default)]
pub struct Undo<'a> {
    steps: Vec<(String, UndoFn<'a>)>,
}

impl<'a> Undo<'a> {
    pub fn new() -> Undo<'a> {
        Undo { steps: Vec::new() }
    }

    /// Registers the inverse of a change that just succeeded.
    pub fn push(&mut self, what: impl Into<String>, undo: impl FnOnce() -> Result<(), Error> + 'a) {
        self.steps.push((what.into(), Box::new(undo)));
    }

    /// The change stuck: forget the inverses.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Undoes everything, newest first, continuing past failures, and returns
    /// `err` with any rollback failures attached.
    pub fn rollback(mut self, err: Error) -> Error {
        let failures = self.run();
        if failures.is_empty() {
            err
        } else {
            Error::RollbackFailed {
                source: Box::new(err),
                failures,
            }
        }
    }

    fn run(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        while let Some((what, undo)) = self.steps.pop() {
            tracing::debug!(step = %what, "rolling back");
            if let Err(e) = undo() {
                tracing::error!(step = %what, error = %e, "rollback step failed");
                failures.push(format!("{what}: {e}"));
            }
        }
        failures
    }
}

impl Drop for Undo<'_> {
    /// A forgotten commit/rollback (an early return) still undoes the changes.
    fn drop(&mut self) {
        if !self.steps.is_empty() {
            tracing::warn!("undo stack dropped without commit: rolling back");
            self.run();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn rollback_runs_newest_first_and_reports_failures() {
        let log = RefCell::new(Vec::new());
        let mut undo = Undo::new();
        undo.push("a", || {
            log.borrow_mut().push("a");
            Ok(())
        });
        undo.push("b", || {
            log.borrow_mut().push("b");
            Err(Error::Internal("b broke".into()))
        });
        undo.push("c", || {
            log.borrow_mut().push("c");
            Ok(())
        });
        let err = undo.rollback(Error::Internal("original".into()));
        assert_eq!(*log.borrow(), ["c", "b", "a"]);
        let text = err.to_string();
        assert!(
            text.contains("original") && text.contains("b: internal error: b broke"),
            "{text}"
        );
    }

    #[test]
    fn commit_discards_and_drop_rolls_back() {
        let log = RefCell::new(Vec::new());
        let mut undo = Undo::new();
        undo.push("x", || {
            log.borrow_mut().push("x");
            Ok(())
        });
        undo.commit();
        assert!(log.borrow().is_empty());
        {
            let mut undo = Undo::new();
            undo.push("y", || {
                log.borrow_mut().push("y");
                Ok(())
            });
        }
        assert_eq!(*log.borrow(), ["y"]);
    }
}
