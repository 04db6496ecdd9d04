//! The status page at `/` and `/devices` (docs/protocol.md §18): off, `/` is the 404 it always
//! was; on, one embedded HTML file; device ids only for a viewer with the `api_token`.

use crate::common::*;

fn with_auth(method: &str, path: &str, auth: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn without_the_page_slash_is_the_404_it_always_was() {
    let d = Daemon::start(&[]);
    for method in ["GET", "HEAD", "OPTIONS", "POST"] {
        let mut c = d.http().await;
        let req = format!("{method} / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
        c.send(req.as_bytes()).await;
        let r = c.read_response_to(method == "HEAD").await;
        assert_eq!(r.status, 404, "{method} /");
        assert_eq!(r.header("content-length"), Some("22"), "{method} /");
        assert_eq!(r.headers.len(), 2, "{method} /: {:?}", r.headers);
    }
    d.get("/").await.assert_detail(404);
}

#[tokio::test]
async fn the_page_is_one_embedded_file_with_a_strict_policy() {
    let d = Daemon::start(&["--status-page", "true"]);
    let r = d.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    let csp = r.header("content-security-policy").unwrap_or_default();
    for part in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "script-src 'sha256-",
    ] {
        assert!(csp.contains(part), "{part} in {csp}");
    }
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let html = r.text();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains("<title>wssed status</title>"));
    assert!(html.contains("name=\"viewport\""), "readable on a phone");
    assert!(r.body.len() < 16 * 1024, "{} bytes", r.body.len());
    // HEAD: the same head, no body.
    let mut c = d.http().await;
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let head = c.read_response_to(true).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), r.header("content-length"));
    assert!(head.body.is_empty());
    c.assert_usable().await;
    let r = d.request(b"OPTIONS / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(
        (r.status, r.header("allow")),
        (204, Some("GET, HEAD, OPTIONS"))
    );
    d.post("/", "{}").await.assert_detail(405);
    // Only `/` itself.
    d.get("/index.html").await.assert_detail(404);
}

#[tokio::test]
async fn device_ids_are_never_shown_without_an_api_token() {
    let d = Daemon::start(&["--status-page", "true"]);
    let _dev = d.device("dev1").await;
    for req in [
        get("/devices"),
        with_auth("GET", "/devices", "Bearer anything"),
    ] {
        let v = d.request(&req).await.assert_detail(403);
        assert_eq!(v["detail"], "The device list needs api_token to be set");
    }
    // The counts stay public, as /health and /metrics always were.
    assert_eq!(d.connections().await, 1);
}

async fn list(d: &Daemon) -> serde_json::Value {
    d.request(&with_auth("GET", "/devices", "bearer  tok "))
        .await
        .assert_json(200)
}

#[tokio::test]
async fn device_ids_need_the_bearer_token_and_come_sorted() {
    let d = Daemon::start(&["--api-token", "tok"]);
    for req in [
        get("/devices"),
        with_auth("GET", "/devices", "Bearer nope"),
        with_auth("HEAD", "/devices", "Bearer nope"),
    ] {
        let mut c = d.http().await;
        c.send(&req).await;
        let r = c.read_response_to(req.starts_with(b"HEAD")).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    let v = list(&d).await;
    assert_eq!(
        v,
        serde_json::json!({"count": 0, "devices": [], "truncated": false})
    );
    let _b = d.device("b").await;
    let _a = d.device("a").await;
    let _e = d.device("é \"q\"").await;
    let v = list(&d).await;
    assert_eq!(
        v,
        serde_json::json!({"count": 3, "devices": ["a", "b", "é \"q\""], "truncated": false})
    );
    let full = d.request(&with_auth("GET", "/devices", "Bearer tok")).await;
    assert_eq!(full.header("cache-control"), Some("no-store"));
    let mut c = d.http().await;
    c.send(&with_auth("HEAD", "/devices", "Bearer tok")).await;
    let head = c.read_response_to(true).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), full.header("content-length"));
    assert!(head.body.is_empty());
}
