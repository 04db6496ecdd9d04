#!/usr/bin/env python3
"""Markdown table of a scripts/runtime-flavour.sh run: median (min–max) over rounds per set-up.

usage: runtime_report.py RESULTS.jsonl
"""
import json
import sys


def get(r, *path):
    for p in path:
        if not isinstance(r, dict) or p not in r:
            return None
        r = r[p]
    return r


def fmt(v):
    return f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"


def cell(rows, *path):
    vals = sorted(v for v in (get(r, *path) for r in rows) if isinstance(v, (int, float)))
    if not vals:
        return "not measured"
    n = len(vals)
    med = vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
    return fmt(med) + (f" ({fmt(vals[0])}–{fmt(vals[-1])})" if n > 1 else "")


def main():
    rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip().startswith("{")]
    failed = [r for r in rows if "error" in r]
    idle = [r for r in rows if r.get("scenario") == "idle" and "error" not in r]
    rows = [r for r in rows if "error" not in r and r.get("scenario") == "push"]
    setups = []
    for r in rows:
        k = (r["worker_threads"], r["server_cores"], r["loadgen_cores"])
        if k not in setups:
            setups.append(k)
    commit = rows[0].get("commit", "?") if rows else "?"
    print(f"Run `{sys.argv[1]}`, commit {commit}; median (min–max) over rounds.\n")
    cols = [
        ("pushes/s, unpaced", False, ("pushes_per_s",)),
        ("server CPU µs/push", False, ("server_cpu_us_per_push",)),
        ("of which user µs", False, ("server_user_cpu_us_per_push",)),
        ("p50 µs unpaced", False, ("latency_us", "p50")),
        ("p99 µs unpaced", False, ("latency_us", "p99")),
        ("p50 µs at 1000/s", True, ("latency_us", "p50")),
        ("p99 µs at 1000/s", True, ("latency_us", "p99")),
        ("server CPU µs/push at 1000/s", True, ("server_cpu_us_per_push",)),
        ("load avg (1 min)", None, ("loadavg_1min",)),
    ]
    print("| worker_threads | server cores | load tool | " + " | ".join(c[0] for c in cols) + " |")
    print("| --- | --- | --- | " + " | ".join("---:" for _ in cols) + " |")
    for wt, sc, lc in setups:
        mine = [r for r in rows if (r["worker_threads"], r["server_cores"], r["loadgen_cores"]) == (wt, sc, lc)]
        cells = []
        for _, paced, path in cols:
            sel = mine if paced is None else [r for r in mine if bool(r.get("rate")) == paced]
            cells.append(cell(sel, *path))
        missing = sum(get(r, "missing") or 0 for r in mine)
        undelivered = [r for r in mine if get(r, "every_success_delivered") is False]
        note = "" if not missing and not undelivered else f" (missing {missing})"
        print(f"| {wt} | {sc} | {lc}{note} | " + " | ".join(cells) + " |")
    if idle:
        print("\n| worker_threads | idle RSS after start (KiB) | RssAnon / RssFile (KiB) | RSS per idle device at 1k (B) | load avg (1 min) |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for r in idle:
            print(f"| {r['worker_threads']} | {r.get('idle_rss_kib')} | {r.get('idle_rss_anon_kib')} / "
                  f"{r.get('idle_rss_file_kib')} | {r.get('rss_per_device_bytes')} | {r.get('loadavg_1min')} |")
    if failed:
        print(f"\n{len(failed)} runs failed: " + "; ".join(str(r.get("error"))[:80] for r in failed))


if __name__ == "__main__":
    main()
