#!/usr/bin/env python3
"""Start canary for a binary under emulation: start it, ask /health, stop it; all bounded.

    scripts/canary.py [--seconds N] [--libc none|DIR] COMMAND...

Runs `COMMAND --listen 127.0.0.1:0 --log-level info`, waits for its `listening on` line and a
200 from GET /health, within N seconds in all (default 20). On failure it prints one line that
says what did not happen, then the binary's output, and exits 1: a binary that hangs at start
(a libc mix-up, a wrong CPU model) fails here in seconds instead of in every e2e test.

While the binary runs, the C libraries it mapped are read from /proc/PID/maps (qemu-user maps
the guest's files into its own process): exactly one libc, or none with `--libc none` (a static
binary); with `--libc DIR`, only from DIR (the cross sysroot).

The binary runs in a session of its own and is ended by its process group id; nothing else is
signalled. Only 127.0.0.1 is contacted.
"""

import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

LIBC_RE = re.compile(r"/(libc\.so\.6|libc-[0-9.]+\.so|ld-linux[^/]*\.so(\.[0-9]+)*)$")


def usage():
    print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
    sys.exit(2)


def mapped_libcs(pid):
    """Distinct paths of libc and ld.so files mapped by PID."""
    paths = set()
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and LIBC_RE.search(parts[5].strip()):
                    paths.add(parts[5].strip())
    except OSError:
        pass
    return sorted(paths)


def libc_problem(paths, expect):
    """Why the mapped C libraries break the one-libc rule, or None."""
    libcs = [p for p in paths if "/libc" in p]
    loaders = [p for p in paths if "/ld-linux" in p]
    if expect == "none" and paths:
        return f"a static binary mapped C library files: {', '.join(paths)}"
    if len(libcs) > 1 or len(loaders) > 1:
        return f"more than one C library mapped: {', '.join(paths)}"
    if expect not in (None, "none"):
        root = expect.rstrip("/") + "/"
        outside = [p for p in paths if not p.startswith(root)]
        if outside:
            return f"C library files from outside {expect}: {', '.join(outside)}"
    return None


def main():
    args = sys.argv[1:]
    seconds, expect = 20.0, None
    while args and args[0].startswith("--"):
        if args[0] == "--seconds" and len(args) > 1:
            seconds, args = float(args[1]), args[2:]
        elif args[0] == "--libc" and len(args) > 1:
            expect, args = args[1], args[2:]
        else:
            usage()
    if not args:
        usage()
    what = " ".join(args)
    log = tempfile.TemporaryFile()
    started = time.monotonic()
    deadline = started + seconds
    child = subprocess.Popen(
        args + ["--listen", "127.0.0.1:0", "--log-level", "info"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def output():
        log.seek(0)
        return log.read().decode("utf-8", "replace")

    def fail(line):
        libs = mapped_libcs(child.pid)
        stop()
        print(f"canary: FAIL: {line}")
        if libs:
            print(f"canary: C library files mapped: {', '.join(libs)}")
        print("---- its output ----")
        print(output().rstrip())
        print("----")
        sys.exit(1)

    def stop():
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()

    addr = None
    while addr is None:
        m = re.search(r"listening on (127\.0\.0\.1):(\d+)", output())
        if m:
            addr = (m.group(1), int(m.group(2)))
            break
        if child.poll() is not None:
            fail(f"`{what}` exited ({child.returncode}) before listening")
        if time.monotonic() > deadline:
            fail(f"`{what}` did not say `listening on` within {seconds:g} s")
        time.sleep(0.05)

    status = None
    while status != 200:
        left = deadline - time.monotonic()
        if left <= 0:
            fail(f"`{what}` did not answer GET /health with 200 within {seconds:g} s (last: {status})")
        try:
            conn = http.client.HTTPConnection(addr[0], addr[1], timeout=min(left, 5.0))
            conn.request("GET", "/health")
            status = conn.getresponse().status
            conn.close()
        except OSError as e:
            status = f"{type(e).__name__}: {e}"
            time.sleep(0.1)
    took = time.monotonic() - started
    libs = mapped_libcs(child.pid)
    problem = libc_problem(libs, expect)
    if problem:
        fail(problem)
    stop()
    shown = ", ".join(libs) if libs else "none"
    print(f"canary: /health 200 after {took:.1f} s; C library files mapped: {shown}")


if __name__ == "__main__":
    main()
