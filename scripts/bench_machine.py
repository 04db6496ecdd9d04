#!/usr/bin/env python3
"""Appends one JSON line describing the machine and the commit to a results file.

usage: bench_machine.py RESULTS.jsonl [KEY=VALUE ...]
The line has "scenario": "machine", the CPU, cores, memory, kernel, date, commit (with +dirty
when the tree has changes) and the load average; each KEY=VALUE is added as a string.
"""
import datetime
import json
import os
import platform
import subprocess
import sys


def main():
    cpu = "?"
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "?"
    for line in open("/proc/meminfo", encoding="utf-8"):
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) // 1024} MiB RAM"
            break
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    line = {"scenario": "machine", "nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "mem": mem, "arch": platform.machine(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit + ("+dirty" if dirty else ""),
            "loadavg_start": open("/proc/loadavg", encoding="utf-8").read().split()[:3]}
    for pair in sys.argv[2:]:
        key, _, value = pair.partition("=")
        line[key] = value
    with open(sys.argv[1], "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
