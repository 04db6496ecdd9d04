#!/usr/bin/env bash
# Side-by-side benchmark: every loadgen scenario against wssed (release build) and nchan, in one
# run, the server pinned to core 0 and the load tool to core 1. Writes the JSON lines to
# bench-results/<date>.jsonl, a latency CDF plot (.png) and a markdown summary (.md) beside it.
#
#   scripts/bench.sh              both servers
#   scripts/bench.sh wssed        one server only (likewise nchan)
#
# Environment: WSSED_PORT (18080), NCHAN_PORT (18081). Installs gnuplot-nox and nchan if missing.
# Every loadgen run is bounded (--max-secs plus timeout); the whole run takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

WSSED_PORT=${WSSED_PORT:-18080}
NCHAN_PORT=${NCHAN_PORT:-18081}
SERVERS=${1:-both}
case $SERVERS in both) SERVERS="wssed nchan" ;; wssed | nchan) ;; *) echo "usage: $0 [wssed|nchan]" >&2; exit 2 ;; esac

SERVER_CORE=0
LOAD_CORE=1
if [ "$(nproc)" -lt 2 ]; then
    echo "bench.sh: fewer than 2 cores; server and load tool share core 0" >&2
    LOAD_CORE=0
fi
# 10k devices need 10k descriptors in each process.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
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

for port in $WSSED_PORT $NCHAN_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "bench.sh: something already listens on 127.0.0.1:$port (set WSSED_PORT / NCHAN_PORT)" >&2
        exit 1
    fi
done

SERVER_PIDS=""
WSSED_PID=""
NCHAN_UP=""

cleanup() {
    if [ -n "$WSSED_PID" ] && kill -0 "$WSSED_PID" 2>/dev/null; then kill -KILL "$WSSED_PID" 2>/dev/null || true; fi
    if [ -n "$NCHAN_UP" ]; then scripts/nchan.sh stop "$NCHAN_PORT" || true; fi
}
trap cleanup EXIT

wait_health() {
    local url=$1 i
    for i in $(seq 1 200); do
        if curl -sf -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.05
    done
    echo "bench.sh: $url did not answer" >&2
    return 1
}

start_server() {
    case $1 in
        wssed)
            taskset -c "$SERVER_CORE" "$WSSED" --listen "127.0.0.1:$WSSED_PORT" --max-connections 10240 \
                --log-level warn 2>>"bench-results/$STAMP.wssed.log" &
            WSSED_PID=$!
            SERVER_PIDS=$WSSED_PID
            wait_health "http://127.0.0.1:$WSSED_PORT/health"
            ;;
        nchan)
            SERVER_PIDS=$(taskset -c "$SERVER_CORE" scripts/nchan.sh start "$NCHAN_PORT")
            NCHAN_UP=1
            wait_health "http://127.0.0.1:$NCHAN_PORT/nchan_status"
            ;;
    esac
}

stop_server() {
    case $1 in
        wssed)
            kill -TERM "$WSSED_PID" 2>/dev/null || true
            local i
            for i in $(seq 1 200); do kill -0 "$WSSED_PID" 2>/dev/null || break; sleep 0.05; done
            kill -KILL "$WSSED_PID" 2>/dev/null || true
            wait "$WSSED_PID" 2>/dev/null || true
            WSSED_PID=""
            ;;
        nchan)
            scripts/nchan.sh stop "$NCHAN_PORT"
            NCHAN_UP=""
            ;;
    esac
}

# One loadgen run: its JSON line goes to the results (an error line when it fails).
lg() {
    local server=$1 port=$2
    shift 2
    local line
    line=$(timeout 400 taskset -c "$LOAD_CORE" "$LOADGEN" --target "$server" --url "http://127.0.0.1:$port" \
        --server-pid "$SERVER_PIDS" "$@" 2>>"bench-results/$STAMP.loadgen.log") || true
    if [ -z "$line" ]; then
        line=$(printf '{"target":"%s","args":"%s","error":"loadgen printed nothing"}' "$server" "$*")
    fi
    echo "$line" >> "$OUT"
    echo "$line" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d.pop("cdf_us",None); print(json.dumps(d)[:400])'
}

for server in $SERVERS; do
    port=$WSSED_PORT
    [ "$server" = nchan ] && port=$NCHAN_PORT
    echo "== $server" >&2
    # Each idle measurement starts from a fresh server, so "just after start" means that.
    for n in 1000 10000; do
        start_server "$server"
        lg "$server" "$port" --scenario idle --devices "$n" --max-secs 120
        stop_server "$server"
    done
    start_server "$server"
    lg "$server" "$port" --scenario push --devices 100 --connections 32 --pushes 200000 --max-secs 60
    lg "$server" "$port" --scenario push --devices 100 --connections 32 --rate 1000 --pushes 10000 --max-secs 30
    lg "$server" "$port" --scenario batch --devices 100 --connections 8 --batch-size 100 --batches 1000 --max-secs 60
    lg "$server" "$port" --scenario send --devices 100 --connections 1 --requests 10000 --max-secs 30
    lg "$server" "$port" --scenario send --devices 100 --connections 32 --requests 50000 --max-secs 30
    lg "$server" "$port" --scenario connect --devices 2000 --concurrency 64 --max-secs 60
    stop_server "$server"
done

# Other work on the machine skews every figure: the load average says how much there was.
printf '{"scenario":"machine_end","loadavg_end":["%s","%s","%s"]}\n' $(cut -d' ' -f1-3 /proc/loadavg) >> "$OUT"

scripts/plot_cdf.py "$OUT" "bench-results/$STAMP.png" || echo "bench.sh: no plot" >&2
scripts/bench_report.py "$OUT" | tee "bench-results/$STAMP.md"
echo "bench.sh: $OUT ($((SECONDS - T_START)) s)" >&2
