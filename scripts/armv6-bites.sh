#!/usr/bin/env bash
# Proves that the qemu CPU model used for the Pi Zero/1 runs is ARMv6 for real: a program
# executing one ARMv7 instruction (DMB; ARMv6 has none) must die with SIGILL under it, and run
# under an ARMv7 model. Without this, an ARMv6 run that passed could be running on qemu's
# default CPU, which has every ARMv7 and ARMv8 instruction.
#
#   scripts/armv6-bites.sh [CPU]    default arm1176 (the Pi Zero/1's ARM1176JZF-S)
#
# Built with Debian's armel cross gcc, statically linked (no C library from the host).
# When Debian's armhf cross gcc is installed too, it also shows why the Pi Zero build does not
# use Debian's armhf glibc: a static armhf program built with -march=armv6 dies the same way,
# from the ARMv7 code in the C library itself.
set -euo pipefail
cpu=${1:-arm1176}
for tool in arm-linux-gnueabi-gcc qemu-arm-static; do
    command -v "$tool" >/dev/null || {
        echo "armv6-bites: $tool missing (scripts/cross-env.sh installs it)" >&2
        exit 1
    }
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/v7.c" <<'C'
#include <stdio.h>
int main(void) {
#ifdef ARMV7
    __asm__ volatile("dmb ish" ::: "memory"); /* ARMv7 only */
#endif
    puts("ran");
    return 0;
}
C
arm-linux-gnueabi-gcc -O2 -static -march=armv7-a -marm -DARMV7 -o "$dir/v7" "$dir/v7.c"
arm-linux-gnueabi-gcc -O2 -static -march=armv6 -marm -o "$dir/v6" "$dir/v7.c"

# run NAME CPU BINARY: prints the exit status; bounded, a hang is a failure.
run() {
    local status=0
    timeout 20 qemu-arm-static -cpu "$2" "$3" >"$dir/out" 2>&1 || status=$?
    echo "$status"
}
fail=0
s=$(run v7 "$cpu" "$dir/v7")
if [ "$s" = 132 ]; then
    echo "armv6-bites: ARMv7 instruction under -cpu $cpu: SIGILL, as it must"
else
    echo "armv6-bites: FAIL: an ARMv7 instruction under -cpu $cpu exited $s ($(tr '\n' ' ' <"$dir/out")), not SIGILL (132)"
    fail=1
fi
s=$(run v7 cortex-a7 "$dir/v7")
[ "$s" = 0 ] || {
    echo "armv6-bites: FAIL: the same program under -cpu cortex-a7 exited $s, want 0"
    fail=1
}
s=$(run v6 "$cpu" "$dir/v6")
[ "$s" = 0 ] || {
    echo "armv6-bites: FAIL: the ARMv6 build of it under -cpu $cpu exited $s, want 0 (armel glibc must run on ARMv6)"
    fail=1
}
if command -v arm-linux-gnueabihf-gcc >/dev/null && [ -f /usr/arm-linux-gnueabihf/lib/libc.a ]; then
    arm-linux-gnueabihf-gcc -O2 -static -march=armv6+fp -marm -o "$dir/hf" "$dir/v7.c"
    s=$(run hf "$cpu" "$dir/hf")
    if [ "$s" = 132 ]; then
        echo "armv6-bites: static armhf glibc program built -march=armv6 under -cpu $cpu: SIGILL (Debian's armhf libc is ARMv7 code)"
    else
        echo "armv6-bites: note: the static armhf glibc program exited $s under -cpu $cpu (expected SIGILL)"
    fi
fi
exit "$fail"
