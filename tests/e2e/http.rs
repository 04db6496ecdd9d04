//! The HTTP/1.1 layer: keep-alive, pipelining, HTTP/1.0, bodies, framing errors, limits and
//! per-phase timeouts (docs/protocol.md §1.3, §2).

use serde_json::json;

use crate::common::*;

const PUSH: &str = r#"{"user_id":"nobody","data":{}}"#;

#[tokio::test]
async fn http_keep_alive_serves_many_requests() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    for _ in 0..5 {
        c.assert_usable().await;
        c.send(&post("/sse/push", PUSH)).await;
        c.read_response().await.assert_json(200);
    }
}

#[tokio::test]
async fn http_pipelined_requests_answered_in_order() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("pipe").await;
    let mut c = d.http().await;
    let mut bytes = get("/health");
    bytes.extend(get("/metrics"));
    for i in 0..3 {
        bytes.extend(post(
            "/sse/push",
            &json!({"user_id":"pipe","data":{"n":i}}).to_string(),
        ));
    }
    bytes.extend(get("/nope"));
    bytes.extend(get("/health"));
    c.send(&bytes).await;
    assert_eq!(
        c.read_response().await.assert_json(200)["status"],
        "healthy"
    );
    assert_eq!(
        c.read_response().await.assert_json(200)["service"],
        "websocket-sse-server"
    );
    for _ in 0..3 {
        assert_eq!(
            c.read_response().await.assert_json(200)["status"],
            "success"
        );
    }
    c.read_response().await.assert_detail(404);
    assert_eq!(
        c.read_response().await.assert_json(200)["status"],
        "healthy"
    );
    for i in 0..3 {
        assert_eq!(dev.recv_json().await["n"], i);
    }
}

#[tokio::test]
async fn http_request_split_into_single_bytes() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    for b in post("/sse/push", PUSH) {
        c.send(&[b]).await;
    }
    c.read_response().await.assert_json(200);
}

#[tokio::test]
async fn http10_closes_after_the_response() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    c.send(b"GET /health HTTP/1.0\r\n\r\n").await;
    let r = c.read_response().await;
    assert_eq!(r.version, 1, "responses always say HTTP/1.1");
    assert_eq!(r.assert_json(200)["status"], "healthy");
    c.expect_closed(step()).await;
}

#[tokio::test]
async fn http10_keep_alive_when_asked() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    for _ in 0..2 {
        c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let r = c.read_response().await;
        assert_eq!(r.assert_json(200)["status"], "healthy");
    }
    let body = PUSH;
    c.send(
        format!(
            "POST /sse/push HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    c.read_response().await.assert_json(200);
    c.expect_closed(step()).await;
}

#[tokio::test]
async fn http11_connection_close_is_honoured() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await;
    c.read_response().await.assert_json(200);
    c.expect_closed(step()).await;
}

#[tokio::test]
async fn http_expect_100_continue() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    c.send(
        format!(
            "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            PUSH.len()
        )
        .as_bytes(),
    )
    .await;
    let interim = c.read_head().await;
    assert_eq!(interim.status, 100, "{:?}", interim.headers);
    c.send(PUSH.as_bytes()).await;
    let r = c.read_response().await;
    assert_eq!(r.assert_json(200)["status"], "partial");
    c.assert_usable().await;
}

#[tokio::test]
async fn http_expect_100_over_the_limit_is_413_at_once() {
    let d = Daemon::start(&["--max-body-bytes", "100"]);
    let mut c = d.http().await;
    c.send(
        b"POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Expect: 100-continue\r\nContent-Length: 1000\r\n\r\n",
    )
    .await;
    let r = c.read_response().await;
    r.assert_detail(413);
    c.expect_closed(step()).await;
}

#[tokio::test]
async fn http_chunked_request_body() {
    let d = Daemon::start(&[]);
    let mut dev = d.device("ch").await;
    let body = r#"{"user_id":"ch","data":{"n":7}}"#;
    let (a, b) = body.split_at(10);
    let mut c = d.http().await;
    c.send(
        format!(
            "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:X}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(
        c.read_response().await.assert_json(200)["status"],
        "success"
    );
    assert_eq!(dev.recv_json().await["n"], 7);
    c.assert_usable().await;
}

#[tokio::test]
async fn http_chunked_request_with_extension_and_trailer() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    c.send(
        format!(
            "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x};name=value\r\n{PUSH}\r\n0\r\nX-Trailer: 1\r\n\r\n",
            PUSH.len()
        )
        .as_bytes(),
    )
    .await;
    c.read_response().await.assert_json(200);
    c.assert_usable().await;
}

