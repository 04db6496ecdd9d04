#!/usr/bin/env bash
# Builds one board's release binary without Docker, with the board's settings applied
# (board/BOARD/env: target, table capacities, static C library): the host toolchain for the
# host's own target, Debian's cross toolchain for ARM (scripts/cross-env.sh). The binary lands
# where `cross` puts it, target/<triple>/release/wssed; the last line of output is that path.
#
#   scripts/build-board.sh rpi4-aarch64
#   scripts/build-board.sh rpi4-aarch64 --link dynamic    the other C library linking, for
#                                     comparisons (scripts/link-footprint.sh); it goes to
#                                     target/link-dynamic/<triple>/release/wssed
#   scripts/build-board.sh rpi-zero-armv6 --features tls
#                                     with cargo features on (a comma-separated list); it goes
#                                     to target/features-tls/<triple>/release/wssed, so the
#                                     board's default binary stays built (options combine:
#                                     target/link-dynamic-features-tls/...)
#
# Cargo runs with --target even for the host, so the board's RUSTFLAGS (+crt-static) reach the
# binary and never the build scripts or proc macros. RUSTFLAGS from the caller would override
# the board's: they are dropped here, with a note.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() {
    echo "usage: $0 BOARD [--link static|dynamic] [--features LIST]   (BOARD: $(cd board && ls -d */ | tr -d / | tr '\n' ' '))" >&2
    exit 2
}
[ $# -ge 1 ] && [ -f "board/$1/env" ] || usage
board=$1
shift
link=""
features=""
while [ $# -gt 0 ]; do
    case "$1" in
    --link)
        { [ "${2:-}" = static ] || [ "${2:-}" = dynamic ]; } || usage
        link=$2
        ;;
    --features)
        # Feature names only: the list also names a directory.
        [[ "${2:-}" =~ ^[a-z0-9_-]+(,[a-z0-9_-]+)*$ ]] || usage
        features=$2
        ;;
    *) usage ;;
    esac
    shift 2
done
for v in RUSTFLAGS CARGO_ENCODED_RUSTFLAGS; do
    if [ -n "${!v:-}" ]; then
        echo "build-board: ignoring $v from the environment (the board's env sets the flags)" >&2
        unset "$v"
    fi
done
set -a
# shellcheck source=/dev/null
. "board/$board/env"
set +a
[ "$WSSED_BOARD" = "$board" ] || {
    echo "build-board: board/$board/env says WSSED_BOARD=$WSSED_BOARD" >&2
    exit 1
}

dir=target
suffix=""
if [ -n "$link" ]; then
    t=${WSSED_TARGET^^}
    flags_var="CARGO_TARGET_${t//-/_}_RUSTFLAGS"
    board_link=dynamic
    case "${!flags_var:-}" in *+crt-static*) board_link=static ;; esac
    if [ "$link" != "$board_link" ]; then
        # A directory of its own: the other flags would rebuild everything in target/.
        suffix=link-$link
        if [ "$link" = static ]; then
            export "$flags_var=-Ctarget-feature=+crt-static"
        else
            unset "$flags_var"
        fi
    fi
fi
feature_args=()
if [ -n "$features" ]; then
    # Its own directory too: target/<triple>/release/wssed is what scripts/package-board.sh
    # packages, so a build with features there would replace the board's default binary.
    suffix=${suffix:+$suffix-}features-${features//,/-}
    feature_args=(--features "$features")
fi
[ -z "$suffix" ] || dir=target/$suffix

host=$(rustc -vV | sed -n 's/^host: //p')
if [ "$WSSED_TARGET" = "$host" ]; then
    cargo build --release --locked --target "$WSSED_TARGET" --target-dir "$dir" --bin wssed "${feature_args[@]}" >&2
else
    # shellcheck source=scripts/cross-env.sh
    . scripts/cross-env.sh
    cross_setup "$WSSED_TARGET"
    CROSS_TARGET_DIR=$dir cross_cargo build --release --locked --bin wssed "${feature_args[@]}" >&2
fi
bin="$dir/$WSSED_TARGET/release/wssed"
[ -x "$bin" ] || {
    echo "build-board: no binary at $bin" >&2
    exit 1
}
echo "$bin"
