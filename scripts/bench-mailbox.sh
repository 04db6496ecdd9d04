#!/usr/bin/env bash
# The offline mailbox's cost (docs/protocol.md §20), on the release build, 127.0.0.1 only:
#
#   scripts/bench-mailbox.sh
#
# 1. Live pushes with the mailbox off and on: loadgen's unpaced push scenario (100 devices, 32
#    upstream connections, 100,000 pushes) and the paced one (1000/s), ROUNDS alternating rounds
#    of each, a fresh server per run, server on core 0 and loadgen on core 1 (as scripts/bench.sh).
#    The mailbox must cost the live path nothing when off, and little when on.
# 2. Memory per kept message: a fresh server with the mailbox on, DEVICES user ids that are away,
#    PER_DEVICE pushes of a ~1 KiB `data` each; VmRSS before and after, and what the budget
#    charged; then every device connects and must receive exactly its messages, in order.
#
# Writes bench-results/mailbox-<date>.jsonl and a markdown summary beside it (.md).
# Environment: WSSED_PORT (18085), ROUNDS (3), DEVICES (1000), PER_DEVICE (16); BEFORE_BIN, a
# wssed built from the commit before the mailbox, adds it to the rounds as a third column, so
# "off" is compared with "before" by the same tool in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

WSSED_PORT=${WSSED_PORT:-18085}
ROUNDS=${ROUNDS:-3}
DEVICES=${DEVICES:-1000}
PER_DEVICE=${PER_DEVICE:-16}
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_cores bench-mailbox

cargo build --release -q --bin wssed
cargo build --release -q -p loadgen
WSSED=target/release/wssed
LOADGEN=target/release/loadgen

if (exec 3<>"/dev/tcp/127.0.0.1/$WSSED_PORT") 2>/dev/null; then
    echo "bench-mailbox: something already listens on 127.0.0.1:$WSSED_PORT (set WSSED_PORT)" >&2
    exit 1
fi

mkdir -p bench-results
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=bench-results/mailbox-$STAMP.jsonl
LOG=bench-results/mailbox-$STAMP.log
: > "$OUT"

python3 - "$OUT" <<'PY'
import json, os, platform, subprocess, sys, datetime
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml"],
                       capture_output=True, text=True).stdout.strip()
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"scenario": "machine", "nproc": os.cpu_count(), "cpu": cpu,
        "kernel": platform.release(), "date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit + ("+dirty" if dirty else ""),
        "loadavg_start": open("/proc/loadavg").read().split()[:3]}) + "\n")
PY

PID=""
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

start() {
    local bin=$WSSED
    if [ "${1:-}" = --before ]; then bin=$BEFORE_BIN; shift; fi
    taskset -c "$SERVER_CORE" "$bin" --listen "127.0.0.1:$WSSED_PORT" --max-connections 10240 \
        --log-level warn "$@" 2>>"$LOG" &
    PID=$!
    wait_url "http://127.0.0.1:$WSSED_PORT/health" bench-mailbox
}

stop() {
    stop_pid "$PID"
    PID=""
}

lg() {
    local label=$1 la line
    shift
    read -r la _ < /proc/loadavg
    line=$(timeout 400 taskset -c "$LOAD_CORE" "$LOADGEN" --target wssed \
        --url "http://127.0.0.1:$WSSED_PORT" --server-pid "$PID" --label "$label" "$@" 2>>"$LOG") || true
    [ -n "$line" ] || line=$(printf '{"target":"wssed","label":"%s","error":"loadgen printed nothing"}' "$label")
    echo "$line" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["loadavg_1min"]=float(sys.argv[1]); d.pop("cdf_us",None); print(json.dumps(d))' "$la" >> "$OUT"
    tail -n1 "$OUT" | cut -c1-240
}

for args in "--scenario push --devices 100 --connections 32 --pushes 100000 --max-secs 60" \
    "--scenario push --devices 100 --connections 32 --rate 1000 --pushes 5000 --max-secs 30"; do
    for round in $(seq 1 "$ROUNDS"); do
        for mode in ${BEFORE_BIN:+before} off on; do
            case $mode in
                on) start --mailbox-messages 64 ;;
                off) start ;;
                before) start --before ;;
            esac
            # shellcheck disable=SC2086 # the scenario's flags are meant to split
            lg "mailbox $mode" $args
            stop
        done
    done
done

# Memory per kept message, and every kept message delivered in order.
start --mailbox-messages "$PER_DEVICE" --mailbox-bytes 1048576 --memory-budget-bytes 1073741824
python3 - "$OUT" "$WSSED_PORT" "$PID" "$DEVICES" "$PER_DEVICE" <<'PY'
import base64, http.client, json, os, socket, struct, sys, time
out, port, pid, devices, per = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
deadline = time.monotonic() + 600

def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def metrics(c):
    c.request("GET", "/metrics")
    return json.loads(c.getresponse().read())

c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
before = rss_kib()
pad = "k" * 900
for n in range(per):
    for d in range(devices):
        if time.monotonic() > deadline:
            sys.exit("bench-mailbox: deadline passed")
        body = json.dumps({"user_id": f"away-{d}", "data": {"n": n, "pad": pad}}, separators=(",", ":"))
        c.request("POST", "/sse/push", body, {"Content-Type": "application/json"})
        r = json.loads(c.getresponse().read())
        if r.get("queued") is not True:
            sys.exit(f"bench-mailbox: push not kept: {r}")