#[tokio::test]
async fn http_smuggling_attempts_are_400_and_close() {
    let d = Daemon::start(&[]);
    let head = "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n";
    let n = PUSH.len();
    let cases = [
        format!("{head}Content-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n{PUSH}\r\n0\r\n\r\n"),
        format!("{head}Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n\r\n{n:x}\r\n{PUSH}\r\n0\r\n\r\n"),
        format!("{head}Content-Length: {n}\r\nContent-Length: {}\r\n\r\n{PUSH}", n + 1),
        format!("{head}Content-Length: {n}, {}\r\n\r\n{PUSH}", n + 1),
        format!("{head}Transfer-Encoding: gzip\r\n\r\n{PUSH}"),
        format!("{head}Transfer-Encoding: gzip, chunked\r\n\r\n{n:x}\r\n{PUSH}\r\n0\r\n\r\n"),
        format!("{head}Transfer-Encoding: identity\r\n\r\n{PUSH}"),
        format!("{head}Transfer-Encoding: chunked\r\n\r\nzz\r\n{PUSH}\r\n0\r\n\r\n"),
        format!("{head}Transfer-Encoding: chunked\r\n\r\n-5\r\n{PUSH}\r\n0\r\n\r\n"),
        format!("{head}Content-Length: abc\r\n\r\n{PUSH}"),
        format!("{head}Content-Length: -1\r\n\r\n{PUSH}"),
        format!("{head}Content-Length: +{n}\r\n\r\n{PUSH}"),
    ];
    for req in cases {
        let mut c = d.http().await;
        c.send(req.as_bytes()).await;
        let r = c.read_response().await;
        assert_eq!(r.status, 400, "for {req:?}: {}", r.text());
        r.assert_detail(400);
        assert!(
            c.closes_within(step()).await,
            "connection left open after {req:?}"
        );
    }
}

#[tokio::test]
async fn http_identical_content_lengths_count_as_one() {
    let d = Daemon::start(&[]);
    // The body `[1,2]` is 5 bytes: read whole, it is a well-framed 422 dict_type.
    for lengths in [
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "Content-Length: 5, 5\r\n",
    ] {
        let mut c = d.http().await;
        c.send(
            format!(
                "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{lengths}\r\n[1,2]"
            )
            .as_bytes(),
        )
        .await;
        assert_422_has(&c.read_response().await, json!(["body"]), "dict_type");
        c.assert_usable().await;
    }
}

#[tokio::test]
async fn http_414_before_431() {
    let d = Daemon::start(&[]);
    let long = format!("/health?x={}", "a".repeat(9000));
    let mut c = d.http().await;
    c.send(&get(&long)).await;
    c.read_response().await.assert_detail(414);
    c.expect_closed(step()).await;
    // With too many headers as well, the target is judged first.
    let mut req = format!("GET {long} HTTP/1.1\r\nHost: t\r\n");
    for i in 0..70 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let mut c = d.http().await;
    c.send(req.as_bytes()).await;
    c.read_response().await.assert_detail(414);
}

#[tokio::test]
async fn http_431_over_64_headers() {
    let d = Daemon::start(&[]);
    let with = |n: usize| {
        let mut req = "GET /health HTTP/1.1\r\nHost: t\r\n".to_string();
        for i in 1..n {
            req.push_str(&format!("X-H{i}: v\r\n"));
        }
        req.push_str("\r\n");
        req
    };
    let mut c = d.http().await;
    c.send(with(64).as_bytes()).await;
    assert_eq!(
        c.read_response().await.status,
        200,
        "64 headers are allowed"
    );
    c.send(with(65).as_bytes()).await;
    c.read_response().await.assert_detail(431);
    c.expect_closed(step()).await;
}

