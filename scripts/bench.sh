#!/usr/bin/env bash
# Benchmarks our plugins against Debian's Go reference plugins
# (containernetworking-plugins, /usr/lib/cni) on the same work in the same
# run, and against the kernel's floor. Prints Markdown; BENCHMARKS.md records
# a run with the machine it ran on.
# Usage: scripts/bench.sh [section...]
#   sections: exec move ipam route pod floor memory (default: all)
# The pod section writes its plot to $BENCH_OUT (default target/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib/common.sh disable=SC1091
. scripts/lib/common.sh

require_root
ensure_packages containernetworking-plugins etcd-server etcd-client protobuf-compiler libprotobuf-dev \
    iproute2 gnuplot-nox time

# What users install...
cargo build --release --workspace --bins >&2
# ...and the same release profile with the simulated PF and RDMA subsystem,
# for sriov and rdma on stand-in VFs (this kernel has neither SR-IOV nor RDMA).
cargo build --release --bins -p sriov -p ib-sriov -p rdma -p ippool -p coordinator \
    --features sriov/test-build,ib-sriov/test-build,rdma/test-build,ippool/test-build,coordinator/test-build \
    --target-dir target/testbin >&2

echo "# Benchmark run"
echo
echo "Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), $(grep -m1 MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}') RAM."
echo "Command: scripts/bench.sh $*"
echo "Started: $(date -u +%Y-%m-%dT%H:%MZ); uptime: $(uptime)"
echo
BENCH_OUT="${BENCH_OUT:-$PWD/target/bench}" target/release/cni-bench "$PWD/target/release" "$PWD/target/testbin/release" "$@"
echo "Finished: $(date -u +%Y-%m-%dT%H:%MZ); uptime: $(uptime)"
