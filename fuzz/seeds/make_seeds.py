#!/usr/bin/env python3
"""Writes the hand-made seed corpora under fuzz/corpus/<target>/ (run from anywhere).

Seeds are real requests and bodies (the original API's examples), plus the edge cases the parsers'
documentation names. Regenerating is deterministic; fuzz-found inputs are not kept here.
"""
import json
import os
import struct
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


SEND = {
    "user_id": "test123",
    "data": {"message": "Hello from upstream!", "type": "request", "correlation_id": "req_123"},
    "event_type": "message",
    "timestamp": 1704067200,
}
PUSH = {
    "user_id": "test123",
    "data": {"message": "Hello from upstream!", "type": "notification", "correlation_id": "req_123"},
    "event_type": "message",
    "timestamp": 1704067200,
}
BATCH = [
    {"user_id": "user1", "data": {"msg": "msg1"}, "event_type": "message"},
    {"user_id": "user2", "data": {"msg": "msg2"}, "event_type": "message"},
]
MENTION = {
    "user_id": "user123",
    "data": {"message": "Please run tests on my branch @ci_bot", "correlation_id": "corr-123"},
}
WS_REPLY = {
    "type": "response",
    "data": {"message": "Hello from WebSocket client", "correlation_id": "req_123"},
    "correlation_id": "req_123",
}


