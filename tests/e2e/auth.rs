//! `api_token`, `ws_secret`, `allowed_origins` (docs/protocol.md §1.6, §8.2, §8.3) and the
//! Prometheus format of `/metrics` (§11.2).

use serde_json::json;

use crate::common::*;

const PUSH: &str = r#"{"user_id":"nobody","data":{}}"#;

fn push_with(auth: Option<&str>) -> Vec<u8> {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {}\r\n\r\n{PUSH}",
        PUSH.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn api_token_guards_sse_endpoints() {
    let d = Daemon::start(&["--api-token", "s3cret"]);
    let mut c = d.http().await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("s3cret"),
        Some("Basic s3cret"),
    ] {
        c.send(&push_with(auth)).await;
        c.read_response().await.assert_detail(401);
    }
    // A 401 on a well-framed request keeps the connection.
    c.send(&push_with(Some("Bearer s3cret"))).await;
    assert_eq!(
        c.read_response().await.assert_json(200)["status"],
        "partial"
    );
    for path in ["/sse/push/batch", "/sse/send"] {
        let r = d.post(path, "[]").await;
        r.assert_detail(401);
    }
    // Health and metrics stay open.
    assert_eq!(d.get("/health").await.status, 200);
    assert_eq!(d.get("/metrics").await.status, 200);
}

#[tokio::test]
async fn api_token_check_order_404_405_401_411() {
    let d = Daemon::start(&["--api-token", "s3cret"]);
    d.post("/nope", "{}").await.assert_detail(404);
    d.get("/sse/push").await.assert_detail(405);
    // 401 before 411 (no length), 413 and 415.
    let r = d
        .request(b"POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n\r\n")
        .await;
    r.assert_detail(401);
    let r = d
        .request(&post_bytes("/sse/push", "text/plain", b"x"))
        .await;
    r.assert_detail(401);
}

/// RFC 4231-style vector: HMAC-SHA256(key = "key", "The quick brown fox jumps over the lazy dog").
const FOX: &str = "The quick brown fox jumps over the lazy dog";
const FOX_MAC: &str = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";

#[tokio::test]
async fn ws_secret_requires_the_device_token() {
    let d = Daemon::start(&["--ws-secret", "key"]);
    let id = encode(FOX);
    for token in [
        "",
        "&token=00",
        "&token=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd9",
    ] {
        let r = d
            .request(&upgrade_request(&format!("user_id={id}{token}")))
            .await;
        r.assert_detail(401);
        assert!(r.header("sec-websocket-accept").is_none());
    }
    // Hex in either case.
    let mut lower = Device::connect(&d, &format!("user_id={id}&token={FOX_MAC}")).await;
    wait_until(step(), "device counted", || async {
        d.connections().await == 1
    })
    .await;
    d.push(&json!({"user_id": FOX, "data": {"n": 1}}))
        .await
        .assert_json(200);
    assert_eq!(lower.recv_json().await["n"], 1);
    lower.close().await;
    let upper = FOX_MAC.to_ascii_uppercase();
    let _upper = Device::connect(&d, &format!("user_id={id}&token={upper}")).await;
    wait_until(step(), "device counted", || async {
        d.connections().await == 1
    })
    .await;
}

#[tokio::test]
async fn ws_checks_run_426_400_403_401() {
    let d = Daemon::start(&["--ws-secret", "key", "--allowed-origins", "http://ok.lan"]);
    // Not an upgrade, even with everything else wrong: 426.
    d.get("/ws?token=zz").await.assert_detail(426);
    // No user_id, bad origin, no token: 400.
    let bad_origin = |q: &str| {
        format!(
            "GET /ws?{q} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Origin: http://evil.lan\r\n\r\n"
        )
    };
    d.request(bad_origin("x=1").as_bytes())
        .await
        .assert_detail(400);
    // Bad origin and no token: 403.
    d.request(bad_origin("user_id=a").as_bytes())
        .await
        .assert_detail(403);
    // Good origin (or none), no token: 401.
    d.request(&upgrade_request("user_id=a"))
        .await
        .assert_detail(401);
}

#[tokio::test]
async fn allowed_origins_refuse_unlisted_origins() {
    let d = Daemon::start(&["--allowed-origins", "http://ok.lan,https://also.lan"]);
    let with_origin = |origin: &str, user: &str| {
        format!(
            "GET /ws?user_id={user} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Origin: {origin}\r\n\r\n"
        )
    };
    let r = d
        .request(with_origin("http://evil.lan", "a").as_bytes())
        .await;
    r.assert_detail(403);
    let mut kept = Vec::new();
    for (origin, user) in [("http://ok.lan", "b"), ("https://also.lan", "c")] {
        let mut c = d.http().await;
        c.send(with_origin(origin, user).as_bytes()).await;
        assert_eq!(c.read_head().await.status, 101, "{origin}");
        kept.push(c);
    }
    // No Origin at all (not a browser) passes.
    let _dev = d.device("d").await;
    assert_eq!(d.connections().await, 3);
}

#[tokio::test]
async fn metrics_in_prometheus_text_when_asked() {
    let d = Daemon::start(&[]);
    let _dev = d.device("m1").await;
    let requests = [
        get("/metrics?format=prometheus"),
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nAccept: text/plain\r\n\r\n".to_vec(),
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n"
            .to_vec(),
    ];
    for req in requests {
        let r = d.request(&req).await;
        assert_eq!(r.status, 200);
        let ct = r.header("content-type").unwrap_or("");
        assert!(ct.starts_with("text/plain"), "Content-Type {ct}");
        let text = r.text();
        // Every sample line is `name[{labels}] value`; every family has a TYPE.
        assert!(text.contains("# TYPE "), "{text}");
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let value = line.rsplit(' ').next().unwrap_or("");
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
        assert!(
            text.lines().any(|l| l == "wssed_devices_connected 1"),
            "devices gauge: {text}"
        );
    }
    // JSON stays the default.
    let v = d.get("/metrics").await.assert_json(200);
    assert_eq!(v["active_connections"], 1);
}
