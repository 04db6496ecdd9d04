#!/usr/bin/env bash
# Prints the board's capacity-bound settings as WSSED_* variables, one per line, from its
# default config (board/BOARD/wssed.toml): the limits a board's binary runs with in this
# project's runs. Its tables are sized for them, and the daemon refuses the defaults when they
# exceed the compiled capacities (max_connections 4096 > 1024 on the Pi Zero).
#
#   env $(scripts/board-limits.sh rpi-zero-armv6) wssed ...
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] && [ -f "board/$1/wssed.toml" ] || {
    echo "usage: $0 BOARD" >&2
    exit 2
}
python3 - "board/$1/wssed.toml" <<'PY'
import sys, tomllib
config = tomllib.load(open(sys.argv[1], "rb"))
for key in ("max_connections", "max_pending_sends"):
    if key in config:
        print(f"WSSED_{key.upper()}={config[key]}")
PY
