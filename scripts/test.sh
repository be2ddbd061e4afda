#!/usr/bin/env bash
# Runs every test of the suite: formatting, lints, unit tests, root tests in
# real network namespaces, and the integration tests that exec the plugin
# binaries as a runtime does. Must run as root. Fails loudly, never skips silently.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/common.sh

require_root
ensure_packages iproute2 containernetworking-plugins procps

echo ">> cargo fmt --check"
cargo fmt --all --check

echo ">> cargo clippy"
cargo clippy --workspace --all-targets --features libcni/root-tests,libcni/sim-pf,libcni/failpoints -- -D warnings

echo ">> unit and root tests (libcni)"
cargo test -p libcni --features root-tests,sim-pf,failpoints
