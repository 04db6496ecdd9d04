#!/usr/bin/env bash
# Shows that a hung binary fails a board's e2e step within a minute (scripts/bounded-suite.py),
# so a hang under qemu is a short red step, not a CI run that waits for its time limit:
#   1. the runner's own rules, on stand-in commands: a FAILED line, libtest's 60 s notice and
#      the total bound each end the run at once, and kill what the command started;
#   2. the real suite against a daemon that freezes (SIGSTOP) one second after it starts,
#      with the harness bounds stretched as under qemu (WSSED_TIMEOUT_SCALE=4): the run must
#      fail, with the runner's one line, in under 60 s.
#
#   scripts/check-hang-bounds.sh [BINARY]    default: the x86_64 board's release build
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${1:-$root/target/x86_64-unknown-linux-gnu/release/wssed}
[ -x "$bin" ] || {
    echo "hang-bounds: no $bin (scripts/build-board.sh x86_64)" >&2
    exit 1
}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail=0

# expect NAME MAX_SECONDS COMMAND...: the runner must exit 1 within MAX_SECONDS, saying why.
expect() {
    local name=$1 max=$2 t0 status=0 took
    shift 2
    t0=$(date +%s%N)
    "$@" >"$dir/out" 2>&1 || status=$?
    took=$((($(date +%s%N) - t0) / 1000000))
    if [ "$status" = 1 ] && grep -q '^suite: FAIL' "$dir/out" && [ "$took" -lt $((max * 1000)) ]; then
        echo "hang-bounds: $name: stopped after ${took} ms: $(grep '^suite: FAIL' "$dir/out")"
    else
        echo "hang-bounds: FAIL: $name: exit $status after ${took} ms; output:"
        tail -n 20 "$dir/out"
        fail=1
    fi
}

# 1. The rules. Each stand-in leaves a sleeper that only the runner's kill ends.
expect "a FAILED line" 5 scripts/bounded-suite.py --total 30 -- \
    sh -c "echo 'test a ... ok'; echo 'test b ... FAILED'; sleep 30 & sleep 30"
expect "libtest's 60 s notice" 5 scripts/bounded-suite.py --total 30 -- \
    sh -c "echo 'test c has been running for over 60 seconds'; sleep 30"
expect "the total bound" 5 scripts/bounded-suite.py --total 2 -- sleep 30
pass_status=0
scripts/bounded-suite.py --total 10 -- sh -c "echo 'test d ... ok'" >"$dir/out" 2>&1 || pass_status=$?
if [ "$pass_status" != 0 ]; then
    echo "hang-bounds: FAIL: a passing command exited $pass_status through the runner"
    fail=1
fi

# 2. A daemon that hangs: it answers for a second, then never again. The stopper only stops
# the process it started as (exec keeps the PID), after checking that PID is still that binary.
cat >"$dir/wssed-hangs" <<SH
#!/bin/sh
( sleep 1; [ "\$(readlink /proc/\$\$/exe)" = "$(readlink -f "$bin")" ] && kill -STOP \$\$ ) &
exec "$bin" "\$@"
SH
chmod +x "$dir/wssed-hangs"
cargo build --locked --tests -q 2>/dev/null || cargo build --locked --tests
# Not `cargo test -q`: libtest's terse format has no `test NAME ... FAILED` lines to stop at.
expect "the e2e suite against a daemon that freezes" 60 \
    env WSSED_BIN="$dir/wssed-hangs" WSSED_TIMEOUT_SCALE=4 \
    scripts/bounded-suite.py --total 300 -- cargo test --locked --test e2e -- --nocapture

[ "$fail" = 0 ] && echo "hang-bounds: a hung binary fails the step within a minute" || echo "hang-bounds: FAILED"
exit "$fail"
