#!/usr/bin/env bash
# The cluster's cost, measured in one run (BENCHMARKS.md "Across nodes"): a nats-server and three
# wssed nodes (release build with --features cluster) on 127.0.0.1, pinned to core 0, the load
# tool on core 1.
#
#   1. binary size with and without the feature (x86_64);
#   2. pushes through node 1 to devices on node 1 (local) and to devices on node 2 (one hop
#      through NATS), side by side, alternating, three rounds: throughput unpaced, latency at
#      1,000 pushes/s; then one batch and one send round of each;
#   3. idle devices: 10,000 on a node without a cluster (the baseline), then 10,000 on each of
#      the three nodes at once, with the resident memory of each node and of nats-server.
#
# Writes bench-results/cluster-<date>.jsonl and a markdown summary (.md) beside it. Ports:
# NATS_PORT (14222), NODE_PORT (18181, and the two above it), BASE_PORT (18190). Every run is
# bounded (--max-secs plus timeout); the whole takes about five minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_PORT=${NATS_PORT:-14222}
NODE_PORT=${NODE_PORT:-18181}
BASE_PORT=${BASE_PORT:-18190}
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_cores bench-cluster.sh
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
    echo "bench-cluster.sh: installing nats-server" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nats-server >&2
fi
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)

mkdir -p bench-results
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=bench-results/cluster-$STAMP.jsonl
LOG=bench-results/cluster-$STAMP.log
: > "$OUT"

# Sizes first: the plain build, then the cluster build the rest of the run uses.
cargo build --release --locked -q --bin wssed
cp target/release/wssed target/release/wssed-plain
cargo build --release --locked -q --bin wssed --features cluster
cargo build --release --locked -q -p loadgen
WSSED=target/release/wssed
LOADGEN=target/release/loadgen
printf '{"scenario":"binary","arch":"%s","features":"","bytes":%s}\n' "$(uname -m)" "$(stat -c %s target/release/wssed-plain)" >> "$OUT"
printf '{"scenario":"binary","arch":"%s","features":"cluster","bytes":%s}\n' "$(uname -m)" "$(stat -c %s "$WSSED")" >> "$OUT"

python3 scripts/bench_machine.py "$OUT" "nats_server=$("$NATS" --version)"

for port in "$NATS_PORT" "$NODE_PORT" $((NODE_PORT + 1)) $((NODE_PORT + 2)) "$BASE_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "bench-cluster.sh: something already listens on 127.0.0.1:$port" >&2
        exit 1
    fi
done

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# One loadgen run; its JSON line, with the 1-minute load average at its start, goes to the results.
lg() {
    local label=$1 pid=$2
    shift 2
    local line la
    read -r la _ < /proc/loadavg
    line=$(timeout 400 taskset -c "$LOAD_CORE" "$LOADGEN" --target wssed --server-pid "$pid" --label "$label" "$@" \
        2>>"$LOG") || true
    bench_record "$la" "$line" "$(printf '{"label":"%s","args":"%s","error":"loadgen printed nothing"}' "$label" "$*")"
}

# The baseline: one node without a cluster, 10,000 idle devices.
taskset -c "$SERVER_CORE" "$WSSED" --listen "127.0.0.1:$BASE_PORT" --max-connections 10240 --log-level warn 2>>"$LOG" &
BASE=$!
PIDS+=("$BASE")
wait_url "http://127.0.0.1:$BASE_PORT/health" bench-cluster.sh
lg "no cluster" "$BASE" --scenario idle --url "http://127.0.0.1:$BASE_PORT" --devices 10000 --max-secs 120
stop_pid "$BASE"

taskset -c "$SERVER_CORE" "$NATS" -a 127.0.0.1 -p "$NATS_PORT" 2>>"$LOG" &
NATS_PID=$!
PIDS+=("$NATS_PID")
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.05; done
NODE_PIDS=()
for i in 0 1 2; do
    taskset -c "$SERVER_CORE" "$WSSED" --listen "127.0.0.1:$((NODE_PORT + i))" --max-connections 10240 \
        --log-level warn --cluster-urls "nats://127.0.0.1:$NATS_PORT" --node-name "n$((i + 1))" 2>>"$LOG" &
    NODE_PIDS+=($!)
    PIDS+=($!)
