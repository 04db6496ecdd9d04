//! CORS (docs/protocol.md §17): off it changes nothing; listed origins get preflights and the
//! allow fields on every answer, streams included; other origins get none and are counted and
//! logged, as are WebSocket upgrades refused by `allowed_origins`.

use serde_json::json;

use crate::common::*;

const PAGE: &str = "http://page.lan:8123";

/// `METHOD path` with `Origin` and the extra lines `more` (each ending in CRLF), and a JSON
/// body when `body` is given.
fn with_origin(method: &str, path: &str, origin: &str, more: &str, body: Option<&str>) -> Vec<u8> {
    let body_lines = body
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            )
        })
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: gw:8080\r\nOrigin: {origin}\r\n{more}{body_lines}\r\n{}",
        body.unwrap_or("")
    )
    .into_bytes()
}

fn preflight(path: &str, origin: &str) -> Vec<u8> {
    with_origin(
        "OPTIONS",
        path,
        origin,
        "Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: authorization, content-type\r\n",
        None,
    )
}

/// The `Access-Control-*` and `Vary` fields of an answer, in order.
fn cors_fields(r: &Response) -> Vec<(String, String)> {
    r.headers
        .iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k.starts_with("access-control-") || k == "vary"
        })
        .map(|(k, v)| (k.clone(), v.trim().to_owned()))
        .collect()
}

fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn allowed(origin: &str) -> Vec<(String, String)> {
    fields(&[
        ("Access-Control-Allow-Origin", origin),
        (
            "Access-Control-Expose-Headers",
            "Retry-After, WWW-Authenticate",
        ),
        ("Vary", "Origin"),
    ])
}

async fn refused(d: &Daemon) -> (u64, u64) {
    let v = d.get("/metrics").await.assert_json(200);
    let n = |check: &str| v["origins_refused"][check].as_u64().expect("a count");
    (n("cors"), n("websocket"))
}

#[tokio::test]
async fn without_cors_answers_are_as_before_and_foreign_origins_are_counted() {
    let d = Daemon::start(&[]);
    let r = d.request(&preflight("/sse/push", PAGE)).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.headers,
        fields(&[("Allow", "POST, OPTIONS")]),
        "an OPTIONS answer exactly as before"
    );
    let r = d
        .request(&with_origin("GET", "/health", PAGE, "", None))
        .await;
    r.assert_json(200);
    assert!(cors_fields(&r).is_empty(), "{:?}", r.headers);
    // A page the daemon served itself (its Origin names the Host) is not refused.
    let r = d
        .request(&with_origin("GET", "/health", "http://gw:8080", "", None))
        .await;
    r.assert_json(200);
    assert_eq!(refused(&d).await, (2, 0));
}

#[tokio::test]
async fn a_listed_origin_gets_preflights_and_the_allow_fields_on_every_answer() {
    let d = Daemon::start(&[
        "--cors-allowed-origins",
        &format!("https://other.lan,{PAGE}"),
        "--api-token",
        "tok",
    ]);
    for (path, methods) in [
        ("/sse/push", "POST, OPTIONS"),
        ("/sse/push/batch", "POST, OPTIONS"),
        ("/sse/send", "POST, OPTIONS"),
        ("/health", "GET, HEAD, OPTIONS"),
        ("/metrics", "GET, HEAD, OPTIONS"),
        ("/devices", "GET, HEAD, OPTIONS"),
    ] {
        // Preflights carry no token and need none.
        let r = d.request(&preflight(path, PAGE)).await;
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(r.header("allow"), Some(methods), "{path}");
        assert_eq!(
            cors_fields(&r),
            fields(&[
                ("Access-Control-Allow-Origin", PAGE),
                ("Access-Control-Allow-Methods", methods),
                (
                    "Access-Control-Allow-Headers",
                    "Authorization, Content-Type"
                ),
                ("Access-Control-Max-Age", "600"),
                ("Vary", "Origin"),
            ]),
            "{path}"
        );
        assert!(r.body.is_empty());
    }
    let body = r#"{"user_id":"nobody","data":{}}"#;
    let auth = "Authorization: Bearer tok\r\n";
    let r = d
        .request(&with_origin("POST", "/sse/push", PAGE, auth, Some(body)))
        .await;
    assert_eq!(r.assert_json(200)["status"], "partial");
    assert_eq!(cors_fields(&r), allowed(PAGE));
    // Refusals carry them too, so the page can read why (here: no token).
    let r = d
        .request(&with_origin("POST", "/sse/push", PAGE, "", Some(body)))
        .await;
    r.assert_detail(401);
    assert_eq!(cors_fields(&r), allowed(PAGE));
    // The CSRF guard stays: a body that is not JSON is refused, listed origin or not.
    let mut text_body = with_origin("POST", "/sse/push", PAGE, auth, None);
    text_body.truncate(text_body.len() - 2);
    text_body.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: 1\r\n\r\nx");
    let r = d.request(&text_body).await;
    r.assert_detail(415);
    assert_eq!(cors_fields(&r), allowed(PAGE));
    // Origins compare ASCII case-insensitively; the answer names the origin as sent.
    let loud = "HTTP://PAGE.LAN:8123";
    let r = d
        .request(&with_origin("GET", "/health", loud, "", None))
        .await;
    assert_eq!(cors_fields(&r), allowed(loud));
    // HEAD and 404 answers too.
    let mut c = d.http().await;
    c.send(&with_origin("HEAD", "/metrics", PAGE, "", None))
        .await;
    let r = c.read_response_to(true).await;
    assert_eq!((r.status, cors_fields(&r)), (200, allowed(PAGE)));
    let r = d
        .request(&with_origin("GET", "/nope", PAGE, "", None))
        .await;
    assert_eq!((r.status, cors_fields(&r)), (404, allowed(PAGE)));
    assert_eq!(refused(&d).await, (0, 0));
}

