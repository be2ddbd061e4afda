#!/usr/bin/env bash
# Installs the suite on one host: the plugins (sriov ib-sriov rdma ippool
# coordinator) into the CNI bin directory and rdma-hostprep into PREFIX/sbin.
# Each binary is replaced atomically (a temp file in the target directory,
# fsync, rename: a runtime running a plugin meanwhile gets the old binary or
# the new one, never a torn one) with mode 0755; identical binaries are left
# alone, so running it again changes nothing. The copying is
# `rdma-hostprep install-cni`, the DaemonSet's entrypoint too.
#
#   scripts/install.sh [--from DIR] [--dest DIR] [--prefix DIR]
#
#   --from DIR    take the release binaries from DIR; default: build them
#                 (cargo build --release --workspace --bins, which needs
#                 protoc: installed here when missing) and take target/release
#   --dest DIR    the CNI bin directory (default /opt/cni/bin)
#   --prefix DIR  rdma-hostprep goes to DIR/sbin (default /usr/local)
#
# Exit status: 0 installed or up to date, 1 failed, 2 bad usage.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib/common.sh disable=SC1091
. "$repo/scripts/lib/common.sh"

PLUGINS=(sriov ib-sriov rdma ippool coordinator)
from='' dest=/opt/cni/bin prefix=/usr/local

usage() { # <exit status>
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit "$1"
}
die() {
    echo "install.sh: $*" >&2
    exit 1
}
# An absolute path without '..' (it is where binaries land).
absolute() { # <option> <value>
    case $2 in
    /*) ;;
    *) echo "install.sh: $1 must be an absolute path (got [$2])" >&2; exit 2 ;;
    esac
    case /$2/ in
    */../*) echo "install.sh: $1 must not contain '..' (got [$2])" >&2; exit 2 ;;
    esac
}

while [ $# -gt 0 ]; do
    case $1 in
    --from | --dest | --prefix)
        [ $# -ge 2 ] || { echo "install.sh: $1 needs a value" >&2; exit 2; }
        case $1 in
        --from) from=$2 ;;
        --dest) dest=$2 ;;
        --prefix) prefix=$2 ;;
        esac
        shift 2
        ;;
    -h | --help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
    esac
done
absolute --dest "$dest"
absolute --prefix "$prefix"

if [ -z "$from" ]; then
    command -v cargo >/dev/null || die "cargo is missing: install Rust, or give --from DIR with release binaries"
    if ! command -v protoc >/dev/null; then
        [ "$(id -u)" = 0 ] || die "protoc is missing (Debian: apt-get install protobuf-compiler libprotobuf-dev)"
        ensure_packages protobuf-compiler libprotobuf-dev
    fi
    echo ">> cargo build --release --workspace --bins" >&2
    (cd "$repo" && cargo build --release --workspace --bins)
    from=$repo/target/release
fi
[ -d "$from" ] || die "--from $from is not a directory"
from=$(cd "$from" && pwd)

# Every binary is checked before the first copy: a missing one changes nothing.
missing=()
for b in "${PLUGINS[@]}" rdma-hostprep; do
    [ -f "$from/$b" ] && [ -x "$from/$b" ] || missing+=("$b")
done
[ ${#missing[@]} = 0 ] || die "not in $from (or not executable): ${missing[*]}"

"$from/rdma-hostprep" install-cni --from "$from" --to "$dest" ||
    die "installing the plugins into $dest failed (see above)"
"$from/rdma-hostprep" install-cni --from "$from" --to "$prefix/sbin" --bin rdma-hostprep ||
    die "installing rdma-hostprep into $prefix/sbin failed (see above)"
echo ">> plugins in $dest, rdma-hostprep in $prefix/sbin" >&2
