#!/usr/bin/env bash
# Instructions per push, counted by callgrind, for one commit of wssed.
#
#   scripts/profile-push.sh COMMIT          e.g. scripts/profile-push.sh 76e6716
#
# Builds COMMIT's release profile in a checkout of its own (a detached git worktree at
# ../wt-prof-<short>, or $PROFILE_CHECKOUT; the current worktree when it is clean at COMMIT),
# with symbols and line tables kept (strip off, debug = line-tables-only: the same optimised
# code, names for callgrind), runs `wssed` under `valgrind --tool=callgrind` on 127.0.0.1, and
# drives it with scripts/profile_push_driver.py: one device, one keep-alive upstream, WARMUP
# warm-up pushes, then the counters are zeroed, PUSHES pushes are made (each answered `success`
# and its frame seen by the device) and the counters dumped. So the dump holds the push phase
# only: no start-up, no handshake, no warm-up.
#
# RUNS runs (default 3); each prints one JSON line, all go to
# bench-results/callgrind-<short>.jsonl, and the last run's summary goes to
# bench-results/callgrind-<short>/top.md (top functions per push, inclusive and self, from
# scripts/callgrind_top.py). The raw dumps and callgrind_annotate's reports stay out of the
# repository, in target/profile/callgrind-<short>/ (inclusive.txt, exclusive.txt,
# and which functions make the system calls: --collect-systime=yes counts them as sysCount (the
# per-push total is exact; the per-function rows also hold the warm-up, see syscalls.txt);
# callgrind counts user-space instructions only, the kernel's work is not in Ir).
#
# Environment: PUSHES (2000), WARMUP (200), RUNS (3), PORT (18090), PROFILE_CHECKOUT, WSSED_ARGS
# (more daemon flags, e.g. "--status-page true" or "--mailbox-messages 64"; recorded as "args" in
# each JSON line), DRIVER_ARGS (e.g. --away: pushes to a device that is not connected, kept by the
# offline mailbox) and LABEL (names the variant: the results go to callgrind-<short>-<LABEL>.jsonl
# and callgrind-<short>-<LABEL>/).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 COMMIT" >&2; exit 2; }
cd "$(dirname "$0")/.."
root=$(pwd)
PUSHES=${PUSHES:-2000}
WARMUP=${WARMUP:-200}
RUNS=${RUNS:-3}
PORT=${PORT:-18090}
WSSED_ARGS=${WSSED_ARGS:-}

sha=$(git rev-parse --verify "$1^{commit}")
short=$(git rev-parse --short "$sha")

if ! command -v valgrind >/dev/null 2>&1; then
    echo "profile-push: installing valgrind" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends valgrind >&2
fi

if [ "$(git rev-parse HEAD)" = "$sha" ] && [ -z "$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock)" ]; then
    checkout=$root
else
    checkout=${PROFILE_CHECKOUT:-$(dirname "$root")/wt-prof-$short}
    if [ ! -e "$checkout" ]; then
        git worktree add --detach "$checkout" "$sha" >&2
    fi
    [ "$(git -C "$checkout" rev-parse HEAD)" = "$sha" ] || {
        echo "profile-push: $checkout is not at $sha" >&2
        exit 1
    }
fi

echo "profile-push: building $short in $checkout (release, symbols kept)" >&2
(cd "$checkout" && CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release -q --bin wssed --target-dir "$checkout/target/profile")
bin=$checkout/target/profile/release/wssed

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "profile-push: something already listens on 127.0.0.1:$PORT (set PORT)" >&2
    exit 1
fi

