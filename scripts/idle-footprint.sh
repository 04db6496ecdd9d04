#!/usr/bin/env bash
# Where the idle RSS of a freshly started wssed lives: /proc/PID/smaps summed per mapping
# (the binary, each shared library, heap and other anonymous memory, stack), Rss and Pss
# (Pss divides a shared page among the processes mapping it), one JSON line.
#
#   scripts/idle-footprint.sh [BINARY]     default target/release/wssed (built if missing)
#
# Environment: PORT (18095), RUNS (3: a fresh process each time).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/wssed}
PORT=${PORT:-18095}
RUNS=${RUNS:-3}
[ -x "$BIN" ] || cargo build --release -q
PID=""
cleanup() { if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi; }
trap cleanup EXIT

for _ in $(seq 1 "$RUNS"); do
    "$BIN" --listen "127.0.0.1:$PORT" --log-level warn 2>/dev/null &
    PID=$!
    up=0
    for _ in $(seq 1 200); do
        if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health"; then up=1; break; fi
        sleep 0.05
    done
    [ "$up" = 1 ] || { echo "idle-footprint: no answer on $PORT" >&2; exit 1; }
    # Settle as bench.sh's idle scenario does before reading.
    sleep 1
    python3 - "$PID" "$(readlink -f "$BIN")" <<'PY'
import json, re, sys
pid, binary = sys.argv[1], sys.argv[2]
groups = {}
name = None
for line in open(f"/proc/{pid}/smaps"):
    head = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
    if head:
        path = head.group(1).strip()
        if path == binary:
            name = "binary"
        elif path.startswith("/"):
            name = path.rsplit("/", 1)[-1]
        elif path in ("[heap]", "[stack]"):
            name = path
        elif path.startswith("[v"):
            name = "[vdso/vvar]"
        else:
            name = "anonymous"
        groups.setdefault(name, {"rss_kib": 0, "pss_kib": 0})
        continue
    m = re.match(r"^(Rss|Pss):\s+(\d+) kB", line)
    if m and name:
        groups[name][m.group(1).lower() + "_kib"] += int(m.group(2))
libs = [g for n, g in groups.items() if n.endswith(".so") or ".so." in n]
status = {l.split(":")[0]: l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith(("VmRSS", "RssAnon", "RssFile"))}
print(json.dumps({"scenario": "idle_footprint", "vm_rss_kib": int(status["VmRSS"]),
    "rss_anon_kib": int(status["RssAnon"]), "rss_file_kib": int(status["RssFile"]),
    "pss_total_kib": sum(g["pss_kib"] for g in groups.values()),
    "shared_libs_rss_kib": sum(g["rss_kib"] for g in libs), "shared_libs_pss_kib": sum(g["pss_kib"] for g in libs),
    "by_mapping": dict(sorted(groups.items(), key=lambda kv: -kv[1]["rss_kib"]))}))
PY
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
done
