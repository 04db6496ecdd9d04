#!/usr/bin/env bash
# Does the status page cost the push path anything? Server CPU per delivered push (loadgen's
# unpaced push scenario: 100 devices, 32 upstream connections) for wssed set up three ways,
# taking turns for ROUNDS rounds so that background load hits them alike:
#
#   base  the commit BASE (default: where this branch left main), built apart: the push path
#         before the browser work
#   off   this tree, defaults (status_page = false, no CORS)
#   on    this tree with --status-page true --cors-allowed-origins http://127.0.0.1:9, while a
#         poller does what an open status page does: GET /health and /metrics every 2 s
#
#   scripts/bench-status-page.sh            ROUNDS=5 PUSHES=100000 (BASE: a commit)
#   BASE= scripts/bench-status-page.sh      without the base build (off and on only)
#
# All three servers run at once on core 0 (an idle one costs nothing), the load tool on core 1.
# Writes bench-results/status-page-<UTC date>.jsonl (with commit, machine and load averages) and
# prints a markdown table. Every loadgen run is bounded (--max-secs and timeout); the servers
# and the poller are ended by their PIDs.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE-$(git merge-base main HEAD)}
ROUNDS=${ROUNDS:-5}
PUSHES=${PUSHES:-100000}
BASE_PORT=${BASE_PORT:-18200}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -q --locked
cargo build --release -q --locked -p loadgen
LOADGEN=target/release/loadgen
mkdir -p bench-results target/bench-status-page
cp target/release/wssed target/bench-status-page/wssed-this
declare -A BIN=([off]=target/bench-status-page/wssed-this [on]=target/bench-status-page/wssed-this)
SETUPS=(off on)
if [ -n "$BASE" ]; then
    # The base commit's own tree, built into a target dir of its own (its first build takes a
    # few minutes); git archive leaves the repository's worktrees alone.
    src=target/bench-status-page/base-src
    rm -rf "$src" && mkdir -p "$src"
    git archive "$BASE" | tar -x -C "$src"
    CARGO_TARGET_DIR="$PWD/target/bench-status-page/base-target" \
        cargo build --release -q --locked --manifest-path "$src/Cargo.toml" --bin wssed
    cp target/bench-status-page/base-target/release/wssed target/bench-status-page/wssed-base
    BIN[base]=target/bench-status-page/wssed-base
    SETUPS=(base off on)
fi

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=bench-results/status-page-$STAMP.jsonl
: > "$OUT"
python3 - "$OUT" "${BASE:-none}" <<'PY'
import datetime, json, os, platform, subprocess, sys
run = lambda *a: subprocess.run(a, capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
dirty = run("git", "status", "--porcelain", "--untracked-files=no")
base = sys.argv[2]
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"scenario": "machine", "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": run("git", "rev-parse", "--short", "HEAD") + ("+dirty" if dirty else ""),
        "base": base if base == "none" else run("git", "rev-parse", "--short", base),
        "loadavg_start": open("/proc/loadavg").read().split()[:3]}) + "\n")
PY

declare -A PID PORT
POLLER=""
cleanup() {
    for p in "${PID[@]}" $POLLER; do
        if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
    done
}
trap cleanup EXIT

i=0
for s in "${SETUPS[@]}"; do
    PORT[$s]=$((BASE_PORT + i))
    i=$((i + 1))
    if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$s]}") 2>/dev/null; then
        echo "bench-status-page: 127.0.0.1:${PORT[$s]} is taken (set BASE_PORT)" >&2
        exit 1
    fi
    extra=()
    [ "$s" = on ] && extra=(--status-page true --cors-allowed-origins http://127.0.0.1:9)
    taskset -c 0 "${BIN[$s]}" --listen "127.0.0.1:${PORT[$s]}" --max-connections 1024 \
        --log-level warn "${extra[@]}" 2>>"bench-results/status-page-$STAMP.wssed.log" &
    PID[$s]=$!
done
for s in "${SETUPS[@]}"; do
    up=0
    for _ in $(seq 1 200); do
        if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:${PORT[$s]}/health"; then up=1; break; fi
        sleep 0.05
    done
    [ "$up" = 1 ] || { echo "bench-status-page: $s did not answer" >&2; exit 1; }
done
curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:${PORT[on]}/" ||
    { echo "bench-status-page: the status page is not served" >&2; exit 1; }
# What an open status page asks for; bounded by the run (killed by its PID at the end).
(
    end=$((SECONDS + 3600))
    while [ $SECONDS -lt $end ]; do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:${PORT[on]}/health" || true
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:${PORT[on]}/metrics" || true
        sleep 2
    done
) &
POLLER=$!

for round in $(seq 1 "$ROUNDS"); do
    for s in "${SETUPS[@]}"; do
        read -r la _ < /proc/loadavg
        echo "== round $round: $s" >&2
        line=$(timeout 200 taskset -c 1 "$LOADGEN" --target wssed --url "http://127.0.0.1:${PORT[$s]}" \
            --server-pid "${PID[$s]}" --scenario push --devices 100 --connections 32 \
            --pushes "$PUSHES" --max-secs 90 --label "$s round $round" \
            2>>"bench-results/status-page-$STAMP.loadgen.log") || true
        [ -n "$line" ] || line='{"error":"loadgen printed nothing"}'
        echo "$line" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d.pop("cdf_us",None); d["setup"]=sys.argv[1]; d["loadavg_1min"]=float(sys.argv[2]); print(json.dumps(d))' "$s" "$la" >> "$OUT"
    done
done
read -r la1 la5 la15 _ < /proc/loadavg
printf '{"scenario":"machine_end","loadavg_end":["%s","%s","%s"]}\n' "$la1" "$la5" "$la15" >> "$OUT"

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
machine = rows[0]
runs = [r for r in rows if "setup" in r]
print(f"{sys.argv[1]}: commit {machine['commit']}, base {machine['base']}, {machine['nproc']} cores, "
      f"load average {machine['loadavg_start'][0]} at the start, {rows[-1]['loadavg_end'][0]} at the end\n")
print("| setup | server CPU per push, µs: median (min–max) | user space, µs | pushes/s | runs | load average at the starts |")
print("| --- | --- | --- | --- | --- | --- |")
for setup in dict.fromkeys(r["setup"] for r in runs):
    rs = [r for r in runs if r["setup"] == setup and "server_cpu_us_per_push" in r]
    bad = [r for r in runs if r["setup"] == setup and ("server_cpu_us_per_push" not in r or r.get("missing"))]
    cpu = [r["server_cpu_us_per_push"] for r in rs]
    user = [r["server_user_cpu_us_per_push"] for r in rs]
    rate = [r["pushes_per_s"] for r in rs]
    la = [r["loadavg_1min"] for r in rs]
    if not rs:
        print(f"| {setup} | failed | | | {len(bad)} failed | |")
        continue
    print(f"| {setup} | {statistics.median(cpu):.1f} ({min(cpu):.1f}–{max(cpu):.1f}) | {statistics.median(user):.1f} "
          f"| {statistics.median(rate):,.0f} | {len(rs)}{f' ({len(bad)} failed)' if bad else ''} | {min(la):.1f}–{max(la):.1f} |")
PY
