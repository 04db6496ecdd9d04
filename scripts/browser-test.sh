#!/usr/bin/env bash
# Real-browser tests (docs/protocol.md §17 CORS, §18 status page, examples/browser-device.html):
# Debian's headless chromium, driven by playwright-core from browser-tests/ (run.mjs says what
# each check proves). Installs what it needs (apt: chromium, and nodejs/npm when node is
# missing; npm ci from the committed lock, no browser download), builds wssed, runs the
# checks. Runs as root with no stdin; every step is bounded; run.mjs ends the processes it
# started (wssed, chromium) by their own handles.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
log() { printf 'browser-test: %s\n' "$*" >&2; }

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    # A mirror index out of sync makes update exit non-zero while the rest is usable.
    timeout 600 apt-get update -qq </dev/null >/dev/null 2>&1 || log "apt-get update reported errors; going on"
    timeout 1200 apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
    log "node $(node --version) is too old: playwright-core needs 18 or newer"
    exit 1
fi

(cd browser-tests && timeout 600 npm ci --no-audit --no-fund --ignore-scripts </dev/null >/dev/null)
cargo build --locked --bin wssed
export WSSED_BIN="$PWD/target/debug/wssed" CHROMIUM=/usr/bin/chromium
# run.mjs bounds each check (60 s) and the canary (30 s); this bounds the whole.
cd browser-tests && timeout -k 10 600 node run.mjs </dev/null
