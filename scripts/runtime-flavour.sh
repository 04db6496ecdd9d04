#!/usr/bin/env bash
# Runtime flavour: wssed with --worker-threads 1 (current-thread runtime) and 2 (multi-thread),
# each pinned to one core (taskset -c 0) and to two (taskset -c 0,1). Push throughput, server CPU
# per push and push->device latency, unpaced and paced at 1000/s, ROUNDS rounds (default 3) in
# which the four set-ups take turns, so background load hits them alike.
#
#   scripts/runtime-flavour.sh
#
# The load tool runs on core 1 when the server has core 0 alone; when the server has both cores
# the tool is left unpinned: it shares them with the server (a 2-core machine has no third).
# Writes bench-results/runtime-<UTC date>.jsonl and prints a markdown table
# (scripts/runtime_report.py). Environment: BASE_PORT (18100), ROUNDS (3), PUSHES (100000).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE_PORT=${BASE_PORT:-18100}
ROUNDS=${ROUNDS:-3}
PUSHES=${PUSHES:-100000}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -q
cargo build --release -q -p loadgen
WSSED=target/release/wssed
LOADGEN=target/release/loadgen
mkdir -p bench-results
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=bench-results/runtime-$STAMP.jsonl
commit=$(git rev-parse --short HEAD)
: > "$OUT"

# worker threads, server cores, load tool cores ("" = unpinned)
SETUPS=("1 0 1" "2 0 1" "1 0,1 " "2 0,1 ")
declare -a PID PORT
cleanup() {
    for p in "${PID[@]:-}"; do
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
    done
}
trap cleanup EXIT

for i in "${!SETUPS[@]}"; do
    read -r wt cores _ <<< "${SETUPS[$i]}"
    PORT[i]=$((BASE_PORT + i))
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[i]}") 2>/dev/null; then
        echo "runtime-flavour: 127.0.0.1:${PORT[i]} is taken (set BASE_PORT)" >&2
        exit 1
    fi
    taskset -c "$cores" "$WSSED" --listen "127.0.0.1:${PORT[i]}" --max-connections 1024 \
        --log-level warn --worker-threads "$wt" 2>>"bench-results/runtime-$STAMP.wssed.log" &
    PID[i]=$!
done
for i in "${!SETUPS[@]}"; do
    up=0
    for _ in $(seq 1 200); do
        if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:${PORT[i]}/health"; then up=1; break; fi
        sleep 0.05
    done
    [ "$up" = 1 ] || { echo "runtime-flavour: server on ${PORT[i]} did not answer" >&2; exit 1; }
done

run() {
    local i=$1 label=$2
    shift 2
    read -r wt cores lcores <<< "${SETUPS[$i]}"
    local pin=() la line
    [ -n "$lcores" ] && pin=(taskset -c "$lcores")
    read -r la _ < /proc/loadavg
    line=$(timeout 200 "${pin[@]}" "$LOADGEN" --target wssed --url "http://127.0.0.1:${PORT[i]}" \
        --server-pid "${PID[i]}" --label "$label" "$@" 2>>"bench-results/runtime-$STAMP.loadgen.log") || true
    [ -n "$line" ] || line='{"error":"loadgen printed nothing"}'
    echo "$line" | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
d.update(worker_threads=int(sys.argv[1]), server_cores=sys.argv[2], loadgen_cores=sys.argv[3] or "unpinned",
         loadavg_1min=float(sys.argv[4]), commit=sys.argv[5])
print(json.dumps(d))' "$wt" "$cores" "$lcores" "$la" "$commit" >> "$OUT"
    tail -n1 "$OUT" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d.pop("cdf_us",None); print(json.dumps(d)[:240])' >&2
}

for round in $(seq 1 "$ROUNDS"); do
    for i in "${!SETUPS[@]}"; do
        run "$i" "round $round" --scenario push --devices 100 --connections 32 --pushes "$PUSHES" --max-secs 60
        run "$i" "round $round" --scenario push --devices 100 --connections 32 --rate 1000 --pushes 5000 --max-secs 30
    done
done

stop() {
    kill -TERM "${PID[$1]}" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "${PID[$1]}" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "${PID[$1]}" 2>/dev/null || true
    wait "${PID[$1]}" 2>/dev/null || true
}
for i in "${!SETUPS[@]}"; do stop "$i"; done

# Footprint of each flavour: a fresh server per set-up pinned to one core, 1000 idle devices.
for i in 0 1; do
    read -r wt cores _ <<< "${SETUPS[$i]}"
    taskset -c "$cores" "$WSSED" --listen "127.0.0.1:${PORT[i]}" --max-connections 1024 \
        --log-level warn --worker-threads "$wt" 2>>"bench-results/runtime-$STAMP.wssed.log" &
    PID[i]=$!
    for _ in $(seq 1 200); do
        curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:${PORT[i]}/health" && break
        sleep 0.05
    done
    run "$i" "idle" --scenario idle --devices 1000 --max-secs 60
    stop "$i"
done
PID=()
scripts/runtime_report.py "$OUT" | tee "bench-results/runtime-$STAMP.md"
echo "runtime-flavour: $OUT" >&2
