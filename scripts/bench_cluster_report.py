#!/usr/bin/env python3
"""Markdown summary of one scripts/bench-cluster.sh run: local beside cross-node, and the idle table.

usage: bench_cluster_report.py RESULTS.jsonl
A figure that is missing (a run failed) is printed as such, never guessed.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_report import MISSING, fmt, get, load  # noqa: E402  (the shared helpers)


def median(vals):
    nums = sorted(v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool))
    if not nums:
        return None
    n = len(nums)
    return nums[n // 2] if n % 2 else (nums[n // 2 - 1] + nums[n // 2]) / 2


def figure(rows, kind, scenario, path, rate=None):
    found = [r for r in rows if r.get("scenario") == scenario and str(r.get("label", "")).startswith(kind)
             and r.get("rate") == rate]
    vals = [get(r, *path) for r in found if not r.get("error")]
    if vals and all(isinstance(v, bool) for v in vals):
        return all(vals), fmt(all(vals))
    med = median(vals)
    nums = sorted(v for v in vals if isinstance(v, (int, float)))
    text = fmt(med)
    if len(nums) > 1:
        text += f" ({fmt(nums[0])}–{fmt(nums[-1])})"
    return med, text


def main():
    rows = load(sys.argv[1])
    machine = next((r for r in rows if r.get("scenario") == "machine"), {})
    end = next((r for r in rows if r.get("scenario") == "end"), {})
    print(f"Machine: {machine.get('cpu')}, {machine.get('nproc')} cores, {machine.get('mem')}, "
          f"kernel {machine.get('kernel')}; commit {machine.get('commit')}; {machine.get('date')}; "
          f"{machine.get('nats_server')}; load average {machine.get('loadavg_start')} at the start, "
          f"{end.get('loadavg_1min')} at the end.\n")

    sizes = {r.get("features"): r.get("bytes") for r in rows if r.get("scenario") == "binary"}
    if "" in sizes and "cluster" in sizes:
        plain, cl = sizes[""], sizes["cluster"]
        print(f"Stripped binary ({machine.get('arch')}): {plain:,} bytes without the feature, {cl:,} with it "
              f"(+{cl - plain:,} bytes, +{(cl - plain) / 1024:,.0f} KiB).\n")

    print("| pushes through node 1 | devices on node 1 (local) | devices on node 2 (through NATS) | added |")
    print("| --- | --- | --- | --- |")
    lines = [
        ("throughput, pushes/s (unpaced, 32 upstream connections)", "push", ("pushes_per_s",), None),
        ("answer round trip p50, µs (unpaced)", "push", ("http_rtt_us", "p50"), None),
        ("push to device p50, µs at 1,000/s", "push", ("latency_us", "p50"), 1000),
        ("push to device p99, µs at 1,000/s", "push", ("latency_us", "p99"), 1000),
        ("answer round trip p50, µs at 1,000/s", "push", ("http_rtt_us", "p50"), 1000),
        ("answer round trip p99, µs at 1,000/s", "push", ("http_rtt_us", "p99"), 1000),
        ("server CPU per push, µs (unpaced; cross-node: both nodes and nats-server)", "push",
         ("server_cpu_us_per_push",), None),
        ("every success delivered", "push", ("every_success_delivered",), None),
        ("batch items/s (8 connections, 100 items)", "batch", ("items_per_s",), None),
        ("send round trip p50, µs (1 connection)", "send", ("rtt_us", "p50"), None),
        ("send round trip p99, µs (1 connection)", "send", ("rtt_us", "p99"), None),
    ]
    for name, scenario, path, rate in lines:
        lv, lt = figure(rows, "local", scenario, path, rate)
        cv, ct = figure(rows, "cross-node", scenario, path, rate)
        added = ""
        if isinstance(lv, (int, float)) and isinstance(cv, (int, float)) and not isinstance(lv, bool) \
                and not isinstance(cv, bool):
            if "pushes/s" in name or "items/s" in name:
                added = f"{cv / lv:.2f}×" if lv else ""
            else:
                added = f"{cv - lv:+,.1f}"
        print(f"| {name} | {lt} | {ct} | {added} |")
    print()

    print("| idle devices | devices | node RSS with them, MiB | RSS per device, bytes | budget in use at the peak |")
    print("| --- | --- | --- | --- | --- |")
    metrics = {r.get("node"): r for r in rows if r.get("scenario") == "node_metrics"}
    for r in rows:
        if r.get("scenario") != "idle":
            continue
        node = str(r.get("label"))
        peak = ""
        if node.startswith("3 nodes"):
            m = metrics.get("n" + node.rsplit(" ", 1)[-1])
            if m:
                peak = f"{m['memory_used_peak_bytes'] / 1048576:,.1f} MiB"
        if r.get("error"):
            print(f"| {node} | failed: {r['error']} | | | |")
            continue
        print(f"| {node} | {fmt(r.get('registered'))} | {r.get('rss_kib_with_devices', 0) / 1024:,.1f} | "
              f"{fmt(r.get('rss_per_device_bytes'))} | {peak} |")
    nats = next((r for r in rows if r.get("scenario") == "nats_rss"), None)
    if nats:
        print(f"\nnats-server RSS: {nats['before_kib'] / 1024:,.1f} MiB before the idle devices, "
              f"{nats['peak_kib'] / 1024:,.1f} MiB at the peak with 30,000 devices present (30,000 subscriptions).")


if __name__ == "__main__":
    main()