def http_head():
    t = "http_head"
    body = json.dumps(PUSH, indent=2)
    write(t, "get_health", "GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
    write(t, "get_metrics_http10", "GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    write(t, "push_content_length",
          "POST /sse/push HTTP/1.1\r\nHost: gw:8000\r\nContent-Type: application/json\r\n"
          f"Content-Length: {len(body)}\r\n\r\n{body}")
    write(t, "send_chunked",
          "POST /sse/send HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json; charset=utf-8\r\n"
          "Transfer-Encoding: chunked\r\nAccept: text/event-stream\r\n\r\n"
          "4;ext=1\r\n{\"a\"\r\n3;q=\"x y\"\r\n:1}\r\n0\r\nX-Sum: 9\r\n\r\n")
    write(t, "pipeline",
          "POST /sse/push?via=chunked HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
          "Content-Type: application/json\r\n\r\n4;ext=1\r\n{\"a\"\r\n3;q=\"x y\"\r\n:1}\r\n0\r\n"
          "X-Sum: 9\r\n\r\nPOST /sse/push/batch HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n[]"
          "GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
    write(t, "ws_upgrade",
          "GET /ws?user_id=dev%201&token=ab HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
          "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          "Sec-WebSocket-Version: 13\r\nOrigin: http://lan\r\nAuthorization: Bearer t0k\r\n\r\n")
    write(t, "absolute_form", "GET HTTP://gw:8080/ws?user_id=a HTTP/1.1\r\nHost: gw\r\n\r\n")
    write(t, "options_star", "OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n")
    write(t, "bare_lf_and_empty_lines", "\r\n\nGET /health HTTP/1.1\nHost: gw\n\n")
    write(t, "expect_continue",
          "POST /sse/push HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}")
    write(t, "smuggle_cl_te",
          "POST /sse/push HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    write(t, "smuggle_te_list", "POST / HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
    write(t, "smuggle_cl_conflict",
          "POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!")
    write(t, "te_http10", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    write(t, "duplicate_host", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n")
    write(t, "obs_fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n")
    write(t, "space_before_colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n")
    write(t, "http2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    write(t, "http09", "GET /\r\n")
    write(t, "tls_hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    write(t, "body_too_large", "POST /sse/push HTTP/1.1\r\nHost: gw\r\nContent-Length: 257\r\n\r\n")
    write(t, "chunk_too_large",
          "POST /sse/push HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n101\r\n")
    many = "".join(f"X-H{i}: v\r\n" for i in range(64))
    write(t, "too_many_headers", f"GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")
    write(t, "long_target", "GET /" + "a" * 8192 + " HTTP/1.1\r\nHost: x\r\n\r\n")
    head = "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "
    head = head + "a" * (16 * 1024 - 4 - len(head)) + "\r\n\r\n"
    write(t, "head_at_limit", head)


def chunked():
    t = "chunked"
    write(t, "simple", "5\r\nhello\r\n0\r\n\r\n")
    write(t, "extensions_trailers",
          "5;name=value;flag\r\nhello\r\n1A \t;x=\"q s\"\r\nabcdefghijklmnopqrstuvwxyz\r\n000\r\n"
          "X-Checksum: abc\r\nX-Other:\r\n\r\nGET / HTTP/1.1\r\n")
    write(t, "json_body", "b\r\n{\"user_id\":\r\n13\r\n\"u\",\"data\":{\"a\":1}}\r\n0\r\n\r\n")
    write(t, "sixteen_zero_digits", "0000000000000000\r\n\r\n")
    write(t, "seventeen_digits", "00000000000000001\r\n")
    write(t, "huge_size", "FFFFFFFFFFFFFFFF\r\n")
    write(t, "bare_lf", "5\nhello\n0\n\n")
    write(t, "space_no_ext", "5 \r\nhello\r\n0\r\n\r\n")
    write(t, "missing_delimiter", "3\r\nabcd\r\n")
    write(t, "ctl_in_ext", "1;a\x00\r\nx\r\n0\r\n\r\n")
    write(t, "folded_trailer", "0\r\nX: a\r\n folded\r\n\r\n")
    write(t, "incomplete", "10\r\nonly part")
    write(t, "long_extension", "1;" + "a" * 1023 + "\r\nx\r\n0\r\n\r\n")
    write(t, "long_trailer", "0\r\nX: " + "a" * 4093 + "\r\n\r\n")


def envelope():
    t = "envelope"
    write(t, "send", json.dumps(SEND, indent=2))
    write(t, "push_compact", json.dumps(PUSH, separators=(",", ":")))
    write(t, "batch", json.dumps(BATCH, indent=2))
    write(t, "mention", json.dumps(MENTION))
    write(t, "ws_reply", json.dumps(WS_REPLY, indent=2))
    write(t, "final_response", '{"type":"final_response","data":{"correlation_id":"req_1"}}')
    write(t, "is_final", '{"correlation_id":"","is_final":true,"data":{"correlation_id":"c2"}}')
    write(t, "data_has_fields",
          '{"user_id":"u","data":{"user_id":"other","original_sender":{"x":1},"timestamp":"t"},'
          '"timestamp":1.5e3}')
    write(t, "empty_data", ' \t\r\n{"user_id":"u","data":{}} \n')
    write(t, "escaped_keys", '{"us\\u0065r_id":"\\u00e9\\ud83d\\ude00","d\\u0061ta":{"m\\u0065ssage":"\\"@x\\""}}')
    write(t, "duplicate_keys", '{"user_id":"a","user_id":"b","data":{"k":1,"k":2}}')
    write(t, "lone_surrogate", '{"user_id":"u","data":{"k":"\\ud800"},"event_id":"\\udc00"}')
    write(t, "big_number", '{"user_id":"u","data":{"n":1e400},"timestamp":-0.0E-7}')
    write(t, "nulls", '{"user_id":"u","data":{"correlation_id":"c"},"event_type":null,"event_id":null,"timestamp":null}')
    write(t, "errors", '{"user_id":"","data":[],"event_type":"a\\nb","event_id":"\\u0000","timestamp":"x"}')
    write(t, "control_user_id", '{"user_id":"a\\u007f","data":{"correlation_id":""}}')
    write(t, "long_user_id", json.dumps({"user_id": "é" * 33, "data": {}}))
    write(t, "batch_too_long", json.dumps([{"user_id": str(i), "data": {}} for i in range(9)]))
    write(t, "batch_mixed", '[{"user_id":"a","data":{}},1,{"data":{}}]')
    write(t, "batch_empty", "[]")
    write(t, "depth_128", "[" * 128 + "]" * 128)
    write(t, "depth_129", "[" * 129 + "]" * 129)
    write(t, "bom", b"\xef\xbb\xbf{}")
    write(t, "invalid_utf8", b'{"user_id":"\xff","data":{}}')
    write(t, "truncated", '{"user_id":"u","data":{"a":[1,2')
    write(t, "bad_literals", '[tru, nul, 01, 1., -, 1e, "\\x"]')


def mention():
    t = "mention"
    for i, s in enumerate([
        "Please run tests on my branch @ci_bot",
        "a@ci_bot then @deploy_bot",
        "@ci_bot_x and @CI_BOT and @ci_bot2",
        "é@ci_bot 日本@x語",
        "😀@x😀",
        "@@x",
        "mail a_@ci_bot, 9@x",
        "\n@Bot_2!",
        "@pub" + "a" * 61 + " @pub" + "b" * 60,
        "(@A9) hi,@_.",
        "@",
        "ci_bot@",
        "\"@x\" \\ \u0001",
    ]):
        write(t, f"text_{i:02}", s)


def sse():
    t = "sse"
    for i, s in enumerate([
        b'message\xff{"a":1}',
        b"\xffx\r\ny\rz\nw",
        b"e\xff\n\n",
        b"",
        b":colon first",
        b" leading space",
        b"x\r\ndata: evil\xff1",
        b"\r\n\r\n",
        b"a\n\rb",
        b"\nx\xffdata",
        b'{"error": "Timeout", "correlation_id": "req_1"}',
        "é".encode() + b"\xff" + "日本\u0000".encode(),
    ]):
        write(t, f"event_{i:02}", s)


def framer():
    """Byte streams of whole connections: pipelined requests, the way a client writes them."""
    t = "framer"
    push = json.dumps(PUSH, separators=(",", ":"))
    send = json.dumps(SEND, indent=2)
    batch = json.dumps(BATCH)

    def cl(path, body, extra="", version="1.1"):
        return (f"POST {path} HTTP/{version}\r\nHost: gw:8000\r\nContent-Type: application/json\r\n"
                f"{extra}Content-Length: {len(body.encode())}\r\n\r\n{body}")

    def chunked(path, chunks, trailers="", extra=""):
        out = (f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
               f"{extra}Transfer-Encoding: chunked\r\n\r\n")
        for data, ext in chunks:
            out += f"{len(data.encode()):x}{ext}\r\n{data}\r\n"
        return out + f"0\r\n{trailers}\r\n"

    get = "GET /health HTTP/1.1\r\nHost: gw\r\n\r\n"
    write(t, "pipeline_cl_chunked_get",
          chunked("/sse/push?via=chunked", [('{"a"', ";ext=1"), (":1}", ';q="x y"')], "X-Sum: 9\r\n")
          + cl("/sse/push/batch", "[]") + get)
    write(t, "push_batch_send", cl("/sse/push", push) + cl("/sse/push/batch", batch)
          + cl("/sse/send", send, "Accept: text/event-stream\r\n"))
    write(t, "chunked_json_split",
          chunked("/sse/push", [(push[:10], ""), (push[10:40], ";a;b=c"), (push[40:], ";n=\"q\\\"\"")],
                  "X-Checksum: 1\r\nX-Other:\tv\r\n") + get)
    write(t, "expect_continue_then_get",
          cl("/sse/push", push, "Expect: 100-continue\r\n") + get)
    write(t, "expect_continue_chunked",
          chunked("/sse/push", [(push, "")], extra="Expect: 100-continue\r\n") + get)
    write(t, "expect_continue_no_body",
          "GET /metrics HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\n\r\n" + get)
    write(t, "http10_keep_alive",
          cl("/sse/push", push, "Connection: keep-alive\r\n", "1.0")
          + "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /metrics HTTP/1.0\r\n\r\n")
    write(t, "zero_length_bodies", cl("/sse/push", "") + cl("/sse/push", "")
          + chunked("/sse/push", []) + get)
    write(t, "gets_keep_alive", get * 6 + "HEAD /health HTTP/1.1\r\nHost: gw\r\n\r\n"
          + "OPTIONS * HTTP/1.1\r\nHost: gw\r\n\r\n"
          + "GET /metrics?format=prometheus HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
    write(t, "push_then_ws_upgrade", (cl("/sse/push", push)
          + "GET /ws?user_id=dev1 HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\n"
          "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
          "Sec-WebSocket-Version: 13\r\n\r\n").encode() + b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58")
    write(t, "bare_lf_lines", "GET /health HTTP/1.1\nHost: gw\n\n"
          "POST /sse/push HTTP/1.1\nHost: gw\nContent-Length: 2\n\n{}" + get)
    write(t, "waiting_in_chunked_body",
          cl("/sse/push", "{}") + chunked("/sse/push", [(push, "")])[:-20])
    write(t, "waiting_in_length_body", get + cl("/sse/push", push)[:-7])
    write(t, "waiting_in_head", get + "POST /sse/push HTTP/1.1\r\nHost: g")
    write(t, "over_limit_length", cl("/sse/push", "x" * 300) + get)
    write(t, "over_limit_chunked", chunked("/sse/push", [("y" * 300, "")]) + get)
    write(t, "over_limit_expect", cl("/sse/push", "z" * 300, "Expect: 100-continue\r\n") + get)
    write(t, "smuggle_cl_te", "POST /sse/push HTTP/1.1\r\nHost: gw\r\nContent-Length: 6\r\n"
          "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: gw\r\n\r\n")
    write(t, "smuggle_cl_conflict", get + "POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n"
          "Content-Length: 3\r\n\r\nab" + get)
    write(t, "bad_chunk_size_mid_pipeline", get + chunked("/sse/push", [("ab", "")]).replace(
          "\r\n2\r\n", "\r\n2x\r\n") + get)
    write(t, "missing_chunk_delimiter", "POST /sse/push HTTP/1.1\r\nHost: gw\r\n"
          "Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n" + get)
    write(t, "bad_trailer", chunked("/sse/push", [("{}", "")], "Bad Trailer\r\n") + get)
    write(t, "te_http10", get + "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    write(t, "http09_after_request", get + "GET /\r\n" + get)
    write(t, "http2_after_request", cl("/sse/push", "{}") + "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    write(t, "head_too_large_second", get + "GET / HTTP/1.1\r\nX-Big: " + "a" * 16400 + "\r\n\r\n")
    many = "".join(f"X-{i}: {i}\r\n" for i in range(101))
    write(t, "too_many_headers_second", cl("/sse/push", "{}") + f"GET / HTTP/1.1\r\n{many}\r\n")
    write(t, "garbage_after_body", cl("/sse/push", "{}") + "\x16\x03\x01\x02\x00\x01\x00")


def mailbox_file():
    """State files of the offline mailbox (src/wire/mailbox_file.rs), good and damaged."""
    t = "mailbox_file"

    def file(records, version=1):
        b = b"WSSEDMBX" + struct.pack("<I", version)
        for user, dropped, msgs in records:
            u = user.encode()
            b += bytes([1, len(u)]) + u + struct.pack("<QI", dropped, len(msgs))
            for at, frame in msgs:
                f = frame.encode()
                b += struct.pack("<QI", at, len(f)) + f
        b += b"\x00"
        return b + struct.pack("<I", zlib.crc32(b))

    frame = ('{"n":1,"correlation_id":"c-1","user_id":"dev1",'
             '"original_sender":{"user_id":"dev1","timestamp":5}}')
    one = file([("dev1", 0, [(1767225600000, frame)])])
    write(t, "empty", file([]))
    write(t, "one_message", one)
    write(t, "c1_id_and_gap_only", file([("\u0085é \"x\"", 3, [(1, "{}"), (2, '{"a":"\\u0000"}')]),
                                         ("gone", 7, [])]))
    write(t, "longest_id", file([("x" * 64, 0, [(0, "{ }")] * 3)]))
    write(t, "version_2", file([], version=2))
    flipped = bytearray(one)
    flipped[20] ^= 1
    write(t, "checksum_mismatch", bytes(flipped))
    write(t, "truncated", one[:-3])
    write(t, "foreign", "#!/bin/sh\necho hello\n")


http_head()
chunked()
envelope()
mention()
sse()
framer()
mailbox_file()