done
for i in 0 1 2; do
    for _ in $(seq 1 200); do
        curl -s --max-time 1 "http://127.0.0.1:$((NODE_PORT + i))/health" | grep -q '"state":"up","peers":2' && break
        sleep 0.05
    done
done
N1="http://127.0.0.1:$NODE_PORT"
N2="http://127.0.0.1:$((NODE_PORT + 1))"

ROUNDS=3
SCENARIOS=(
    "--scenario push --devices 100 --connections 32 --pushes 50000 --max-secs 60"
    "--scenario push --devices 100 --connections 32 --rate 1000 --pushes 5000 --max-secs 30"
)
for args in "${SCENARIOS[@]}"; do
    for round in $(seq 1 "$ROUNDS"); do
        echo "== round $round $args" >&2
        # shellcheck disable=SC2086 # the scenario's flags are meant to split
        lg "local round $round" "${NODE_PIDS[0]}" $args --url "$N1" --device-url "$N1"
        # The CPU figures cover the three nodes (nats-server's own share is read beside them).
        # shellcheck disable=SC2086
        lg "cross-node round $round" "${NODE_PIDS[0]},${NODE_PIDS[1]},$NATS_PID" $args --url "$N1" --device-url "$N2"
    done
done
SCENARIOS=(
    "--scenario batch --devices 100 --connections 8 --batch-size 100 --batches 500 --max-secs 60"
    "--scenario send --devices 100 --connections 1 --requests 5000 --max-secs 30"
)
for args in "${SCENARIOS[@]}"; do
    echo "== $args" >&2
    # shellcheck disable=SC2086
    lg "local" "${NODE_PIDS[0]}" $args --url "$N1" --device-url "$N1"
    # shellcheck disable=SC2086
    lg "cross-node" "${NODE_PIDS[0]},${NODE_PIDS[1]},$NATS_PID" $args --url "$N1" --device-url "$N2"
done

# 3 nodes x 10,000 idle devices at once; nats-server's memory is sampled meanwhile.
nats_before=$(rss_kib "$NATS_PID")
(
    peak=0
    for _ in $(seq 1 600); do
        r=$(rss_kib "$NATS_PID" 2>/dev/null || echo 0)
        [ "$r" -gt "$peak" ] && peak=$r && echo "$peak" > "bench-results/cluster-$STAMP.natspeak"
        sleep 0.2
    done
) &
SAMPLER=$!
PIDS+=("$SAMPLER")
LG_PIDS=()
for i in 0 1 2; do
    lg "3 nodes, node $((i + 1))" "${NODE_PIDS[$i]}" --scenario idle --url "http://127.0.0.1:$((NODE_PORT + i))" \
        --devices 10000 --max-secs 180 --source-ips 8 &
    LG_PIDS+=($!)
done
wait "${LG_PIDS[@]}"
kill "$SAMPLER" 2>/dev/null || true
printf '{"scenario":"nats_rss","before_kib":%s,"peak_kib":%s}\n' "$nats_before" "$(cat "bench-results/cluster-$STAMP.natspeak" 2>/dev/null || echo 0)" >> "$OUT"
rm -f "bench-results/cluster-$STAMP.natspeak"
for i in 0 1 2; do
    curl -s "http://127.0.0.1:$((NODE_PORT + i))/metrics" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({"scenario":"node_metrics","node":d["cluster"]["node"],"cluster":d["cluster"],"memory_used_peak_bytes":d["memory_used_peak_bytes"]}))' >> "$OUT"
done
read -r la _ < /proc/loadavg
printf '{"scenario":"end","loadavg_1min":%s}\n' "$la" >> "$OUT"

for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid"; done
stop_pid "$NATS_PID"
python3 scripts/bench_cluster_report.py "$OUT" > "${OUT%.jsonl}.md"
cat "${OUT%.jsonl}.md"
