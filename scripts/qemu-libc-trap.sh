#!/usr/bin/env bash
# Reproduces the qemu-user C library trap and shows that the way this project runs ARM
# binaries does not fall into it.
#
# With Debian's multiarch libc6:arm64 installed (common on machines that cross-build),
# `qemu-aarch64-static -L /usr/aarch64-linux-gnu PROGRAM` starts the sysroot's ld.so, which
# looks libc.so.6 up through the host's /etc/ld.so.cache and default paths and maps the
# multiarch one, of another glibc build than that ld.so. A program that starts a thread then
# spins at 100 % CPU in pthread_create, forever: in CI, a silent hang until the time limit.
#
#   scripts/qemu-libc-trap.sh                   on this machine as it is
#   scripts/qemu-libc-trap.sh --with-multiarch [COMMAND...]
#       first `dpkg --add-architecture arm64` and install libc6:arm64; after the runs below,
#       run COMMAND too, if given, while it is installed (scripts/cross-test.sh rpi4-aarch64:
#       the CI step); afterwards purge every :arm64 package and remove the architecture,
#       leaving the machine as it was
#
# Every run is bounded (15 s) and shows the C library files it mapped (/proc/PID/maps):
#   1. the trap:  qemu -L SYSROOT ./thread (dynamic): hangs when libc6:arm64 is installed;
#   2. our way:   the same program under cross_qemu_command (the sysroot's libc first, through
#                 LD_LIBRARY_PATH): runs, with one libc, whatever is installed;
#   3. static:    the program linked statically: runs, no libc file at all;
#   4. wssed:     the rpi4-aarch64 board binary, when built (scripts/build-board.sh), through
#                 the start canary: runs.
# Exit 0 when 2 to 4 pass, and 1 hangs exactly when libc6:arm64 is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
multiarch=0
if [ "${1:-}" = --with-multiarch ]; then
    multiarch=1
    shift
fi

# shellcheck source=scripts/cross-env.sh
. scripts/cross-env.sh
cross_setup aarch64-unknown-linux-gnu

# Undoes --with-multiarch: every :arm64 package (libc6 counts as essential to apt, hence
# --allow-remove-essential; the host's own libc6:amd64 is not touched), then the architecture.
cleanup_multiarch() {
    local pkgs
    set +e
    mapfile -t pkgs < <(dpkg-query -W -f '${binary:Package}\n' 2>/dev/null | grep ':arm64$')
    if [ ${#pkgs[@]} -gt 0 ]; then
        echo "trap: purging ${pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --allow-remove-essential "${pkgs[@]}" >/dev/null
    fi
    dpkg --remove-architecture arm64 || echo "trap: FAIL: could not remove the arm64 architecture; see dpkg --print-foreign-architectures"
    apt-get update -qq >/dev/null 2>&1
    echo "trap: the machine again: foreign architectures: $(dpkg --print-foreign-architectures | tr '\n' ' ')," \
        ":arm64 packages: $(dpkg-query -W -f '${binary:Package}\n' 2>/dev/null | grep -c ':arm64$')"
}
if [ "$multiarch" = 1 ]; then
    if dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "trap: arm64 is already a foreign architecture here; not installing or removing anything" >&2
        multiarch=0
    else
        echo "trap: dpkg --add-architecture arm64; apt-get install libc6:arm64"
        dpkg --add-architecture arm64
        trap cleanup_multiarch EXIT
        apt-get update -qq >/dev/null 2>&1 || echo "trap: apt-get update reported errors; going on"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libc6:arm64 >/dev/null
    fi
fi
installed=0
dpkg-query -W -f='${Status}' libc6:arm64 2>/dev/null | grep -q 'install ok installed' && installed=1
echo "trap: libc6:arm64 installed: $([ $installed = 1 ] && dpkg-query -W -f='yes, ${Version}' libc6:arm64 || echo no);" \
    "sysroot libc: $(dpkg-query -W -f='${Version}' "libc6-$CROSS_DEB_ARCH-cross")"

dir=$(mktemp -d)
cat >"$dir/thread.c" <<'C'
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
static void *run(void *arg) { return arg; }
int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, run, NULL) != 0) return 1;
    pthread_join(t, NULL);
    puts("thread ran");
    usleep(500000); /* long enough for /proc/PID/maps to be read */
    return 0;
}
C
aarch64-linux-gnu-gcc -O2 -pthread -o "$dir/thread" "$dir/thread.c"
aarch64-linux-gnu-gcc -O2 -pthread -static -o "$dir/thread-static" "$dir/thread.c"

# attempt NAME COMMAND...: runs it bounded; prints one line; returns 0 if it ran, 1 if it hung
# or failed. The mapped C library files are read from /proc while it runs.
attempt() {
    local name=$1 pid libs="" seen status
    shift
    "$@" >"$dir/out" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        seen=$(awk '$6 ~ /\/(libc\.so\.6|ld-linux[^\/]*)$/ {print $6}' "/proc/$pid/maps" 2>/dev/null | sort -u | tr '\n' ' ')
        [ -n "$seen" ] && libs=$seen
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "trap: $name: HUNG for 15 s (killed); C library files mapped: ${libs:-none}"
        return 1
    fi
    status=0
    wait "$pid" || status=$?
    if [ "$status" = 0 ] && grep -q 'thread ran' "$dir/out"; then
        echo "trap: $name: ran; C library files mapped: ${libs:-none}"
        return 0
    fi
    echo "trap: $name: exited $status: $(tr '\n' ' ' <"$dir/out")"
    return 1
}

fail=0
read -r -a ours <<<"$(cross_qemu_command)"
if attempt "1. qemu -L sysroot (the trap)" "$CROSS_QEMU" -L "$CROSS_LIBC_ROOT" "$dir/thread"; then
    [ "$installed" = 1 ] && echo "trap: note: the trap did not spring with libc6:arm64 installed"
else
    [ "$installed" = 0 ] && {
        echo "trap: FAIL: the plain -L run failed without libc6:arm64 installed"
        fail=1
    }
fi
attempt "2. ${ours[*]} (our runs)" "${ours[@]}" "$dir/thread" || fail=1
attempt "3. static" "$CROSS_QEMU" "$dir/thread-static" || fail=1

bin="$root/target/aarch64-unknown-linux-gnu/release/wssed"
if [ -x "$bin" ]; then
    cross_qemu_wrapper "$bin" "$dir/wssed-qemu" "$(sed -n 's/^WSSED_QEMU_CPU=//p' board/rpi4-aarch64/env)"
    libc=$(cross_is_static "$bin" && echo none || echo "$CROSS_LIBC_ROOT")
    echo "trap: 4. wssed ($(cross_is_static "$bin" && echo static || echo dynamic)) through the canary:"
    scripts/canary.py --seconds 20 --libc "$libc" "$dir/wssed-qemu" || fail=1
else
    echo "trap: 4. skipped: no $bin (scripts/build-board.sh rpi4-aarch64)"
fi
rm -rf "$dir"
if [ $# -gt 0 ]; then
    echo "trap: with libc6:arm64 $([ $installed = 1 ] && echo installed || echo absent): $*"
    "$@" || {
        echo "trap: FAIL: $* failed"
        fail=1
    }
fi
[ "$fail" = 0 ] && echo "trap: our qemu runs load exactly one C library (or none) either way" || echo "trap: FAILED"
exit "$fail"
