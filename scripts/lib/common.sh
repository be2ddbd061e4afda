# Shared shell helpers for scripts/: package installation and root checks.

# Installs Debian packages that are missing (by package name). Quiet when all
# are present; runs apt-get update once before the first install.
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo ">> installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "ERROR: $0 must run as root: the tests create network namespaces and move interfaces." >&2
        exit 1
    fi
}
