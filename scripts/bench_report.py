#!/usr/bin/env python3
"""Markdown summary of one scripts/bench.sh run: every figure, wssed beside nchan, and the ratio.

usage: bench_report.py RESULTS.jsonl
A figure that is missing (server not measured, scenario failed) is printed as such, never guessed.
"""
import json
import sys

MISSING = "not measured"


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip().startswith("{")]


def pick_all(rows, target, scenario, **match):
    return [r for r in rows if r.get("target") == target and r.get("scenario") == scenario
            and all(r.get(k) == v for k, v in match.items())]


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def figure(rows, target, scenario, path, match):
    """(value, shown text): the median over rounds, with the range when there were several."""
    found = pick_all(rows, target, scenario, **match)
    if not found:
        return None, MISSING
    errors = [get(r, "error") for r in found if get(r, "error")]
    vals = [get(r, *path) for r in found if not get(r, "error")]
    if not vals:
        return None, f"failed: {errors[0]}"
    nums = sorted(v for v in vals if is_num(v))
    if len(nums) != len(vals):
        if all(isinstance(v, bool) for v in vals):
            return all(vals), fmt(all(vals))
        return vals[0], fmt(vals[0])
    med = nums[len(nums) // 2] if len(nums) % 2 else (nums[len(nums) // 2 - 1] + nums[len(nums) // 2]) / 2
    text = fmt(med)
    if len(nums) > 1:
        text += f" ({fmt(nums[0])}–{fmt(nums[-1])})"
    if errors:
        text += f", {len(errors)} failed"
    return med, text


def get(r, *path):
    cur = r
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def fmt(v):
    if v is None:
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(a, b):
    if is_num(a) and is_num(b) and b:
        return f"{a / b:.2f}x"
    return "-"


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    rows = load(sys.argv[1])
    m = next((r for r in rows if r.get("scenario") == "machine"), {})
    end = next((r for r in rows if r.get("scenario") == "machine_end"), {})
    print(f"Run `{sys.argv[1]}`: {m.get('date', '?')}, commit {m.get('commit', '?')}")
    print(f"Machine: {m.get('nproc', '?')} cores, {m.get('cpu', '?')}, kernel {m.get('kernel', '?')}, "
          f"{m.get('mem', '?')}; server pinned to core 0, load tool to core 1.")
    print(f"Load average (1/5/15 min) at start {' '.join(m.get('loadavg_start') or ['?'])}, "
          f"at end {' '.join(end.get('loadavg_end') or ['?'])} (other work on the same cores skews latency).")
    print()
    print("Several rounds: median (min–max); the ratio is of the medians.")
    print()
    print("| figure | wssed | nchan | wssed/nchan | target |")
    print("| --- | ---: | ---: | ---: | --- |")

    def row(label, scenario, path, match=None, target="", nchan_na=False):
        match = match or {}
        w, ws = figure(rows, "wssed", scenario, path, match)
        n, ns = (None, "n/a") if nchan_na else figure(rows, "nchan", scenario, path, match)
        print(f"| {label} | {ws} | {ns} | {ratio(w, n)} | {target} |")

    row("idle RSS just after start (KiB)", "idle", ["idle_rss_kib"], {"devices": 1000}, "≤ 2048 KiB")
    row("idle RSS: anonymous, RssAnon (KiB)", "idle", ["idle_rss_anon_kib"], {"devices": 1000})
    row("idle RSS: file-backed, RssFile (KiB)", "idle", ["idle_rss_file_kib"], {"devices": 1000})
    row("RSS per idle device at 1k (bytes)", "idle", ["rss_per_device_bytes"], {"devices": 1000})
    row("RSS per idle device at 10k (bytes)", "idle", ["rss_per_device_bytes"], {"devices": 10000}, "≤ 4096 B")
    row("RSS with 10k idle devices (KiB)", "idle", ["rss_kib_with_devices"], {"devices": 10000})
    u = {"rate": None}
    row("push throughput, unpaced (pushes/s)", "push", ["pushes_per_s"], u, "≥ nchan")
    row("server CPU per delivered push (µs)", "push", ["server_cpu_us_per_push"], u, "≤ 0.5x nchan")
    row("server CPU per push, schedstat (µs)", "push", ["server_cpu_us_per_push_schedstat"], u)
    row("of which user space (µs)", "push", ["server_user_cpu_us_per_push"], u)
    row("every success delivered (unpaced)", "push", ["every_success_delivered"], u, "yes")
    row("load average (1 min) at each unpaced round", "push", ["loadavg_1min"], u)
    row("delivered / missing (unpaced)", "push", ["delivered"], u)
    row("load tool CPU use, unpaced (cores)", "push", ["loadgen_cpu_util"], u)
    for q in ("p50", "p90", "p99", "max"):
        row(f"push→device latency unpaced {q} (µs)", "push", ["latency_us", q], u)
    p = {"rate": 1000}
    for q in ("p50", "p90", "p99", "max"):
        tgt = "≤ nchan" if q in ("p50", "p99") else ""
        row(f"push→device latency at 1000/s {q} (µs)", "push", ["latency_us", q], p, tgt)
    row("server CPU per push at 1000/s (µs)", "push", ["server_cpu_us_per_push"], p)
    row("load average (1 min) at each paced round", "push", ["loadavg_1min"], p)
    row("every success delivered (1000/s)", "push", ["every_success_delivered"], p, "yes")
    row("batch throughput, 100-item batches (items/s)", "batch", ["items_per_s"], None)
    row("server CPU per batch item (µs)", "batch", ["server_cpu_us_per_item"], None)
    row("every success delivered (batch)", "batch", ["every_success_delivered"], None, "yes")
    row("batch round trip p50 (µs)", "batch", ["http_rtt_us", "p50"], None)
    one = {"connections": 1}
    row("/sse/send round trip p50, 1 conn (µs)", "send", ["rtt_us", "p50"], one, "≤ 150 µs", nchan_na=True)
    row("/sse/send round trip p99, 1 conn (µs)", "send", ["rtt_us", "p99"], one, nchan_na=True)
    row("/sse/send requests/s, 1 conn", "send", ["requests_per_s"], one, nchan_na=True)
    many = {"connections": 32}
    row("/sse/send requests/s, 32 conns", "send", ["requests_per_s"], many, nchan_na=True)
    row("/sse/send round trip p50, 32 conns (µs)", "send", ["rtt_us", "p50"], many, nchan_na=True)
    row("/sse/send round trip p99, 32 conns (µs)", "send", ["rtt_us", "p99"], many, nchan_na=True)
    row("device connect rate (connects/s)", "connect", ["connects_per_s"], None)
    row("server CPU per connect (µs)", "connect", ["server_cpu_us_per_connect"], None)
    for b in (r for r in rows if r.get("scenario") == "binary"):
        print(f"| stripped release binary, {b.get('arch', '?')} (bytes) | {fmt(b.get('bytes'))} | - | - | ≤ 1,572,864 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
