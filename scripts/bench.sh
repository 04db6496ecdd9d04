#!/usr/bin/env bash
# Side-by-side benchmark: every loadgen scenario against wssed (release build) and nchan, in one
# run, the server pinned to core 0 and the load tool to core 1. Writes the JSON lines to
# bench-results/<date>.jsonl, a latency CDF plot (.png) and a markdown summary (.md) beside it.
#
#   scripts/bench.sh              both servers
#   scripts/bench.sh wssed        one server only (likewise nchan)
#
# Environment: WSSED_PORT (18080), NCHAN_PORT (18081). Installs gnuplot-nox and nchan if missing.
# BENCH_CROSS=aarch64-unknown-linux-gnu also cross-builds that target (scripts/cross-env.sh; a few
# minutes the first time) to record its stripped binary size beside x86_64's.
# Every loadgen run is bounded (--max-secs plus timeout); the whole run takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

WSSED_PORT=${WSSED_PORT:-18080}
NCHAN_PORT=${NCHAN_PORT:-18081}
SERVERS=${1:-both}
case $SERVERS in both) SERVERS="wssed nchan" ;; wssed | nchan) ;; *) echo "usage: $0 [wssed|nchan]" >&2; exit 2 ;; esac

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_cores bench.sh
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10300 ]; then
    echo "bench.sh: open-file limit $(ulimit -n) is below 10300; the 10k-device scenario will fail" >&2
fi

if ! command -v gnuplot >/dev/null 2>&1; then
    echo "bench.sh: installing gnuplot-nox for the plot" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuplot-nox >&2
fi

cargo build --release -q
cargo build --release -q -p loadgen
WSSED=target/release/wssed
LOADGEN=target/release/loadgen

mkdir -p bench-results
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=bench-results/$STAMP.jsonl
: > "$OUT"
T_START=$SECONDS

python3 - "$OUT" <<'PY'
import json, os, platform, subprocess, sys, datetime
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
mem = "?"
for line in open("/proc/meminfo"):
    if line.startswith("MemTotal"):
        mem = f"{int(line.split()[1]) // 1024} MiB RAM"; break
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
nginx = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-nchan"], capture_output=True, text=True).stdout
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"scenario": "machine", "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "mem": mem, "arch": platform.machine(), "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + ("+dirty" if dirty else ""), "nchan_package": nginx or None,
        "loadavg_start": open("/proc/loadavg").read().split()[:3]}) + "\n")
PY
printf '{"scenario":"binary","target":"wssed","arch":"%s","bytes":%s}\n' "$(uname -m)" "$(stat -c %s "$WSSED")" >> "$OUT"
if [ -n "${BENCH_CROSS:-}" ]; then
    (
        # shellcheck source=scripts/cross-env.sh
        . scripts/cross-env.sh
        cross_setup "$BENCH_CROSS"
        cross_cargo build --release --locked -q --bin wssed >&2
    )
    cross_bin=target/$BENCH_CROSS/release/wssed
    printf '{"scenario":"binary","target":"wssed","arch":"%s","bytes":%s}\n' "${BENCH_CROSS%%-*}" "$(stat -c %s "$cross_bin")" >> "$OUT"
fi

for port in $WSSED_PORT $NCHAN_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "bench.sh: something already listens on 127.0.0.1:$port (set WSSED_PORT / NCHAN_PORT)" >&2
        exit 1
    fi
done

WSSED_PID=""
declare -A PIDS=()

cleanup() {
    if [ -n "$WSSED_PID" ] && kill -0 "$WSSED_PID" 2>/dev/null; then kill -KILL "$WSSED_PID" 2>/dev/null || true; fi
    if [ -n "${PIDS[nchan]:-}" ]; then scripts/nchan.sh stop "$NCHAN_PORT" || true; fi
}
trap cleanup EXIT

port_of() { if [ "$1" = nchan ]; then echo "$NCHAN_PORT"; else echo "$WSSED_PORT"; fi; }