time.sleep(1)
after = rss_kib()
m = metrics(c)
held, held_bytes, charged = m["mailbox_held_messages"], m["mailbox_held_bytes"], m["memory_used_bytes"]

# Every device comes back and must get exactly its messages, in order.
def recv_exact(s, n, buf):
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError
        buf += chunk
    return buf

t0 = time.monotonic()
for d in range(devices):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws?user_id=away-{d} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf = recv_exact(s, len(buf) + 1, buf)
    buf = buf.split(b"\r\n\r\n", 1)[1]
    for n in range(per):
        buf = recv_exact(s, 2, buf)
        ln, off = buf[1] & 0x7F, 2
        if ln == 126:
            buf = recv_exact(s, 4, buf); ln, off = struct.unpack(">H", buf[2:4])[0], 4
        buf = recv_exact(s, off + ln, buf)
        frame = json.loads(buf[off:off + ln]); buf = buf[off + ln:]
        if frame.get("n") != n:
            sys.exit(f"bench-mailbox: away-{d} got {frame.get('n')} where {n} was due")
    s.close()
drain_secs = time.monotonic() - t0
m = metrics(c)
with open(out, "a") as f:
    f.write(json.dumps({"scenario": "mailbox_memory", "devices": devices, "per_device": per,
        "held_messages": held, "held_frame_bytes": held_bytes, "frame_bytes_each": held_bytes // held,
        "rss_kib_before": before, "rss_kib_after": after,
        "rss_bytes_per_message": (after - before) * 1024 // held, "charged_bytes_per_message": charged // held,
        "delivered_in_order": m["mailbox_delivered"], "held_after_return": m["mailbox_held_messages"],
        "return_secs": round(drain_secs, 2), "loadavg_1min": float(open("/proc/loadavg").read().split()[0])}) + "\n")
print(open(out).read().splitlines()[-1])
PY
stop

read -r la1 la5 la15 _ < /proc/loadavg
printf '{"scenario":"machine_end","loadavg_end":["%s","%s","%s"]}\n' "$la1" "$la5" "$la15" >> "$OUT"

python3 - "$OUT" <<'PY' | tee "${OUT%.jsonl}.md"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
m = rows[0]; end = rows[-1]
print(f"Run `{sys.argv[1]}`: {m['date']}, commit {m['commit']}, {m['nproc']} cores, {m['cpu']}, kernel {m['kernel']}; "
      f"load average at start {' '.join(m['loadavg_start'])}, at end {' '.join(end.get('loadavg_end', ['?']))}.")
print()
modes = [m for m in ("before", "off", "on") if any(r.get("label") == f"mailbox {m}" for r in rows)]
print("| figure | " + " | ".join(f"mailbox {m}" if m != "before" else "before the mailbox" for m in modes)
      + " | off/before |" * ("before" in modes) + " on/off |")
print("| --- |" + " ---: |" * (len(modes) + 1 + ("before" in modes)))
def med(v):
    v = sorted(v); n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
def fig(label, rate, path):
    cells, meds = [], {}
    for mode in modes:
        vals = []
        for r in rows:
            if r.get("label") != f"mailbox {mode}" or r.get("rate") != rate or r.get("error"):
                continue
            v = r
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            if isinstance(v, (int, float)):
                vals.append(v)
        if not vals:
            cells.append("not measured"); meds[mode] = None; continue
        md = med(vals); meds[mode] = md
        f = (lambda x: f"{x:,.1f}" if abs(x) < 1000 else f"{x:,.0f}")
        cells.append(f"{f(md)} ({f(min(vals))}–{f(max(vals))})")
    r = lambda a, b: f"{meds[a] / meds[b]:.3f}x" if meds.get(a) and meds.get(b) else "-"
    ratios = ([r("off", "before")] if "before" in modes else []) + [r("on", "off")]
    print(f"| {label} | " + " | ".join(cells + ratios) + " |")
fig("push throughput, unpaced (pushes/s)", None, ["pushes_per_s"])
fig("server CPU per delivered push, unpaced (µs)", None, ["server_cpu_us_per_push"])
fig("server CPU per push, schedstat (µs)", None, ["server_cpu_us_per_push_schedstat"])
fig("of which user space (µs)", None, ["server_user_cpu_us_per_push"])
fig("push→device latency unpaced p50 (µs)", None, ["latency_us", "p50"])
fig("push→device latency at 1000/s p50 (µs)", 1000, ["latency_us", "p50"])
fig("push→device latency at 1000/s p99 (µs)", 1000, ["latency_us", "p99"])
fig("server CPU per push at 1000/s (µs)", 1000, ["server_cpu_us_per_push"])
fig("load average (1 min) at each unpaced round", None, ["loadavg_1min"])
for r in rows:
    if r.get("scenario") == "mailbox_memory":
        print()
        print(f"Kept messages: {r['held_messages']:,} messages for {r['devices']:,} away devices "
              f"({r['frame_bytes_each']:,}-byte frames): resident memory grew {r['rss_kib_after'] - r['rss_kib_before']:,} KiB, "
              f"**{r['rss_bytes_per_message']:,} bytes per kept message** (the budget charged {r['charged_bytes_per_message']:,} each); "
              f"on return {r['delivered_in_order']:,} delivered in order in {r['return_secs']} s, {r['held_after_return']} left.")
PY
[ -s "$LOG" ] || rm -f "$LOG"
echo "bench-mailbox: $OUT" >&2
