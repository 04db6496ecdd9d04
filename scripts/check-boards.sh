#!/usr/bin/env bash
# Checks that each board/ profile is consistent: capacities are powers of two, the default
# config stays within them, the drop-in sets MemoryMax and a LimitNOFILE of at least
# max_connections, the target is one cross.toml and the workflow know, the env names its own
# board and sets the RUSTFLAGS variable of its own target (a misspelt one would be ignored by
# cargo), ARM boards name the qemu CPU their runs emulate, and .ci/run runs every board.
# (Whether the daemon accepts each config is `wssed --check-config`, once it exists.)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - <<'PY'
import glob, re, sys, tomllib

fail = False
def bad(msg):
    global fail
    fail = True
    print("FAIL", msg)

cross = open("cross.toml").read()
workflow = open(".github/workflows/release.yml").read()
ci = open(".ci/run").read()
cargo_toml = tomllib.load(open("Cargo.toml", "rb"))
variants = cargo_toml["package"]["metadata"]["deb"]["variants"]
for d in sorted(glob.glob("board/*/")):
    name = d.rstrip("/").split("/")[-1]
    env = {}
    for line in open(d + "env"):
        m = re.match(r"^([A-Z0-9_]+)=(.*)$", line.strip())
        if m:
            env[m.group(1)] = m.group(2)
    cfg = tomllib.load(open(d + "wssed.toml", "rb"))
    dropin = open(d + "wssed.service.d/board.conf").read()
    cap = int(env["WSSED_DEVICE_TABLE_CAPACITY"])
    pcap = int(env["WSSED_PENDING_TABLE_CAPACITY"])
    for label, v in (("device", cap), ("pending", pcap)):
        if v < 2 or v & (v - 1):
            bad(f"{name}: {label} table capacity {v} is not a power of two")
    mc = cfg.get("max_connections", 4096)
    mp = cfg.get("max_pending_sends", 1024)
    if mc > cap:
        bad(f"{name}: max_connections {mc} over the table capacity {cap}")
    if mp > pcap:
        bad(f"{name}: max_pending_sends {mp} over the pending capacity {pcap}")
    nofile = re.search(r"^LimitNOFILE=(\d+)$", dropin, re.M)
    if not nofile or int(nofile.group(1)) < mc:
        bad(f"{name}: LimitNOFILE missing or under max_connections {mc}")
    if not re.search(r"^MemoryMax=\d+[KMG]$", dropin, re.M):
        bad(f"{name}: no MemoryMax in the drop-in")
    target = env.get("WSSED_TARGET", "")
    if f"[target.{target}]" not in cross:
        bad(f"{name}: target {target!r} not in cross.toml")
    if name not in workflow:
        bad(f"{name}: not built by .github/workflows/release.yml")
    if env.get("WSSED_BOARD") != name:
        bad(f"{name}: WSSED_BOARD is {env.get('WSSED_BOARD')!r}, not the folder's name")
    flags_var = "CARGO_TARGET_" + target.upper().replace("-", "_") + "_RUSTFLAGS"
    for var in env:
        if var.startswith("CARGO_TARGET_") and var != flags_var:
            bad(f"{name}: {var} is not the RUSTFLAGS variable of {target} ({flags_var})")
    if "+crt-static" not in env.get(flags_var, ""):
        bad(f"{name}: {flags_var} does not link the C library statically")
    if not target.startswith("x86_64") and not env.get("WSSED_QEMU_CPU"):
        bad(f"{name}: no WSSED_QEMU_CPU for the qemu runs")
    if f"scripts/cross-test.sh {name}\n" not in ci:
        bad(f"{name}: .ci/run does not run scripts/cross-test.sh {name}")
    if name not in variants:
        bad(f"{name}: no [package.metadata.deb.variants.{name}] in Cargo.toml")
    if not fail:
        print(f"ok   {name}: {target}, capacity {cap}, max_connections {mc}")
sys.exit(1 if fail else 0)
PY
