#!/usr/bin/env bash
# CI fuzz smoke: replays every committed regression input, then fuzzes each target for
# FUZZ_SECONDS (default 30) from its committed seed corpus. Fails on any crash or broken
# invariant. Installs the nightly toolchain and cargo-fuzz when they are missing.
#
# The committed corpora are never written to: libFuzzer's new inputs go to a temporary
# directory. Long runs are described in fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
TARGETS=(http_head framer chunked envelope mention sse mailbox_file)

# Largest input libFuzzer may try, per target: http_head and framer must reach MAX_HEAD_BYTES
# (16 KiB).
max_len() {
    case "$1" in
        http_head | framer) echo 20000 ;;
        chunked | envelope | mailbox_file) echo 8192 ;;
        *) echo 4096 ;;
    esac
}

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# -a: debug assertions (and overflow checks) on, as in the long runs.
FUZZ_FLAGS=(--debug-assertions)

echo "=== building the fuzz targets"
cargo +nightly fuzz build "${FUZZ_FLAGS[@]}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for t in "${TARGETS[@]}"; do
    if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
        echo "=== $t: replaying fuzz/regressions/$t"
        cargo +nightly fuzz run "${FUZZ_FLAGS[@]}" "$t" "fuzz/regressions/$t" -- \
            -runs=0 -max_len="$(max_len "$t")"
    fi
done

for t in "${TARGETS[@]}"; do
    echo "=== $t: fuzzing for ${FUZZ_SECONDS}s"
    mkdir -p "$work/$t"
    cargo +nightly fuzz run "${FUZZ_FLAGS[@]}" "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$FUZZ_SECONDS" -max_len="$(max_len "$t")" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1
done
echo "=== fuzz smoke passed"