#[tokio::test]
async fn http_431_over_16k_head() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    let pad = "p".repeat(6000);
    c.send(
        format!(
            "GET /health HTTP/1.1\r\nHost: t\r\nX-A: {pad}\r\nX-B: {pad}\r\nX-C: {pad}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    c.read_response().await.assert_detail(431);
    c.expect_closed(step()).await;
}

#[tokio::test]
async fn http_505_for_other_versions() {
    let d = Daemon::start(&[]);
    for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9"] {
        let mut c = d.http().await;
        c.send(format!("GET /health {v}\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let r = c.read_response().await;
        assert_eq!(r.version, 1, "responses always say HTTP/1.1");
        r.assert_detail(505);
        c.expect_closed(step()).await;
    }
}

#[tokio::test]
async fn http_malformed_request_lines_are_400() {
    let d = Daemon::start(&[]);
    for req in [
        "GET /health\r\nHost: t\r\n\r\n",
        "GET\r\n\r\n",
        "GET /health HTTP/1.1 extra\r\nHost: t\r\n\r\n",
        "GET /health HTTP/1.1\r\nBad Header\r\n\r\n",
    ] {
        let mut c = d.http().await;
        c.send(req.as_bytes()).await;
        let r = c.read_response().await;
        r.assert_detail(400);
        assert!(c.closes_within(step()).await, "open after {req:?}");
    }
}

#[tokio::test]
async fn http_408_when_the_head_is_not_complete_in_time() {
    let d = Daemon::start(&["--header-timeout-secs", "1"]);
    let mut c = d.http().await;
    let started = tokio::time::Instant::now();
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n").await;
    let r = c.read_response().await;
    r.assert_detail(408);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    c.expect_closed(step()).await;
}

#[tokio::test]
async fn http_408_for_a_head_trickling_in() {
    // Bytes that keep coming do not extend the head's time (slowloris).
    let d = Daemon::start(&["--header-timeout-secs", "1"]);
    let mut c = d.http().await;
    let started = tokio::time::Instant::now();
    for b in b"GET /health HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if !c.try_send(&[*b]).await || c.closes_within(std::time::Duration::from_millis(100)).await
        {
            break;
        }
        assert!(started.elapsed() < t(5.0), "still reading a trickling head");
    }
    let r = c.read_response().await;
    r.assert_detail(408);
}

#[tokio::test]
async fn http_idle_keep_alive_closes_silently() {
    let d = Daemon::start(&["--idle-timeout-secs", "1"]);
    let mut c = d.http().await;
    c.assert_usable().await;
    c.expect_closed(t(4.0)).await;
    // Also a connection that never sent a byte.
    let mut c = d.http().await;
    c.expect_closed(t(4.0)).await;
}

#[tokio::test]
async fn http_missing_host_is_400_and_stays_open() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    c.send(b"GET /health HTTP/1.1\r\n\r\n").await;
    c.read_response().await.assert_detail(400);
    c.assert_usable().await;
    // HTTP/1.0 needs no Host.
    let r = d.request(b"GET /health HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn http_4xx_on_a_well_framed_request_keeps_the_connection() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    c.send(&post("/sse/push", "{}")).await;
    errors_422(&c.read_response().await);
    c.send(&get("/nope")).await;
    c.read_response().await.assert_detail(404);
    c.assert_usable().await;
}

#[tokio::test]
async fn http_options_204_with_allow() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    for (path, allow) in [
        ("/sse/push", "POST, OPTIONS"),
        ("/sse/push/batch", "POST, OPTIONS"),
        ("/sse/send", "POST, OPTIONS"),
        ("/health", "GET, HEAD, OPTIONS"),
        ("/metrics", "GET, HEAD, OPTIONS"),
    ] {
        c.send(format!("OPTIONS {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let r = c.read_response().await;
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(r.header("allow"), Some(allow), "{path}");
    }
    c.send(b"OPTIONS /nope HTTP/1.1\r\nHost: t\r\n\r\n").await;
    c.read_response().await.assert_detail(404);
    c.assert_usable().await;
}

#[tokio::test]
async fn http_head_carries_the_get_content_length() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    for path in ["/health", "/metrics"] {
        // Retry once: an uptime rolling over a power of ten changes the length.
        let mut same = false;
        for _ in 0..2 {
            c.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .await;
            let head = c.read_response_to(true).await;
            assert_eq!(head.status, 200);
            assert!(head
                .header("content-type")
                .unwrap_or("")
                .starts_with("application/json"));
            c.send(&get(path)).await;
            // A body sent after the HEAD answer would break this parse.
            let full = c.read_response().await;
            assert_eq!(full.status, 200);
            if head.header("content-length") == Some(full.body.len().to_string().as_str()) {
                same = true;
                break;
            }
        }
        assert!(same, "HEAD {path} Content-Length differs from GET's body");
    }
    assert!(c.buffered().is_empty(), "HEAD answered with a body");
}

#[tokio::test]
async fn http_error_bodies_are_json_with_detail() {
    let d = Daemon::start(&[]);
    for (req, status) in [
        (get("/nope"), 404),
        (get("/sse/push"), 405),
        (post_bytes("/sse/push", "text/plain", b"x"), 415),
    ] {
        let v = d.request(&req).await.assert_detail(status);
        assert!(v["detail"].is_string(), "{v}");
    }
}

#[tokio::test]
async fn http_header_names_and_chunked_are_case_insensitive() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    c.send(
        format!(
            "POST /sse/push HTTP/1.1\r\nhOsT: t\r\ncontent-type: Application/JSON\r\n\
             TRANSFER-ENCODING: Chunked\r\n\r\n{:x}\r\n{PUSH}\r\n0\r\n\r\n",
            PUSH.len()
        )
        .as_bytes(),
    )
    .await;
    c.read_response().await.assert_json(200);
    c.assert_usable().await;
}

