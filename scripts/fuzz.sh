#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time each (libFuzzer,
# nightly toolchain): configs of every plugin, the CNI environment and
# CNI_ARGS, prevResult of every spec version, state files, rtnetlink and RDMA
# netlink replies. Installs cargo-fuzz (and the nightly toolchain) if missing.
#
#   scripts/fuzz.sh                 # every target, FUZZ_SECONDS (default 25) each
#   FUZZ_SECONDS=300 scripts/fuzz.sh prev_result netconf
#
# Seeds are fuzz/seeds/<target> (kept in git); what libFuzzer finds grows
# fuzz/corpus/<target> (ignored). A crash fails the script and names the
# input to reproduce it: `cargo +nightly fuzz run <target> <artifact>`. Add
# that input to the corpus and the unit tests when you fix it.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-25}

if ! rustup toolchain list | grep -q '^nightly'; then
    echo ">> installing the nightly toolchain (cargo-fuzz needs -Zsanitizer)" >&2
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo ">> installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

cd fuzz
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi

echo ">> building the fuzz targets (release, debug assertions, ASan)"
cargo +nightly fuzz build 2>&1 | tail -n 3

failed=()
total_execs=0
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log=$(mktemp)
    start=$(date +%s)
    if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        status=ok
    else
        status=CRASH
        failed+=("$t")
    fi
    took=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    units=$(find "corpus/$t" -type f | wc -l)
    total_execs=$((total_execs + ${execs:-0}))
    printf '%-16s %-5s %9s execs in %3ss (%s exec/s), coverage %s, corpus %s, peak RSS %s MB\n' \
        "$t" "$status" "${execs:-?}" "$took" "$(( ${execs:-0} / (took > 0 ? took : 1) ))" \
        "${cov:-?}" "$units" "${rss:-?}"
    if [ "$status" = CRASH ]; then
        grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written to' "$log" | head -n 8 >&2
    fi
    rm -f "$log"
done

echo ">> $total_execs executions over ${#TARGETS[@]} targets"
if [ ${#failed[@]} -gt 0 ]; then
    echo "ERROR: fuzz targets crashed: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
