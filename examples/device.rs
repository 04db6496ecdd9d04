//! A small device for trying a wssed gateway by hand.
//!
//! ```text
//! cargo run --example device -- --url ws://127.0.0.1:8080/ws --user-id dev1
//! ```
//!
//! It connects to `/ws?user_id=…`, prints every frame it gets, and answers every frame that
//! carries a `correlation_id` the way a device behind `/sse/send` does: one
//! `{"type":"response",…}` message, then one `{"is_final":true,…}` message that ends the stream.
//! When the gateway goes away it reconnects with capped exponential backoff, and gives up after
//! `--max-attempts` attempts in a row that did not give a stable session. Ctrl-C closes cleanly.

// Test and tool code: a failed unwrap or expect is a failed run, and test futures need not be
// small (the daemon's own are checked by clippy::large_futures).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::large_futures)]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const USAGE: &str = "usage: device --url ws://HOST:PORT/ws --user-id ID \
                     [--max-attempts N (10)] [--max-backoff-secs S (30)]";

/// The first reconnect waits this long; each further failure doubles it, up to the cap.
const FIRST_BACKOFF_MILLIS: u64 = 500;

/// A session that lasted this long counts as stable: the attempt counter starts again.
const STABLE_SESSION_SECS: u64 = 10;

/// Command-line settings.
struct Args {
    url: String,
    user_id: String,
    max_attempts: u32,
    max_backoff_secs: u64,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut url = None;
    let mut user_id = None;
    let mut max_attempts = 10;
    let mut max_backoff_secs = 30;
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--user-id" => user_id = Some(value()?),
            "--max-attempts" => max_attempts = number(&flag, &value()?)?,
            "--max-backoff-secs" => max_backoff_secs = number(&flag, &value()?)?,
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        url: url.ok_or("--url is required")?,
        user_id: user_id.ok_or("--user-id is required")?,
        max_attempts,
        max_backoff_secs,
    })
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} wants a whole number, not {v:?}"))
}

/// Percent-encodes a query value (everything outside `[A-Za-z0-9_.-]`).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why a session ended.
enum End {
    /// Ctrl-C: stop for good.
    Quit,
    /// The connection failed or closed: try again.
    Lost(String),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("device: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let sep = if args.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}user_id={}", args.url, encode(&args.user_id));
    let cap = Duration::from_secs(args.max_backoff_secs.max(1));

    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        match session(&url).await {
            End::Quit => return ExitCode::SUCCESS,
            End::Lost(why) => println!("-- disconnected: {why}"),
        }
        if started.elapsed() >= Duration::from_secs(STABLE_SESSION_SECS) {
            failures = 0;
        }
        failures += 1;
        if failures >= args.max_attempts {
            eprintln!("device: giving up after {failures} attempts");
            return ExitCode::FAILURE;
        }
        let delay = Duration::from_millis(FIRST_BACKOFF_MILLIS)
            .saturating_mul(1 << (failures - 1).min(16))
            .min(cap);
        println!("-- reconnecting in {delay:?} (attempt {failures})");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        }
    }
}

/// One connection: read frames, answer correlated ones, until it ends.
async fn session(url: &str) -> End {
    let ws = match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => ws,
        Err(e) => return End::Lost(format!("connect: {e}")),
    };
    println!("-- connected to {url}");
    let (mut tx, mut rx) = ws.split();
    loop {
        let msg = tokio::select! {
            m = rx.next() => m,
            _ = tokio::signal::ctrl_c() => {
                let _ = tx.send(Message::Close(None)).await;
                return End::Quit;
            }
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(frame))) => {
                return End::Lost(format!("closed by the gateway: {frame:?}"));
            }
            // Pings are answered by tungstenite itself; binary frames are not part of the API.
            Some(Ok(_)) => continue,
            Some(Err(e)) => return End::Lost(e.to_string()),
            None => return End::Lost("connection ended".into()),
        };
        println!("<- {text}");
        for answer in answers(&text) {
            println!("-> {answer}");
            if let Err(e) = tx.send(Message::text(answer)).await {
                return End::Lost(e.to_string());
            }
        }
    }
}

/// The messages that answer one frame: none unless it carries a correlation id.
fn answers(frame: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(frame) else {
        return Vec::new();
    };
    let Some(id) = v.get("correlation_id").and_then(Value::as_str) else {
        return Vec::new();
    };
    let said = ["message", "text", "content", "body"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or("");
    vec![
        json!({"type": "response", "data": {"message": format!("echo: {said}"),
            "correlation_id": id}, "correlation_id": id})
        .to_string(),
        json!({"type": "response", "is_final": true, "data": {"message": "done",
            "correlation_id": id}, "correlation_id": id})
        .to_string(),
    ]
}
