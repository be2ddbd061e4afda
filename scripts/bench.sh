#!/usr/bin/env bash
# Benchmarks our release binaries against Debian's Go reference plugins
# (containernetworking-plugins, /usr/lib/cni) on the same work in the same run.
# Usage: scripts/bench.sh [section...]   (default: every section)
# Prints Markdown; BENCHMARKS.md records a run with the machine it ran on.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source-path=SCRIPTDIR source=lib/common.sh disable=SC1091
. scripts/lib/common.sh

require_root
ensure_packages containernetworking-plugins etcd-server etcd-client protobuf-compiler libprotobuf-dev

cargo build --release --workspace --bins >&2
echo "# Benchmarks"
echo
echo "Machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)."
echo "Command: scripts/bench.sh $*"
echo
target/release/cni-bench "$PWD/target/release" "$@"
