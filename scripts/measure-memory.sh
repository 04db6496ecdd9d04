#!/usr/bin/env bash
# Measures the constants of the worst-case memory formula in docs/memory.md: runs the
# measure_memory example against the release daemon (what ships) and the debug daemon (what
# `cargo test` runs, for tests/e2e/memory.rs), at two body sizes so the per-byte terms separate
# from the fixed ones. Linux only (reads /proc/PID/status). Loopback traffic only.
#
#   scripts/measure-memory.sh            # all four runs, about three minutes
#   DEVICES=1000 SENDS=500 scripts/measure-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${DEVICES:-1000}
SENDS=${SENDS:-500}
cargo build --release --bin wssed
cargo build --bin wssed --example measure_memory
for profile in release debug; do
  for body in 65536 16384; do
    echo "== $profile build, max_body_bytes $body, queue_depth 4"
    target/debug/examples/measure_memory --bin "target/$profile/wssed" \
      --devices "$DEVICES" --sends "$SENDS" --max-body-bytes "$body" --queue-depth 4
  done
  echo "== $profile build, max_body_bytes 65536, queue_depth 16 (queue-dependent terms only)"
  target/debug/examples/measure_memory --bin "target/$profile/wssed" \
    --devices 10 --sends 10 --http 10 --bodies 10 --rejects 10 --max-body-bytes 65536 --queue-depth 16 \
    | grep -E '^(frame|stalled|slow_send|inbound)'
done