#[tokio::test]
async fn http_head_on_error_answers_carries_no_body() {
    let d = Daemon::start(&[]);
    let mut c = d.http().await;
    c.send(b"HEAD /sse/push HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = c.read_response_to(true).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
    c.send(b"HEAD /nope HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.read_response_to(true).await.status, 404);
    // A body after either answer would break this parse.
    c.assert_usable().await;
}

#[tokio::test]
async fn http_deeply_nested_json_is_refused_without_harm() {
    let d = Daemon::start(&[]);
    let deep = format!(
        r#"{{"user_id":"x","data":{{"a":{}1{}}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let r = d.post("/sse/push", &deep).await;
    errors_422(&r);
    let r = d.post("/sse/push/batch", &"[".repeat(20_000)).await;
    errors_422(&r);
    assert_eq!(d.health().await["status"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_many_concurrent_connections() {
    let d = Daemon::start(&[]);
    let mut conns = Vec::new();
    for _ in 0..64 {
        conns.push(d.http().await);
    }
    // Every connection is open at once; each sends its request, then all are read.
    for c in &mut conns {
        c.send(&post("/sse/push", PUSH)).await;
    }
    for c in &mut conns {
        assert_eq!(
            c.read_response().await.assert_json(200)["status"],
            "partial"
        );
    }
}

#[tokio::test]
async fn http_client_leaving_mid_body_does_no_harm() {
    let d = Daemon::start(&[]);
    for _ in 0..10 {
        let mut c = d.http().await;
        c.send(
            b"POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"user_id\":",
        )
        .await;
    }
    assert_eq!(d.health().await["status"], "healthy");
}

// The decisions of docs/protocol.md §14, kept on the wire so they do not drift.

#[tokio::test]
async fn decision_json_suffix_content_types_are_json() {
    let d = Daemon::start(&[]);
    let r = d
        .request(&post_bytes(
            "/sse/push",
            "application/vnd.api+json",
            PUSH.as_bytes(),
        ))
        .await;
    r.assert_json(200);
}

#[tokio::test]
async fn decision_absolute_form_targets_are_served_by_path() {
    let d = Daemon::start(&[]);
    let r = d
        .request(b"GET http://t/health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    assert_eq!(r.assert_json(200)["status"], "healthy");
}

#[tokio::test]
async fn decision_a_stalled_body_is_408() {
    let d = Daemon::start(&["--body-timeout-secs", "1"]);
    let mut c = d.http().await;
    c.send(
        b"POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"user_id\":",
    )
    .await;
    c.read_response().await.assert_detail(408);
    c.expect_closed(step()).await;
}

#[tokio::test]
async fn decision_framing_oddities_are_400() {
    let d = Daemon::start(&[]);
    let n = PUSH.len();
    for req in [
        format!("POST /sse/push HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n{PUSH}\r\n0\r\n\r\n"),
        "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_string(),
        format!(
            "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Type: text/plain\r\nContent-Length: {n}\r\n\r\n{PUSH}"
        ),
    ] {
        let r = d.request(req.as_bytes()).await;
        assert_eq!(r.status, 400, "{req:?}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_connection_cap_answers_503_and_closes() {
    // Cap: max_connections + max_pending_sends + 256 = 258 open TCP connections.
    let d = Daemon::start(&["--max-connections", "1", "--max-pending-sends", "1"]);
    let mut held = Vec::new();
    for _ in 0..258 {
        held.push(d.http().await);
    }
    // The last held connection is served (it is within the cap).
    let last = held.last_mut().expect("held");
    last.assert_usable().await;
    let mut over = d.http().await;
    let r = over.read_response().await;
    r.assert_json(503);
    assert_eq!(r.header("retry-after"), Some("1"));
    over.expect_closed(step()).await;
    // Room again once connections go.
    held.truncate(200);
    wait_until(step(), "a freed slot serves again", || async {
        let mut c = d.http().await;
        c.send(&get("/health")).await;
        c.read_response().await.status == 200
    })
    .await;
}
