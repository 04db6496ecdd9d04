#!/usr/bin/env python3
"""Runs a test command so that a hung binary fails it within a minute.

    scripts/bounded-suite.py --total SECONDS -- cargo test ... -- --nocapture ...

The test binary is libtest's: with `--nocapture` a failing test's panic message (and the
harness's dump of the daemon's output) is printed when it happens, so the run can stop there:

- the first `test NAME ... FAILED` ends the run (every harness wait is bounded, so a hung daemon
  makes the test that meets it fail within its bound, 40 s at most under qemu);
- a test still running after 60 s (libtest's own `has been running for over 60 seconds`
  notice) ends the run: no test of the suite needs that long, even emulated;
- the whole command ends after --total seconds.

The command runs in a session of its own; ending the run kills that session's process group
(cargo, the test binary, the daemons and qemu processes it started), by its id, nothing else.
Exit status: the command's own, or 1 when the run was ended here.
"""

import os
import re
import selectors
import signal
import subprocess
import sys
import time

FAILED_RE = re.compile(r"^test (\S+) \.\.\. FAILED")
SLOW_RE = re.compile(r"^test (\S+) has been running for over 60 seconds")


def main():
    args = sys.argv[1:]
    if len(args) < 4 or args[0] != "--total" or args[2] != "--":
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        sys.exit(2)
    total = float(args[1])
    cmd = args[3:]
    started = time.monotonic()
    child = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sel = selectors.DefaultSelector()
    sel.register(child.stdout, selectors.EVENT_READ)
    pending = b""
    reason = None
    while reason is None:
        left = started + total - time.monotonic()
        if left <= 0:
            reason = f"the run took over {total:g} s"
            break
        if not sel.select(timeout=min(left, 1.0)):
            continue
        chunk = os.read(child.stdout.fileno(), 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            print(line, flush=True)
            m = FAILED_RE.match(line)
            if m:
                reason = f"test {m.group(1)} failed (its message is above)"
                break
            m = SLOW_RE.match(line)
            if m:
                reason = f"test {m.group(1)} ran for over 60 s: a hung binary, or a test too slow for emulation"
                break
    if reason is None:
        if pending:
            print(pending.decode("utf-8", "replace"), flush=True)
        sys.exit(child.wait())
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()
    print(f"suite: FAIL after {time.monotonic() - started:.0f} s: {reason}; stopped the run", flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main()
