#!/usr/bin/env bash
# cnitool, the containernetworking/cni reference client (libcni 1.1.2, CNI spec
# up to 1.0.0: add, check, del), built offline from Debian's
# golang-github-appc-cni source package with Debian's Go. Debian ships libcni
# (golang-github-appc-cni-dev) but leaves cnitool out of its binary package, so
# the source package's orig tarball is fetched with `apt-get source` through a
# private apt state (deb-src twins of this machine's own Debian sources; the
# system's apt configuration is not touched) and cnitool.go is built in GOPATH
# mode against /usr/share/gocode.
#
# Cached: $CNITOOL_CACHE (default /var/cache/rdma-cni-cnitool)/cnitool is built
# once (about 20 s with golang-go to install, 3 s without).
#
#   scripts/lib/cnitool.sh     builds it if needed and prints its path
#   . scripts/lib/cnitool.sh   defines ensure_cnitool, which sets CNITOOL
#
# The integration tests (tests/tests/conf_examples.rs) use $CNITOOL when set,
# else run this script.

CNITOOL_CACHE=${CNITOOL_CACHE:-/var/cache/rdma-cni-cnitool}
CNITOOL_VERSION=1.1.2

_cnitool_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh disable=SC1091
. "$_cnitool_lib_dir/common.sh"

# Sets CNITOOL to a cnitool binary, building it into $CNITOOL_CACHE if needed.
ensure_cnitool() {
    CNITOOL=$CNITOOL_CACHE/cnitool-$CNITOOL_VERSION
    [ -x "$CNITOOL" ] && return 0
    ensure_packages golang-go golang-github-appc-cni-dev containernetworking-plugins xz-utils
    local work apt_opts
    work=$(mktemp -d "${TMPDIR:-/tmp}/cnitool-build.XXXXXX")
    mkdir -p "$work/sources.d" "$work/lists/partial" "$CNITOOL_CACHE"
    local f n=0
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] || continue
        grep -q '^Types:.*\bdeb\b' "$f" || continue
        sed 's/^Types:.*$/Types: deb-src/' "$f" >"$work/sources.d/src-$n.sources"
        n=$((n + 1))
    done
    if [ "$n" -eq 0 ] && [ -f /etc/apt/sources.list ]; then
        sed -n 's/^deb \(.*\)$/deb-src \1/p' /etc/apt/sources.list >"$work/sources.d/src.list"
    fi
    apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/sources.d"
        -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
    echo ">> cnitool: fetching Debian source golang-github-appc-cni $CNITOOL_VERSION" >&2
    apt-get "${apt_opts[@]}" update -qq >&2
    (cd "$work" && apt-get "${apt_opts[@]}" source --download-only -qq "golang-github-appc-cni=$CNITOOL_VERSION-1" >&2)
    tar -C "$work" -xJf "$work/golang-github-appc-cni_$CNITOOL_VERSION.orig.tar.xz"
    echo ">> cnitool: building with $(go version)" >&2
    (cd "$work/golang-github-appc-cni-$CNITOOL_VERSION/cnitool" &&
        GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off CGO_ENABLED=0 \
            GOCACHE=$work/gocache go build -o "$work/cnitool" ./cnitool.go >&2)
    install -m 0755 "$work/cnitool" "$CNITOOL.tmp"
    mv "$CNITOOL.tmp" "$CNITOOL"
    rm -rf "$work"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    require_root
    ensure_cnitool
    echo "$CNITOOL"
fi