DRIVER_ARGS=${DRIVER_ARGS:-}
LABEL=${LABEL:-}
name=callgrind-$short${LABEL:+-$LABEL}
out=$root/bench-results/$name
raw=$root/target/profile/$name
mkdir -p "$out"
jsonl=$root/bench-results/$name.jsonl
work=$(mktemp -d)
VG_PID=""
cleanup() {
    if [ -n "$VG_PID" ] && kill -0 "$VG_PID" 2>/dev/null; then kill -KILL "$VG_PID" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Totals of a callgrind dump ("totals:" line; "summary:" in older formats): events are
# Ir sysCount sysTime, so $2 is instructions and $3 system calls.
ir_of() { awk '/^(totals|summary):/ { print $2; exit }' "$1"; }
sys_of() { awk '/^(totals|summary):/ { print $3 + 0; exit }' "$1"; }

for run in $(seq 1 "$RUNS"); do
    rm -f "$work"/callgrind.out*
    read -r la1 _ < /proc/loadavg
    valgrind --tool=callgrind --collect-systime=yes --callgrind-out-file="$work/callgrind.out" \
        "$bin" --listen "127.0.0.1:$PORT" --log-level warn $WSSED_ARGS 2>"$work/valgrind.log" &
    VG_PID=$!
    up=0
    for _ in $(seq 1 600); do
        if curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/health"; then up=1; break; fi
        kill -0 "$VG_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ "$up" = 1 ] || { echo "profile-push: wssed under valgrind did not come up" >&2; cat "$work/valgrind.log" >&2; exit 1; }

    drv=$(timeout 900 python3 scripts/profile_push_driver.py --port "$PORT" --pid "$VG_PID" \
        --warmup "$WARMUP" --pushes "$PUSHES" $DRIVER_ARGS)

    kill -TERM "$VG_PID" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$VG_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$VG_PID" 2>/dev/null || true
    wait "$VG_PID" 2>/dev/null || true
    VG_PID=""

    # Dumps are numbered in order: .1 the push phase, .2 the idle pause (the exit dump has no number).
    push_file=$work/callgrind.out.1
    idle_file=$work/callgrind.out.2
    ir_push=$(ir_of "$push_file")
    ir_idle=$(ir_of "$idle_file")
    sys_push=$(sys_of "$push_file")
    python3 - "$sha" "$short" "$run" "$PUSHES" "$ir_push" "$ir_idle" "$la1" "$drv" "$sys_push" "$LABEL" "$WSSED_ARGS $DRIVER_ARGS" >> "$jsonl" <<'PY'
import json, sys
sha, short, run, pushes, ir_push, ir_idle, la, drv, sys_push, label, args = sys.argv[1:]
d = json.loads(drv)
args = args.strip()
print(json.dumps({"scenario": "callgrind_push", "commit": short + (f" ({label})" if label else ""),
    "commit_full": sha, "run": int(run),
    **({"args": args} if args else {}),
    "pushes": int(pushes), "ir_push_phase": int(ir_push), "ir_per_push": round(int(ir_push) / int(pushes)),
    "syscalls_per_push": round(int(sys_push) / int(pushes), 2),
    "ir_idle_same_duration": int(ir_idle), "push_phase_secs": d["push_phase_secs"],
    "frames_received": d["frames_received"], "loadavg_1min": float(la)}))
PY
    tail -n1 "$jsonl"

    if [ "$run" = "$RUNS" ]; then
        mkdir -p "$raw"
        cp "$push_file" "$raw/callgrind.out.push"
        cp "$idle_file" "$raw/callgrind.out.idle"
        # Whole reports to a file first: `| head` under pipefail would fail on SIGPIPE.
        callgrind_annotate --inclusive=yes --threshold=99 "$push_file" > "$work/a.txt" 2>/dev/null
        head -n 90 "$work/a.txt" > "$raw/inclusive.txt"
        callgrind_annotate --inclusive=no --threshold=99 "$push_file" > "$work/a.txt" 2>/dev/null
        head -n 90 "$work/a.txt" > "$raw/exclusive.txt"
        callgrind_annotate --inclusive=no --sort=sysCount --show=sysCount --threshold=100 "$push_file" \
            > "$work/a.txt" 2>/dev/null
        {
            echo "# callgrind 3.19's --zero resets the sysCount total but not the per-function counts:"
            echo "# the rows below cover the warm-up too, so divide them by WARMUP + PUSHES = $((WARMUP + PUSHES))."
            echo "# Under valgrind clock_gettime is a real system call; natively it is the vDSO (no kernel entry)."
            grep -v '^ *\. ' "$work/a.txt" || true
        } > "$raw/syscalls.txt"
        python3 scripts/callgrind_top.py "$push_file" "$PUSHES" 25 > "$out/top.md"
    fi
done
echo "profile-push: $jsonl; summary in $out/top.md; raw profile in $raw" >&2
