//! Support for tests/tests/hostile_input.rs: the corpus, the fixtures, and
//! before/after snapshots of everything a plugin run could change.

pub mod corpus;
pub mod fixtures;
pub mod snapshot;
