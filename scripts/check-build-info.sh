#!/usr/bin/env bash
# Checks that a built binary is what its board says: `wssed --version` must report exactly
# board/BOARD/env's target, table capacities and board name, and `link: static` exactly when the
# board's RUSTFLAGS ask for +crt-static. A build that missed the board's env (a `cross build`
# without it, a stray RUSTFLAGS) reports the defaults and fails here.
#
#   scripts/check-build-info.sh BOARD COMMAND...   COMMAND runs the binary (a qemu wrapper, or
#                                                  `qemu-arm-static -cpu arm1176 path/to/wssed`)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ] || [ ! -f "board/$1/env" ]; then
    echo "usage: $0 BOARD COMMAND..." >&2
    exit 2
fi
board=$1
shift
# In a subshell: the board's variables stay out of this script's environment.
expected=$(
    set -a
    # shellcheck source=/dev/null
    . "board/$board/env"
    set +a
    t=${WSSED_TARGET^^}
    t=${t//-/_}
    flags_var="CARGO_TARGET_${t}_RUSTFLAGS"
    link=dynamic
    case "${!flags_var:-}" in *+crt-static*) link=static ;; esac
    printf 'target: %s\nlink: %s\nboard: %s\ndevice_table_capacity: %s\npending_table_capacity: %s\n' \
        "$WSSED_TARGET" "$link" "$WSSED_BOARD" "$WSSED_DEVICE_TABLE_CAPACITY" "$WSSED_PENDING_TABLE_CAPACITY"
)
# Bounded like the start canary: a binary that hangs (under qemu: a libc mix-up, a wrong CPU
# model) fails here in 20 s with one line.
status=0
err=$(mktemp)
trap 'rm -f "$err"' EXIT
out=$(timeout 20 "$@" --version 2>"$err") || status=$?
if [ "$status" = 124 ]; then
    echo "build-info: FAIL $board: \`$* --version\` did not exit within 20 s; output: $out $(cat "$err")"
    exit 1
elif [ "$status" != 0 ]; then
    echo "build-info: FAIL $board: \`$* --version\` exited $status; output: $out $(cat "$err")"
    exit 1
fi
got=$(sed 1d <<<"$out")
if [ "$got" != "$expected" ]; then
    echo "build-info: FAIL $board: the binary is not what board/$board/env says"
    diff <(echo "$expected") <(echo "$got") | sed -n 's/^< /  want: /p; s/^> /  got:  /p'
    exit 1
fi
echo "build-info: $board ok: $(head -n 1 <<<"$out"), $(tr '\n' ' ' <<<"$got" | sed 's/ $//')"
