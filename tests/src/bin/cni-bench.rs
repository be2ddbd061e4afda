//! cni-bench: our plugins against Debian's Go reference plugins, exec for
//! exec, on the same work in the same run, and against the kernel's floor.
//! Prints Markdown tables of medians and ratios (Go / ours: above 1 means we
//! are faster or smaller).
//!
//! Usage: cni-bench <release bin dir> <release test-build bin dir> [section...]
//! (sections: exec, move, ipam, route, pod, floor, memory). scripts/bench.sh
//! builds both and runs this; the sections live in tests/src/bench/.

#[path = "../bench/mod.rs"]
mod bench;

fn main() {
    bench::main();
}
