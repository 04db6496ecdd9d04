#!/usr/bin/env python3
"""Idle resident memory of one wssed binary, native or under qemu-user; one JSON line.

    scripts/link_footprint.py --board B --link L --target T [--qemu QEMU [--cpu C] [--sysroot DIR]] BINARY

Starts BINARY (`--listen 127.0.0.1:0 --log-level warn`), waits for /health, lets it settle for
a second (as scripts/idle-footprint.sh does), reads /proc/PID/smaps, stops it; RUNS times (3),
a fresh process each, and prints the median run.

Native: the process's own Rss (VmRSS), split into the binary, C library files and anonymous
memory, with its Pss (shared pages divided among the processes mapping them) and private
(USS: what ending the process frees) totals beside it. Under qemu-user the process also holds qemu itself (its code, translated-code cache,
heap), so the guest's memory is measured on its own: qemu is given a reserved guest address
space (`-R`, logged with `-d page`) and only mappings inside it are summed. That is the
guest's binary, libraries, heap and stacks, as the board would hold them (same 4 KiB pages);
it is not a measurement on the board. qemu's total is reported beside it.

The process is ended by its process group id (its own session); 127.0.0.1 only.
"""

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

LIBC_RE = re.compile(r"/(libc\.so\.6|libc-[0-9.]+\.so|ld-linux[^/]*\.so(\.[0-9]+)*|libgcc_s\.so\.1|libm\.so\.6)$")
HEAD_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")


def smaps(pid, binary, lo=None, hi=None):
    """Rss per kind of mapping, plus the Pss and private (USS) totals, in KiB."""
    groups = {"binary": 0, "c_library": 0, "anonymous": 0, "other_files": 0}
    totals = {"pss": 0, "private": 0}
    name = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = HEAD_RE.match(line)
            if head:
                start = int(head.group(1), 16)
                path = head.group(3).strip()
                if lo is not None and not (lo <= start < hi):
                    name = None
                elif path == binary:
                    name = "binary"
                elif LIBC_RE.search(path):
                    name = "c_library"
                elif path.startswith("/"):
                    name = "other_files"
                else:
                    name = "anonymous"
                continue
            m = re.match(r"^(Rss|Pss|Private_Clean|Private_Dirty):\s+(\d+) kB", line)
            if m and name:
                if m.group(1) == "Rss":
                    groups[name] += int(m.group(2))
                elif m.group(1) == "Pss":
                    totals["pss"] += int(m.group(2))
                else:
                    totals["private"] += int(m.group(2))
    return groups, totals


def vm_rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def one_run(a, binary):
    log = tempfile.NamedTemporaryFile(delete=False)
    qlog = tempfile.NamedTemporaryFile(delete=False)
    cmd = []
    if a.qemu:
        cmd = [a.qemu]
        if a.cpu:
            cmd += ["-cpu", a.cpu]
        if a.reserve:
            cmd += ["-R", a.reserve]
        cmd += ["-d", "page", "-D", qlog.name]
        if a.sysroot:
            cmd += ["-L", a.sysroot, "-E", f"LD_LIBRARY_PATH={a.sysroot}/lib"]
    cmd += [binary, "--listen", "127.0.0.1:0", "--log-level", "info"]
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", open(log.name, errors="replace").read())
            if m:
                port = int(m.group(1))
            elif child.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"link_footprint: {binary} did not start: {open(log.name, errors='replace').read()}")
            else:
                time.sleep(0.05)
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"link_footprint: {binary}: no /health")
            time.sleep(0.1)
        time.sleep(1)
        result = {"process_rss_kib": vm_rss(child.pid)}
        if a.qemu:
            text = open(qlog.name, errors="replace").read()
            m = re.search(r"pgb_reserved_va: base @ (0x[0-9a-f]+|[0-9a-f]+) for (\d+) bytes", text)
            if not m:
                sys.exit(f"link_footprint: no guest address space in qemu's log:\n{text[:2000]}")
            lo = int(m.group(1), 16)
            hi = lo + int(m.group(2))
            g, totals = smaps(child.pid, os.path.realpath(binary), lo, hi)
            result.update({"guest_rss_kib": sum(g.values()), "guest": g,
                           "guest_pss_kib": totals["pss"], "guest_private_kib": totals["private"]})
        else:
            g, totals = smaps(child.pid, os.path.realpath(binary))
            result.update({"rss_kib": sum(g.values()), "by_mapping": g,
                           "pss_kib": totals["pss"], "private_kib": totals["private"]})
        return result
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        os.unlink(log.name)
        os.unlink(qlog.name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--board", required=True)
    p.add_argument("--link", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--qemu")
    p.add_argument("--cpu")
    p.add_argument("--sysroot")
    p.add_argument("--reserve", help="guest address space for qemu -R (64-bit guests)")
    p.add_argument("binary")
    a = p.parse_args()
    runs = [one_run(a, a.binary) for _ in range(int(os.environ.get("RUNS", "3")))]
    key = "guest_rss_kib" if a.qemu else "rss_kib"
    runs.sort(key=lambda r: r[key])
    median = runs[len(runs) // 2]
    out = {"scenario": "link_footprint", "board": a.board, "target": a.target, "link": a.link,
           "bytes": os.path.getsize(a.binary), "where": f"qemu-user {a.qemu} -cpu {a.cpu}" if a.qemu else "native",
           "runs": len(runs), key + "_all": [r[key] for r in runs]}
    out.update(median)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