#[tokio::test]
async fn streams_carry_the_allow_fields_in_their_head() {
    let d = Daemon::start(&["--cors-allowed-origins", PAGE]);
    let mut dev = d.device("dev1").await;
    let body = json!({"user_id": "dev1", "data": {"correlation_id": "c-cors"}}).to_string();
    let mut c = d.http().await;
    c.send(&with_origin("POST", "/sse/send", PAGE, "", Some(&body)))
        .await;
    let mut stream = SseStream::open(c).await;
    stream.assert_stream_head();
    assert_eq!(cors_fields(&stream.head), allowed(PAGE));
    assert_eq!(dev.recv_json().await["correlation_id"], "c-cors");
    dev.send_text(r#"{"correlation_id":"c-cors","is_final":true,"n":1}"#)
        .await;
    assert_eq!(stream.next_event(step()).await.json()["n"], 1);
    stream.expect_end(step()).await;
    // The one-event stream of a send to nobody, too.
    let body = json!({"user_id": "nobody", "data": {"correlation_id": "c-nc"}}).to_string();
    let mut c = d.http().await;
    c.send(&with_origin("POST", "/sse/send", PAGE, "", Some(&body)))
        .await;
    let mut stream = SseStream::open(c).await;
    assert_eq!(cors_fields(&stream.head), allowed(PAGE));
    stream
        .expect_error_end("User not connected", "c-nc", step())
        .await;
}

#[tokio::test]
async fn fields_belong_to_one_answer_on_a_kept_connection() {
    let d = Daemon::start(&["--cors-allowed-origins", PAGE]);
    let mut c = d.http().await;
    let mut pipelined = with_origin("GET", "/health", PAGE, "", None);
    pipelined.extend_from_slice(&get("/health"));
    pipelined.extend_from_slice(&with_origin("OPTIONS", "/sse/send", PAGE, "", None));
    pipelined.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n");
    c.send(&pipelined).await;
    assert_eq!(cors_fields(&c.read_response().await), allowed(PAGE));
    // No Origin: not a browser's cross-origin request, nothing added.
    assert!(cors_fields(&c.read_response().await).is_empty());
    assert_eq!(c.read_response().await.status, 204);
    // A head the parser refuses has no origin to answer to.
    let r = c.read_response().await;
    assert_eq!(r.status, 400);
    assert!(cors_fields(&r).is_empty(), "{:?}", r.headers);
}

#[tokio::test]
async fn unlisted_origins_get_no_allow_field_and_are_counted_and_logged_sparingly() {
    let d = Daemon::start(&[
        "--cors-allowed-origins",
        PAGE,
        "--allowed-origins",
        "http://devices.lan",
        "--log-level",
        "debug",
    ]);
    let evil = "http://evil.lan";
    let first = std::time::Instant::now();
    let r = d.request(&preflight("/sse/push", evil)).await;
    assert_eq!(r.status, 204);
    // Vary only: the answer depends on Origin, and this one allows nothing.
    assert_eq!(cors_fields(&r), fields(&[("Vary", "Origin")]));
    let body = r#"{"user_id":"nobody","data":{}}"#;
    for _ in 0..3 {
        let r = d
            .request(&with_origin("POST", "/sse/push", evil, "", Some(body)))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(cors_fields(&r), fields(&[("Vary", "Origin")]));
    }
    // A WebSocket upgrade from a page of an origin allowed_origins does not list.
    let upgrade = |origin: &str| {
        let mut req = upgrade_request("user_id=w1");
        req.truncate(req.len() - 2);
        req.extend_from_slice(format!("Origin: {origin}\r\n\r\n").as_bytes());
        req
    };
    let r = d.request(&upgrade(evil)).await;
    r.assert_detail(403);
    assert!(
        cors_fields(&r).is_empty(),
        "no CORS on /ws: {:?}",
        r.headers
    );
    // A listed CORS origin is no device origin: /ws has its own list.
    d.request(&upgrade(PAGE)).await.assert_detail(403);
    let spread = first.elapsed();
    assert_eq!(refused(&d).await, (4, 2));
    let r = d.get("/metrics?format=prometheus").await;
    let text = r.text();
    for line in [
        "wssed_origins_refused_total{check=\"cors\"} 4",
        "wssed_origins_refused_total{check=\"websocket\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    // Six refusals within the 10 s interval: one debug line, naming the first origin. (On a
    // target slow enough to spread them wider, a few lines, never one per refusal.)
    wait_until(step(), "the refusal is logged", || async {
        d.log_text().contains("refused")
    })
    .await;
    let log = d.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("refused:")).collect();
    if spread < std::time::Duration::from_secs(9) {
        assert_eq!(lines.len(), 1, "{log}");
    } else {
        assert!(!lines.is_empty() && lines.len() < 6, "{log}");
    }
    assert!(
        lines[0].contains("DEBUG") && lines[0].contains("Origin http://evil.lan refused"),
        "{log}"
    );
}

#[tokio::test]
async fn a_refused_origin_is_logged_escaped_on_one_line() {
    let d = Daemon::start(&["--log-level", "debug"]);
    let r = d
        .request(b"GET /health HTTP/1.1\r\nHost: t\r\nOrigin: http://a\"\xff.lan\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    wait_until(step(), "the refusal is logged", || async {
        d.log_text().contains("refused")
    })
    .await;
    let log = d.log_text();
    assert!(
        log.contains(r#"Origin http://a\"\xff.lan refused"#),
        "{log}"
    );
}
