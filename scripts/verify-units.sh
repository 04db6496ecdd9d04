#!/usr/bin/env bash
# Checks systemd/wssed.service and systemd/wssed.socket, alone and with each board's
# drop-in, with `systemd-analyze verify`, and the service's hardening with
# `systemd-analyze security --offline`.
#
#   scripts/verify-units.sh [BINARY]     (default: target/release/wssed, built when missing)
#
# Works in a container without a running systemd: the units are laid into a scratch root
# (--root) that holds systemd's own unit files (for sysinit.target, network.target, ...)
# and a real executable at the ExecStart path /usr/bin/wssed, as the package installs it.
# systemd-analyze exits 0 on unknown keys and bad values (it only warns), so any output
# at all counts as a failure here.
set -euo pipefail
cd "$(dirname "$0")/.."

# Most exposure `systemd-analyze security` may report (0 = locked down, 10 = none).
EXPOSURE_MAX=${WSSED_EXPOSURE_MAX:-2.0}

if ! command -v systemd-analyze >/dev/null; then
    echo "installing systemd (for systemd-analyze)"
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
sd_units=/lib/systemd/system
[ -f "$sd_units/sysinit.target" ] || sd_units=/usr/lib/systemd/system

bin=${1:-target/release/wssed}
if [ ! -x "$bin" ]; then
    cargo build --release --locked --bin wssed
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail=0

# Lays out a root like an installed package (plus BOARD's drop-in when given) and verifies.
check() {
    local board=${1:-} label=${1:-base}
    local root="$scratch/$label"
    mkdir -p "$root/usr/bin" "$root/lib/systemd" "$root/etc/wssed"
    cp -a "$sd_units" "$root/lib/systemd/system"
    cp systemd/wssed.service systemd/wssed.socket "$root/lib/systemd/system/"
    install -m 0755 "$bin" "$root/usr/bin/wssed"
    if [ -n "$board" ]; then
        cp -r "board/$board/wssed.service.d" "$root/lib/systemd/system/wssed.service.d"
        cp "board/$board/wssed.toml" "$root/etc/wssed/wssed.toml"
    fi
    local out
    if ! out=$(systemd-analyze verify --root="$root" wssed.service wssed.socket 2>&1) || [ -n "$out" ]; then
        echo "FAIL verify ($label):"
        echo "$out"
        fail=1
        return
    fi
    # The drop-in must have been read: its MemoryMax is what the unit ends up with.
    if [ -n "$board" ]; then
        local want
        want=$(sed -n 's/^MemoryMax=//p' "board/$board/wssed.service.d/board.conf")
        if ! systemd-analyze cat-config --root="$root" systemd/system/wssed.service 2>/dev/null |
            grep -qx "MemoryMax=$want"; then
            echo "FAIL drop-in ($label): MemoryMax=$want not seen by systemd"
            fail=1
            return
        fi
    fi
    local sec score
    sec=$(systemd-analyze security --offline=true --root="$root" --threshold=100 wssed.service 2>&1) || true
    score=$(echo "$sec" | sed -n 's/.*Overall exposure level for wssed.service: \([0-9.]*\).*/\1/p')
    if [ -z "$score" ] || ! awk -v s="$score" -v m="$EXPOSURE_MAX" 'BEGIN { exit !(s <= m) }'; then
        echo "FAIL security ($label): exposure '${score:-?}' over $EXPOSURE_MAX"
        echo "$sec" | grep '✗' || true
        fail=1
        return
    fi
    echo "ok   $label: verify clean, exposure $score"
}

check
for dir in board/*/; do
    check "$(basename "$dir")"
done
if [ "$fail" != 0 ]; then
    echo "units: FAILED"
    exit 1
fi
echo "units: all verified"
