#!/usr/bin/env bash
# Runs every test of the suite: formatting, lints, unit tests, root tests in
# real network namespaces, the integration tests that exec the plugin binaries
# as a runtime does, the VM lane (a real kernel with emulated SR-IOV; it says
# "VM LANE SKIPPED" loudly where QEMU cannot run), and the demo. Must run as
# root. Fails loudly, never skips silently.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib/common.sh disable=SC1091
. scripts/lib/common.sh

require_root
ensure_packages iproute2 containernetworking-plugins procps jq iputils-ping \
    protobuf-compiler libprotobuf-dev etcd-server etcd-client openssl

PLUGINS=(sriov ib-sriov rdma ippool coordinator)
TEST_FEATURES=libcni/root-tests,libcni/sim-pf,libcni/failpoints,integration/root-tests
BIN_FEATURES=sriov/test-build,ib-sriov/test-build,rdma/test-build,ippool/test-build,coordinator/test-build

echo ">> cargo fmt --check"
cargo fmt --all --check

echo ">> cargo clippy (all targets, test features)"
cargo clippy --workspace --all-targets --features "$TEST_FEATURES,$BIN_FEATURES" -- -D warnings

echo ">> release build, and proof that no test hook is in it"
cargo build --release --workspace --bins
for p in "${PLUGINS[@]}"; do
    if grep -a -q -e "simulated PF" -e "sim-calls.log" -e "sim-rdma.json" -e "FAILPOINTS" -e "failpoint " "target/release/$p"; then
        echo "ERROR: target/release/$p contains test-only code (simulated PF or failpoints)" >&2
        exit 1
    fi
done

echo ">> test build of the plugins (simulated PF + failpoints) into target/testbin"
cargo build --workspace --bins --features "$BIN_FEATURES" --target-dir target/testbin
export CNI_TEST_BIN_DIR=$PWD/target/testbin/debug

echo ">> cnitool from Debian's golang-github-appc-cni source (a CNI client we did not write)"
export CNITOOL
CNITOOL=$(scripts/lib/cnitool.sh)

echo ">> unit, root and integration tests"
cargo test --workspace --features "$TEST_FEATURES"
# The tests work in namespaces of their own: the host's loopback must come out
# untouched (once, mid-development, a test left it at MTU 1 without addresses).
if ! ip -4 addr show dev lo | grep -q 'inet 127.0.0.1/8' || ! ip link show dev lo | grep -q 'mtu 65536'; then
    ip addr show dev lo >&2
    echo "ERROR: a test changed the host's loopback" >&2
    exit 1
fi

echo ">> fuzzing: every cargo-fuzz target for a bounded time"
FUZZ_SECONDS=${FUZZ_SECONDS:-15} scripts/fuzz.sh

echo ">> VM lane: release binaries on a real 6.12 kernel under QEMU/TCG (igb VFs, vfio-pci, netdevsim)"
scripts/vm-lane/lane.sh

echo ">> demo (smoke)"
log=$(mktemp)
if ! scripts/demo.sh >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "ERROR: scripts/demo.sh failed" >&2
    exit 1
fi
rm -f "$log"
echo ">> all tests passed"
