#!/usr/bin/env bash
# The AI-cluster scenario on one machine without SR-IOV or RDMA hardware:
# two emulated GPU nodes (network namespaces), eight RoCE rails (a "switch"
# namespace per rail owning the rail's gateway), one pod per node with eth0
# plus net1..net8 attached exactly as conf-examples/roce-8-rails describes
# (the pod's Multus annotation, the eight NADs: sriov -> rdma -> coordinator
# with ippool and the file store, the pools of conf-examples/ippools).
# Prints what an operator looks at (the pod's `ip a`, `ip rule`, a rail's
# table, `rdma link`, the pools' allocation state, a ping per rail), then
# DELs everything and checks both nodes are back as they were. Must run as
# root; everything it creates is removed on exit. Also the smoke test at the
# end of scripts/test.sh: any deviation exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib/common.sh disable=SC1091
. scripts/lib/common.sh

require_root
# ptp + host-local give the pods their eth0 (the cluster network);
# nsenter (util-linux) runs each node's plugins in its namespace.
ensure_packages iproute2 containernetworking-plugins iputils-ping util-linux

BIN_FEATURES=sriov/test-build,ib-sriov/test-build,rdma/test-build,ippool/test-build,coordinator/test-build
BIN_DIR=$PWD/target/testbin/debug

echo ">> building the test build of the plugins and the scenario runner (target/testbin)"
cat <<'EOF'
The VFs are stood in by veth ends listed in each node's fake sysfs tree; the PF
side (what a real driver programs) goes to the test build's simulated PF, and
RDMA devices move in its simulated RDMA subsystem. The release binaries
(`cargo build --release`) program real PFs and real RDMA devices and are never
built with the simulation.
EOF
command -v cargo >/dev/null || {
    echo "ERROR: cargo not found in PATH (install Rust from https://rustup.rs; with sudo, keep PATH)" >&2
    exit 1
}
# The same command as scripts/test.sh: after the tests, nothing is rebuilt.
cargo build --workspace --bins --features "$BIN_FEATURES" --target-dir target/testbin
for b in sriov rdma ippool coordinator cni-scenario; do
    [ -x "$BIN_DIR/$b" ] || { echo "ERROR: $BIN_DIR/$b was not built" >&2; exit 1; }
done

CNI_TEST_BIN_DIR=$BIN_DIR exec "$BIN_DIR/cni-scenario" "$PWD/conf-examples"
