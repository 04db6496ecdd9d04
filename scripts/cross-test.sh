#!/usr/bin/env bash
# Builds one board's release binary on this x86_64 machine (scripts/build-board.sh: the board's
# env applied; Debian's cross toolchain for ARM, no Docker) and runs it: an ARM one under
# qemu-user with the board's CPU model (WSSED_QEMU_CPU in board/BOARD/env), the host's natively:
#   1. `--version` must report exactly the board's target, link and capacities;
#   2. a start canary: /health within 20 s, else one line and the binary's output;
#   3. the end-to-end suite (tests/e2e) against it, every test bounded (scripts/bounded-suite.py:
#      the first failure or a test over 60 s ends the run).
#
#   scripts/cross-test.sh rpi4-aarch64
#   scripts/cross-test.sh rpi3-armv7 [--unit]
#   scripts/cross-test.sh rpi-zero-armv6
#   scripts/cross-test.sh x86_64              the host's board: native, timeouts unscaled
#
# --unit also builds the library's unit tests for the target and runs them under qemu (slow:
# a debug build of every dependency; worth it for 32-bit ARM, where usize is 32 bits).
#
# Needs root on Debian bookworm (installs rustc-web, cross gcc, qemu-user-static once; see
# scripts/cross-env.sh). The e2e harness runs WSSED_BIN instead of the host build and
# multiplies its timeouts by WSSED_TIMEOUT_SCALE (default here 4 under qemu, 1 native).
set -euo pipefail

unit=0
if [ $# -eq 2 ] && [ "$2" = "--unit" ]; then
    unit=1
elif [ $# -ne 1 ]; then
    echo "usage: $0 BOARD [--unit]   (BOARD: rpi4-aarch64, rpi3-armv7, rpi-zero-armv6, x86_64)" >&2
    exit 2
fi
board=$1
cd "$(dirname "$0")/.."
root=$(pwd)
[ -f "board/$board/env" ] || {
    echo "cross-test: no board/$board/env" >&2
    exit 2
}
target=$(sed -n 's/^WSSED_TARGET=//p' "board/$board/env")
cpu=$(sed -n 's/^WSSED_QEMU_CPU=//p' "board/$board/env")
native=0
[ "$target" = "$(rustc -vV | sed -n 's/^host: //p')" ] && native=1
if [ "$native" = 1 ]; then
    echo "== build $board: $target (host toolchain, $(rustc -V))"
else
    # shellcheck source=scripts/cross-env.sh
    . scripts/cross-env.sh
    cross_setup "$target"
    mode=$([ "$CROSS_BUILD_STD" = 1 ] && echo "std built from rust-web-src" || echo "Debian's prebuilt std")
    echo "== build $board: $target (rustc-web $CROSS_RUST_VERSION, $mode)"
fi
t0=$(date +%s)
bin="$root/$(scripts/build-board.sh "$board" | tail -n 1)"
echo "build: $(($(date +%s) - t0)) s"
if file "$bin" | grep -q 'not stripped'; then
    echo "cross-test: $bin is not stripped (profile.release.strip)" >&2
    exit 1
fi
bytes=$(stat -c %s "$bin")
link=dynamic
file -b "$bin" | grep -Eq 'statically linked|static-pie linked' && link=static
echo "size: $target $bytes bytes ($((bytes / 1024)) KiB, stripped, $link)"

if [ "$native" = 1 ]; then
    wrapper=$bin
    scale=1
    libc_expect=$([ "$link" = static ] && echo none || echo /)
else
    wrapper="$root/target/$target/wssed-qemu"
    cross_qemu_wrapper "$bin" "$wrapper" "$cpu"
    echo "== run under: $(sed -n 's/^exec //p' "$wrapper")"
    # Emulation is slower: every harness bound is stretched.
    scale=4
    libc_expect=$([ "$link" = static ] && echo none || echo "$CROSS_LIBC_ROOT")
fi

if [ "$target" = arm-unknown-linux-gnueabi ]; then
    echo "== the CPU model bites: an ARMv7 instruction must die under -cpu $cpu"
    scripts/armv6-bites.sh "$cpu"
fi

# The board's binary runs with the board's limits (scripts/board-limits.sh), as WSSED_*
# variables, so every daemon the suite starts (`--check-config` runs too) gets them, below any
# flag a test sets itself.
mapfile -t board_settings < <(scripts/board-limits.sh "$board")

echo "== build info: --version against board/$board/env"
scripts/check-build-info.sh "$board" "$wrapper"

echo "== no settings file: the defaults fit the board's tables"
# max_connections and max_pending_sends default to at most the build's table capacities, so a
# board's binary starts bare; a default over them would be refused here, in seconds.
if ! out=$(env $(env | sed -n 's/^\(WSSED_[A-Z_]*\)=.*/-u \1/p') timeout 30 "$wrapper" --check-config 2>&1); then
    echo "cross-test: $board's binary refuses its own defaults (or hung 30 s): ${out##*$'\n'}" >&2
    exit 1
fi

echo "== start canary"
env "${board_settings[@]}" scripts/canary.py --seconds 20 --libc "$libc_expect" "$wrapper"

if [ "$unit" = 1 ] && [ "$native" = 0 ]; then
    echo "== unit tests (lib) for $target under $CROSS_QEMU"
    WSSED_QEMU_CPU=$cpu cross_cargo test --locked --lib
fi

# The suite is built and driven by the host toolchain; only the daemon runs emulated.
echo "== e2e suite against $board ($target$([ "$native" = 1 ] && echo ", native" || echo " under $CROSS_QEMU${cpu:+ -cpu $cpu}")), with ${board_settings[*]}"
# Skipped here, and covered by the README's `cargo test` (the debug build, with fault hooks):
# - tests that stall a device by filling its socket: the daemon's write timeout
#   (pong_timeout_secs) races the slowed-down fill loop, which says nothing about ARM;
# - the watchdog stall and failed-signal tests: they need the fault hooks, which release builds don't carry.
skips=(--skip device_queue_is_full --skip batch_full_queue_fails_that_item_alone
    --skip slow_consumer_gets_503 --skip push_stalled_device_is_dropped
    --skip shutdown_stops_accepting_and_a_second_signal
    --skip a_stalled_event_loop_stops_the_watchdog
    --skip a_failed_signal_install_exits_non_zero)
t0=$(date +%s)
env "${board_settings[@]}" WSSED_BIN="$wrapper" WSSED_TIMEOUT_SCALE="${WSSED_TIMEOUT_SCALE:-$scale}" \
    scripts/bounded-suite.py --total 1200 -- cargo test --locked --test e2e -- --nocapture "${skips[@]}"
echo "e2e: $(($(date +%s) - t0)) s"
