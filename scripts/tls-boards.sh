#!/usr/bin/env bash
# The `tls` feature on each board (issue 17): builds the board's default binary and its
# `--features tls` binary (scripts/build-board.sh), records both stripped sizes against the
# 1.5 MiB binary target, then runs tests/tls.rs against the TLS binary: under qemu-user with the
# board's CPU model for ARM (board/BOARD/env WSSED_QEMU_CPU; the Pi Zero's arm1176 traps ARMv7
# instructions), natively for x86_64. Results go to bench-results/tls-boards-<UTC>.jsonl and .md
# with the machine, commit and load average. README's dependency table (rustls row) and
# board/README.md ("TLS") read them.
#
#   scripts/tls-boards.sh [BOARD...]      default: the ARM boards; x86_64 runs natively
#
# The suite runs with the board's max_connections/max_pending_sends (scripts/board-limits.sh),
# as cross-test.sh runs the e2e suite; tests/tls.rs needs no fault hooks, so nothing is skipped.
# Each suite is bounded (scripts/bounded-suite.py: 900 s in all, one hung test ends it); the
# exit status is 1 when one failed, after every board is recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
boards=("$@")
[ ${#boards[@]} -gt 0 ] || boards=(rpi4-aarch64 rpi3-armv7 rpi-zero-armv6)
# The stripped-binary target every board shares (README "Performance").
target_bytes=$((3 * 1024 * 1024 / 2))
stamp=$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p bench-results
out="bench-results/tls-boards-$stamp.jsonl"
md="bench-results/tls-boards-$stamp.md"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

scripts/bench_machine.py "$out" "rustc=$(rustc -V)" "rustc_web=$(/usr/bin/rustc -V)" \
    "qemu=$(qemu-arm-static --version | head -n 1)"
host=$(rustc -vV | sed -n 's/^host: //p')
rows=()
failed=0
# 1234567 -> 1,234,567 (printf's %'d needs a locale that groups digits).
commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
for board in "${boards[@]}"; do
    echo "== $board: default and --features tls"
    plain=$(scripts/build-board.sh "$board" | tail -n 1)
    tls=$(scripts/build-board.sh "$board" --features tls | tail -n 1)
    target=$(sed -n 's/^WSSED_TARGET=//p' "board/$board/env")
    cpu=$(sed -n 's/^WSSED_QEMU_CPU=//p' "board/$board/env")
    plain_bytes=$(stat -L -c %s "$plain")
    tls_bytes=$(stat -L -c %s "$tls")
    if [ "$target" = "$host" ]; then
        run=$root/$tls
        under=native
    else
        # shellcheck source=scripts/cross-env.sh
        . scripts/cross-env.sh
        cross_setup "$target" 2>/dev/null
        cross_is_static "$tls" || {
            echo "tls-boards: $tls is not static" >&2
            exit 1
        }
        run=$tmp/wssed-$board
        cross_qemu_wrapper "$root/$tls" "$run" "$cpu"
        under="$CROSS_QEMU -cpu $cpu"
    fi
    # The feature is really in: its settings are on the command line.
    help=$(timeout 60 "$run" --help 2>&1 || true)
    grep -q -- --tls-listen <<<"$help" || {
        echo "tls-boards: $tls has no --tls-listen: built without tls?" >&2
        exit 1
    }
    echo "== $board: tests/tls.rs against $tls ($under)"
    mapfile -t limits < <(scripts/board-limits.sh "$board")
    log=$tmp/tls-$board.log
    t0=$(date +%s)
    status=passed
    env "${limits[@]}" WSSED_BIN="$run" WSSED_TIMEOUT_SCALE=4 \
        scripts/bounded-suite.py --total 900 -- cargo test --locked --test tls -- --nocapture >"$log" 2>&1 ||
        status=failed
    secs=$(($(date +%s) - t0))
    result=$(grep -E '^test result:' "$log" | tail -n 1 || true)
    if [ "$status" != passed ]; then
        failed=1
        tail -n 40 "$log" >&2
    fi
    counts=$(sed -E 's/.*\. ([0-9]+ passed; [0-9]+ failed).*/\1/' <<<"$result")
    echo "$board: $status ($result) in $secs s"
    fits=$([ "$tls_bytes" -le "$target_bytes" ] && echo true || echo false)
    printf '{"scenario":"tls-board","board":"%s","target":"%s","default_bytes":%d,"tls_bytes":%d,"tls_cost_bytes":%d,"target_bytes":%d,"tls_fits_target":%s,"run_under":"%s","board_limits":"%s","tls_suite":"%s","tls_suite_result":"%s","tls_suite_secs":%d}\n' \
        "$board" "$target" "$plain_bytes" "$tls_bytes" $((tls_bytes - plain_bytes)) "$target_bytes" \
        "$fits" "$under" "${limits[*]}" "$status" "$result" "$secs" | tee -a "$out"
    rows+=("| \`$board\` | \`$target\` | $(commas "$plain_bytes") | $(commas "$tls_bytes") | +$(commas $((tls_bytes - plain_bytes))) | $([ "$fits" = true ] && echo yes || echo "no: $(commas $((tls_bytes - target_bytes))) over") | $under | $status: ${counts:-no result line} |")
done

{
    echo "# The tls feature per board ($stamp)"
    echo
    echo "Run: \`scripts/tls-boards.sh ${boards[*]}\`. Stripped static release binaries"
    echo "(\`scripts/build-board.sh BOARD\` and \`--features tls\`); the 1.5 MiB target is $(commas "$target_bytes") bytes."
    echo "tests/tls.rs ran against each TLS binary with the board's limits and \`WSSED_TIMEOUT_SCALE=4\`."
    echo
    echo "| board | target | default | with tls | tls costs | fits 1.5 MiB | run under | tests/tls.rs |"
    echo "| --- | --- | ---: | ---: | ---: | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    echo
    python3 - "$out" <<'PY'
import json, sys
m = json.loads(open(sys.argv[1], encoding="utf-8").readline())
end = " ".join(open("/proc/loadavg", encoding="utf-8").read().split()[:3])
print(f"Commit {m['commit']}, {m['date']}; {m['nproc']} cores ({m['cpu']}), {m['mem']}, "
      f"kernel {m['kernel']}; {m['rustc']}, {m['rustc_web']}; {m['qemu']}; "
      f"load average {' '.join(m['loadavg_start'])} at the start, {end} at the end.")
PY
} >"$md"
cat "$md"
exit "$failed"
