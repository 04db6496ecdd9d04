#!/usr/bin/env bash
# TLS against plain on one daemon, one run side by side (BENCHMARKS.md "TLS"): connections
# (with their handshake) per second, server CPU per push and push latency with upstream and
# device both on TLS or both plain, resident bytes per idle device on each port, and the
# stripped release binary with and without the `tls` feature.
#
#   scripts/tls-bench.sh [DEVICES] [PUSHES]        (defaults 1000, 20000)
#
# The daemon is pinned to core 0, the load to core 1 (taskset). The CA and certificate are
# made with README's openssl commands. Writes bench-results/tls-DATE.jsonl (one JSON line
# with commit, machine and load average) and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${1:-1000}
PUSHES=${2:-20000}

cargo build --release --locked --bin wssed
cp target/release/wssed target/wssed-plain
cargo build --release --locked --features tls --bin wssed
cp target/release/wssed target/wssed-tls
cargo build --release --locked --example tls_bench

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
(
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout ca.key -out ca.pem -days 3650 -subj '/CN=wssed local CA' 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout gw.key -out gw.csr -subj '/CN=localhost' 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >gw.ext
    openssl x509 -req -in gw.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 825 -extfile gw.ext -out gw.pem 2>/dev/null
)
load=$(cut -d' ' -f1-3 /proc/loadavg)
result=$(taskset -c 1 target/release/examples/tls_bench target/wssed-tls \
    "$dir/ca.pem" "$dir/gw.pem" "$dir/gw.key" "$DEVICES" "$PUSHES")
mkdir -p bench-results
out="bench-results/tls-$(date -u +%Y-%m-%dT%H%M%SZ).jsonl"
python3 - "$result" "$load" "$(git rev-parse --short HEAD)" "$(git status --porcelain | grep -q . && echo dirty || echo clean)" \
    "$(stat -c %s target/wssed-plain)" "$(stat -c %s target/wssed-tls)" >"$out" <<'PY'
import json, os, platform, sys
r = json.loads(sys.argv[1])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
r.update({
    "commit": sys.argv[3], "tree": sys.argv[4],
    "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu}",
    "loadavg_before": sys.argv[2],
    "binary_bytes": {"plain": int(sys.argv[5]), "tls": int(sys.argv[6])},
})
print(json.dumps(r))
PY
cat "$out"
