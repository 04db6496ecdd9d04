#!/usr/bin/env python3
"""System calls per push, counted natively by the kernel (issue 15's first figure).

    scripts/syscalls-per-push.py [--bin target/release/wssed] [--pushes 2000] [--port 18950]

Starts the daemon on 127.0.0.1, one raw WebSocket device and one keep-alive upstream; 200
warm-up pushes, then `perf stat -e raw_syscalls:sys_enter -p PID` counts every system call the
whole daemon makes while PUSHES sequential pushes are made (each waits for its `success` and for
its frame at the device). Prints one JSON line with the commit, the machine and the load
average. With STRACE=1 it prints `strace -f -c`'s table (which calls) instead. The daemon is
ended by its PID; every wait is bounded.
"""
import argparse, base64, json, os, platform, socket, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/wssed")
ap.add_argument("--pushes", type=int, default=2000)
ap.add_argument("--port", type=int, default=18950)
a = ap.parse_args()
daemon = subprocess.Popen([a.bin, "--listen", f"127.0.0.1:{a.port}", "--log-level", "warn"])
try:
    deadline = time.time() + 10
    while True:
        try:
            dev = socket.create_connection(("127.0.0.1", a.port), timeout=10)
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("syscalls-per-push: the daemon never listened")
            time.sleep(0.05)
    key = base64.b64encode(os.urandom(16)).decode()
    dev.sendall((f"GET /ws?user_id=bench HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += dev.recv(4096)
    up = socket.create_connection(("127.0.0.1", a.port), timeout=10)
    up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = json.dumps({"user_id": "bench", "data": {"message": "hello", "n": 1}})
    req = (f"POST /sse/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n{body}").encode()

    def push():
        up.sendall(req)
        answer = b""
        while b'"success"' not in answer:
            chunk = up.recv(4096)
            if not chunk:
                sys.exit(f"syscalls-per-push: answer cut short: {answer!r}")
            answer += chunk
        dev.recv(65536)

    for _ in range(200):
        push()
    strace = bool(os.environ.get("STRACE"))
    cmd = (["strace", "-f", "-c", "-p", str(daemon.pid)] if strace else
           ["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p", str(daemon.pid)])
    counter = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    started = time.time()
    for _ in range(a.pushes):
        push()
    secs = time.time() - started
    counter.send_signal(2)
    out = counter.communicate(timeout=30)[1]
    if strace:
        print(out)
        sys.exit(0)
    calls = int(out.strip().splitlines()[-1].split(",")[0])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(json.dumps({"scenario": "syscalls_per_push_sequential", "commit": commit,
                      "machine": platform.node(), "cores": os.cpu_count(),
                      "loadavg_1min": os.getloadavg()[0], "pushes": a.pushes,
                      "syscalls": calls, "per_push": round(calls / a.pushes, 2),
                      "push_phase_secs": round(secs, 2)}))
finally:
    daemon.terminate()
    daemon.wait(timeout=10)
