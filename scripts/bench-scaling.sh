#!/usr/bin/env bash
# How push cost scales with the number of connected devices (issue 15's scaling table): for
# 10, 1,000, 10,000 and 16,000 devices, unpaced pushes spread over all of them (pushes/s, server
# CPU per push, latency p50/p99), and the resident bytes per idle device at 1,000 and 10,000.
# One fresh daemon per figure, pinned to core 0, the load tool to core 1; every run bounded.
#
#   scripts/bench-scaling.sh            ROUNDS (2) rounds of each push figure, about 6 minutes
#
# Results: bench-results/scaling-<UTC stamp>.jsonl (machine and commit first, then one line per
# load tool run with the load average at its start) and a table in scaling-<stamp>.md.
# 50,000 devices is not run: the load tool opens at most 20,000 devices (loadgen MAX_DEVICES)
# and the default build's device table holds 16,384.
set -euo pipefail
cd "$(dirname "$0")/.."

WSSED_PORT=${WSSED_PORT:-18095}
ROUNDS=${ROUNDS:-2}
PUSHES=${PUSHES:-100000}
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_cores bench-scaling.sh
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 16500 ]; then
    echo "bench-scaling.sh: open-file limit $(ulimit -n) is below 16500; 16,000 devices need more" >&2
    exit 1
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$WSSED_PORT") 2>/dev/null; then
    echo "bench-scaling.sh: something already listens on 127.0.0.1:$WSSED_PORT" >&2
    exit 1
fi

cargo build --release -q --locked --bin wssed
cargo build --release -q --locked -p loadgen
WSSED=target/release/wssed
LOADGEN=target/release/loadgen

mkdir -p bench-results
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=bench-results/scaling-$STAMP.jsonl
LOG=bench-results/scaling-$STAMP.log
: > "$OUT"
python3 scripts/bench_machine.py "$OUT"

PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

start() {
    taskset -c "$SERVER_CORE" "$WSSED" --listen "127.0.0.1:$WSSED_PORT" --max-connections 16384 \
        --log-level warn 2>>"$LOG" &
    PID=$!
    wait_url "http://127.0.0.1:$WSSED_PORT/health" bench-scaling.sh
}

stop() {
    stop_pid "$PID"
    PID=""
}

# One load tool run against the running daemon; $1 labels it.
lg() {
    local label=$1 line la
    shift
    read -r la _ < /proc/loadavg
    line=$(timeout 300 taskset -c "$LOAD_CORE" "$LOADGEN" --target wssed \
        --url "http://127.0.0.1:$WSSED_PORT" --server-pid "$PID" --label "$label" \
        --source-ips 8 "$@" 2>>"$LOG") || true
    bench_record "$la" "$line" "$(printf '{"label":"%s","error":"loadgen printed nothing"}' "$label")"
}

for n in 1000 10000; do
    start
    lg "idle-$n" --scenario idle --devices "$n" --max-secs 120
    stop
done
for round in $(seq 1 "$ROUNDS"); do
    for n in 10 1000 10000 16000; do
        start
        lg "push-$n-r$round" --scenario push --devices "$n" --connections 32 --pushes "$PUSHES" \
            --concurrency 64 --max-secs 120
        stop
    done
done
read -r la1 la5 la15 _ < /proc/loadavg
printf '{"scenario":"machine_end","loadavg_end":["%s","%s","%s"]}\n' "$la1" "$la5" "$la15" >> "$OUT"

python3 - "$OUT" > "bench-results/scaling-$STAMP.md" <<'PY'
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
machine = lines[0]
print(f"Run `{sys.argv[1]}`: {machine.get('date')}, commit {machine.get('commit')}, "
      f"{machine.get('nproc')} cores, {machine.get('cpu')}; load average at start "
      f"{' '.join(machine.get('loadavg_start', []))}, at end {' '.join(lines[-1].get('loadavg_end', []))}.")
print()
print("| devices | pushes/s | server CPU per push (µs) | latency p50 (µs) | latency p99 (µs) | every success delivered | load average (1 min) |")
print("| ---: | ---: | ---: | ---: | ---: | --- | ---: |")
def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    m = statistics.median(xs)
    return f"{m:,.1f}" + (f" ({min(xs):,.1f}–{max(xs):,.1f})" if len(xs) > 1 else "")
for n in (10, 1000, 10000, 16000):
    runs = [l for l in lines if str(l.get("label", "")).startswith(f"push-{n}-")]
    ok = [r for r in runs if "error" not in r]
    print(f"| {n:,} | {med([r.get('pushes_per_s') for r in ok])} | "
          f"{med([r.get('server_cpu_us_per_push') for r in ok])} | "
          f"{med([r.get('latency_us', {}).get('p50') for r in ok])} | "
          f"{med([r.get('latency_us', {}).get('p99') for r in ok])} | "
          f"{'yes' if ok and len(ok) == len(runs) and all(r.get('missing', 0) == 0 for r in ok) else 'no'} | "
          f"{med([r.get('loadavg_1min') for r in runs])} |")
print()
print("| idle devices | RSS with them (KiB) | resident bytes per idle device |")
print("| ---: | ---: | ---: |")
for n in (1000, 10000):
    r = next((l for l in lines if l.get("label") == f"idle-{n}"), {})
    print(f"| {n:,} | {r.get('rss_kib_with_devices', '-')} | {r.get('rss_per_device_bytes', '-')} |")
PY
cat "bench-results/scaling-$STAMP.md"
