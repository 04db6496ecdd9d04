#!/usr/bin/env python3
"""Markdown table of scripts/profile-push.sh results: instructions and syscalls per push per commit.

usage: callgrind_summary.py bench-results/callgrind-A.jsonl [bench-results/callgrind-B.jsonl ...]
Median (min–max) over runs; the last column compares each row with the first one. Runs made with
other daemon flags (an "args" member) are rows of their own.
"""
import json
import sys


def med(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def main():
    print("| commit | runs | pushes per run | instructions per push | system calls per push (under valgrind) "
          "| idle instructions, same duration | load avg (1 min) | change |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = None
    groups = []
    for path in sys.argv[1:]:
        rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
        # Runs with other daemon flags (profile-push.sh's WSSED_ARGS) are a row of their own.
        for args in dict.fromkeys(r.get("args", "") for r in rows):
            groups.append([r for r in rows if r.get("args", "") == args])
    for rows in groups:
        ir = [r["ir_per_push"] for r in rows]
        sc = [r["syscalls_per_push"] for r in rows]
        idle = [r["ir_idle_same_duration"] for r in rows]
        la = [r["loadavg_1min"] for r in rows]
        m = med(ir)
        change = "-" if base is None else f"{100 * (m - base) / base:+.1f} %"
        base = base if base is not None else m
        name = rows[0]["commit"] + (f" `{rows[0]['args']}`" if rows[0].get("args") else "")
        print(f"| {name} | {len(rows)} | {rows[0]['pushes']:,} | {m:,.0f} ({min(ir):,}–{max(ir):,}) "
              f"| {med(sc):.2f} ({min(sc):.2f}–{max(sc):.2f}) | {med(idle):,.0f} ({min(idle):,}–{max(idle):,}) "
              f"| {min(la):.1f}–{max(la):.1f} | {change} |")


if __name__ == "__main__":
    main()
