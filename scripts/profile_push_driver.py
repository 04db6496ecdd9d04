#!/usr/bin/env python3
"""Drives a wssed running under callgrind so that one dump holds exactly N pushes.

    profile_push_driver.py --port PORT --pid PID --warmup W --pushes N --out-dir DIR

One WebSocket device (raw socket, this process) and one keep-alive upstream connection, both on
127.0.0.1. W warm-up pushes, then `callgrind_control --zero`, then N pushes (each waits for its
`success` answer and for the frame to reach the device), then `callgrind_control --dump=push`.
Then the counters are zeroed again and, after an idle pause as long as the push phase, dumped as
`idle`: what the server spends with nothing to do (timers), to show it is not part of the figure.
With --away no device connects: each push must be answered `partial` with `"queued":true` (the
offline mailbox keeps it; the daemon needs --mailbox-messages). Prints one JSON line. Every wait
is bounded.
"""

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

DEADLINE_SECS = 600
USER = "bench"


def fail(msg):
    print(f"profile_push_driver: {msg}", file=sys.stderr)
    sys.exit(1)


def recv_until(sock, marker, limit=65536):
    buf = b""
    while marker not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            fail(f"connection closed before {marker!r}: {buf[:200]!r}")
        buf += chunk
        if len(buf) > limit:
            fail("response head too large")
    return buf


class Device:
    """A WebSocket client that counts text frames (server frames are unmasked)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws?user_id={USER} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = recv_until(self.sock, b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            fail(f"handshake refused: {head[:200]!r}")
        self.buf = head.split(b"\r\n\r\n", 1)[1]
        self.frames = 0
        self.cond = threading.Condition()
        self.closed = False
        threading.Thread(target=self.run, daemon=True).start()

    def need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def run(self):
        try:
            while True:
                self.need(2)
                b0, b1 = self.buf[0], self.buf[1]
                ln, off = b1 & 0x7F, 2
                if ln == 126:
                    self.need(4)
                    ln, off = struct.unpack(">H", self.buf[2:4])[0], 4
                elif ln == 127:
                    self.need(10)
                    ln, off = struct.unpack(">Q", self.buf[2:10])[0], 10
                self.need(off + ln)
                payload = self.buf[off : off + ln]
                self.buf = self.buf[off + ln :]
                op = b0 & 0x0F
                if op == 0x9:  # ping: answer with a masked pong
                    mask = os.urandom(4)
                    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
                    self.sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
                elif op == 0x1:
                    with self.cond:
                        self.frames += 1
                        self.cond.notify_all()
                elif op == 0x8:
                    raise EOFError
        except (EOFError, OSError):
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def wait_frames(self, n, deadline):
        with self.cond:
            while self.frames < n and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return self.frames


class Upstream:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = port
        self.buf = b""

    def push(self, seq, away=False):
        body = json.dumps(
            {"user_id": USER, "data": {"ts": time.monotonic_ns(), "seq": seq}},
            separators=(",", ":"),
        ).encode()
        req = (
            f"POST /sse/push HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.sock.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                fail("upstream closed")
            self.buf += chunk
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        while len(rest) < length:
            chunk = self.sock.recv(4096)
            if not chunk:
                fail("upstream closed mid-body")
            rest += chunk
        body, self.buf = rest[:length], rest[length:]
        want = b'"queued":true' if away else b'"success"'
        if not head.startswith(b"HTTP/1.1 200") or want not in body:
            fail(f"push {seq} not {'kept' if away else 'delivered'}: {head[:80]!r} {body[:200]!r}")


def control(args, *flags):
    subprocess.run(
        ["callgrind_control", *flags, str(args.pid)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--pushes", type=int, default=2000)
    p.add_argument("--away", action="store_true", help="no device: every push is kept")
    args = p.parse_args()
    if not (1 <= args.pushes <= 100_000 and 0 <= args.warmup <= 100_000):
        fail("--pushes must be 1..100000, --warmup 0..100000")
    deadline = time.monotonic() + DEADLINE_SECS

    device = None if args.away else Device(args.port)
    upstream = Upstream(args.port)
    seq = 0
    for _ in range(args.warmup):
        upstream.push(seq, args.away)
        seq += 1
    if device and device.wait_frames(seq, deadline) < seq:
        fail("warm-up frames did not all arrive")

    control(args, "--zero")
    t0 = time.monotonic()
    for _ in range(args.pushes):
        if time.monotonic() > deadline:
            fail("deadline passed")
        upstream.push(seq, args.away)
        seq += 1
    got = device.wait_frames(seq, deadline) if device else 0
    push_secs = time.monotonic() - t0
    control(args, "--dump=push")
    if device and got < seq:
        fail(f"device received {got} of {seq} frames")

    # Same length of idle time, to show what timers cost while nothing happens.
    control(args, "--zero")
    time.sleep(min(push_secs, 60))
    control(args, "--dump=idle")

    print(
        json.dumps(
            {
                "warmup": args.warmup,
                "pushes": args.pushes,
                "frames_received": got,
                "push_phase_secs": round(push_secs, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
