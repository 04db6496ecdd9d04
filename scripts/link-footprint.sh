#!/usr/bin/env bash
# Static or dynamic C library, per board: builds both (scripts/build-board.sh --link), then
# records each binary's size and idle resident memory (scripts/link_footprint.py: native for
# x86_64, the guest's own memory under qemu-user for ARM) in bench-results/link-footprint-*.jsonl,
# with the machine, commit and load average. BENCHMARKS.md "Static or dynamic" reads it.
#
#   scripts/link-footprint.sh [BOARD...]     default: every board
#
# Environment: RUNS (3 fresh processes per binary; the median is kept).
set -euo pipefail
cd "$(dirname "$0")/.."
boards=("$@")
[ ${#boards[@]} -gt 0 ] || mapfile -t boards < <(cd board && ls -d -- */ | tr -d /)
mkdir -p bench-results
out="bench-results/link-footprint-$(date -u +%Y-%m-%dT%H%M%SZ).jsonl"

machine() {
    python3 - "$1" <<'PY'
import json, os, platform, subprocess, sys
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "")
commit = run("git", "rev-parse", "--short", "HEAD")
dirty = run("git", "status", "--porcelain", "--untracked-files=no")
print(json.dumps({"scenario": "machine", "when": sys.argv[1], "nproc": os.cpu_count(), "cpu": cpu, "mem": mem,
    "kernel": platform.release(), "commit": commit + ("+dirty" if dirty else ""),
    "rustc": run("rustc", "-V"), "rustc_web": run("/usr/bin/rustc", "-V"),
    "qemu": (run("qemu-aarch64-static", "--version") or "").split("\n")[0],
    "loadavg": open("/proc/loadavg").read().split()[:3]}))
PY
}

machine start >>"$out"
host=$(rustc -vV | sed -n 's/^host: //p')
for board in "${boards[@]}"; do
    target=$(sed -n 's/^WSSED_TARGET=//p' "board/$board/env")
    cpu=$(sed -n 's/^WSSED_QEMU_CPU=//p' "board/$board/env")
    for link in static dynamic; do
        echo "== $board, $link"
        bin=$(scripts/build-board.sh "$board" --link "$link" | tail -n 1)
        args=(--board "$board" --link "$link" --target "$target")
        if [ "$target" != "$host" ]; then
            # shellcheck source=scripts/cross-env.sh
            . scripts/cross-env.sh
            cross_setup "$target" 2>/dev/null
            args+=(--qemu "$CROSS_QEMU")
            [ -n "$cpu" ] && args+=(--cpu "$cpu")
            cross_is_static "$bin" || args+=(--sysroot "$CROSS_LIBC_ROOT")
            # 64-bit guests get no reserved address space unless asked; 32-bit ones always do.
            case "$target" in aarch64-*) args+=(--reserve 0x200000000) ;; esac
        fi
        # Run with the board's limits, as its package's config sets them.
        mapfile -t limits < <(scripts/board-limits.sh "$board")
        env "${limits[@]}" scripts/link_footprint.py "${args[@]}" "$bin" | tee -a "$out"
    done
done
machine end >>"$out"
# The table BENCHMARKS.md pastes: one row per board, static beside dynamic.
python3 - "$out" >"${out%.jsonl}.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
runs = {(r["board"], r["link"]): r for r in rows if r["scenario"] == "link_footprint"}
start = next(r for r in rows if r["scenario"] == "machine" and r["when"] == "start")
end = next(r for r in rows if r["scenario"] == "machine" and r["when"] == "end")
def kib(n):
    return f"{n:,}"
def rss(r):
    return r.get("guest_rss_kib", r.get("rss_kib"))
def libc(r):
    g = r.get("guest", r.get("by_mapping"))
    return g["c_library"]
print("| board | target | binary, static | binary, dynamic | idle RSS KiB, static | idle RSS KiB, dynamic | C library files in the dynamic RSS | dynamic RSS without them | measured |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for board in dict.fromkeys(b for b, _ in runs):
    s, d = runs.get((board, "static")), runs.get((board, "dynamic"))
    if not (s and d):
        continue
    where = "native" if s["where"] == "native" else "guest memory under " + s["where"].replace("qemu-user ", "")
    own = rss(d) - libc(d)
    print(f"| `{board}` | `{s['target']}` | {s['bytes']:,} | {d['bytes']:,} ({d['bytes'] - s['bytes']:+,}) "
          f"| {kib(rss(s))} | {kib(rss(d))} ({rss(d) - rss(s):+,}) | {libc(d):,} | {own:,} ({own - rss(s):+,}) | {where} |")
for (board, link), r in runs.items():
    if link == "static" and r["where"] == "native" and (board, "dynamic") in runs:
        d = runs[(board, "dynamic")]
        print(f"\n`{board}`, private memory (USS: what ending the process frees; shared libc.so pages are "
              f"not in it): static {r['private_kib']:,} KiB, dynamic {d['private_kib']:,} KiB; "
              f"Pss: static {r['pss_kib']:,} KiB, dynamic {d['pss_kib']:,} KiB.")
print()
print(f"Commit {start['commit']}, {start['nproc']} cores ({start['cpu']}), {start['rustc']}, {start['rustc_web']}, "
      f"{start['qemu']}; load average {' '.join(start['loadavg'])} at the start, {' '.join(end['loadavg'])} at the end; "
      f"median of {next(iter(runs.values()))['runs']} fresh processes each.")
PY
echo "link-footprint: wrote $out and ${out%.jsonl}.md"