start_server() {
    case $1 in
        wssed)
            taskset -c "$SERVER_CORE" "$WSSED" --listen "127.0.0.1:$WSSED_PORT" --max-connections 10240 \
                --log-level warn 2>>"bench-results/$STAMP.wssed.log" &
            WSSED_PID=$!
            PIDS[wssed]=$WSSED_PID
            wait_url "http://127.0.0.1:$WSSED_PORT/health" bench.sh
            ;;
        nchan)
            PIDS[nchan]=$(taskset -c "$SERVER_CORE" scripts/nchan.sh start "$NCHAN_PORT")
            wait_url "http://127.0.0.1:$NCHAN_PORT/nchan_status" bench.sh
            ;;
    esac
}

stop_server() {
    case $1 in
        wssed)
            stop_pid "$WSSED_PID"
            WSSED_PID=""
            ;;
        nchan)
            scripts/nchan.sh stop "$NCHAN_PORT"
            ;;
    esac
    PIDS[$1]=""
}

# One loadgen run against one server: its JSON line goes to the results (an error line when it fails).
lg() {
    local server=$1
    shift
    local line la
    # The machine is shared: every figure carries the 1-minute load average at its start.
    read -r la _ < /proc/loadavg
    line=$(timeout 400 taskset -c "$LOAD_CORE" "$LOADGEN" --target "$server" \
        --url "http://127.0.0.1:$(port_of "$server")" --server-pid "${PIDS[$server]}" "$@" \
        2>>"bench-results/$STAMP.loadgen.log") || true
    bench_record "$la" "$line" "$(printf '{"target":"%s","args":"%s","error":"loadgen printed nothing"}' "$server" "$*")"
}

# Idle footprint: a fresh server for each measurement, so "just after start" means that.
for n in 1000 10000; do
    for server in $SERVERS; do
        echo "== idle $n: $server" >&2
        start_server "$server"
        lg "$server" --scenario idle --devices "$n" --max-secs 120
        stop_server "$server"
    done
done

# Load scenarios: both servers up (the idle one costs nothing), each scenario run against one
# right after the other, so a change in the machine's background load hits both alike.
for server in $SERVERS; do start_server "$server"; done
# Push figures swing with the machine's background load: three alternating rounds each, and the
# report gives the median with the range.
ROUNDS=3
SCENARIOS=(
    "--scenario push --devices 100 --connections 32 --pushes 100000 --max-secs 60"
    "--scenario push --devices 100 --connections 32 --rate 1000 --pushes 5000 --max-secs 30"
)
for args in "${SCENARIOS[@]}"; do
    for round in $(seq 1 "$ROUNDS"); do
        for server in $SERVERS; do
            echo "== $server round $round $args" >&2
            # shellcheck disable=SC2086 # the scenario's flags are meant to split
            lg "$server" $args --label "round $round"
        done
    done
done
SCENARIOS=(
    "--scenario batch --devices 100 --connections 8 --batch-size 100 --batches 1000 --max-secs 60"
    "--scenario send --devices 100 --connections 1 --requests 10000 --max-secs 30"
    "--scenario send --devices 100 --connections 32 --requests 50000 --max-secs 30"
    "--scenario connect --devices 2000 --concurrency 64 --max-secs 60"
)
for args in "${SCENARIOS[@]}"; do
    for server in $SERVERS; do
        echo "== $server $args" >&2
        # shellcheck disable=SC2086 # the scenario's flags are meant to split
        lg "$server" $args
    done
done
for server in $SERVERS; do stop_server "$server"; done

# Other work on the machine skews every figure: the load average says how much there was.
read -r la1 la5 la15 _ < /proc/loadavg
printf '{"scenario":"machine_end","loadavg_end":["%s","%s","%s"]}\n' "$la1" "$la5" "$la15" >> "$OUT"

scripts/plot_cdf.py "$OUT" "bench-results/$STAMP.png" || echo "bench.sh: no plot" >&2
scripts/bench_report.py "$OUT" | tee "bench-results/$STAMP.md"
echo "bench.sh: $OUT ($((SECONDS - T_START)) s)" >&2
