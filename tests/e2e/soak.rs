//! Nothing lost (issue 4, docs/protocol.md §4.4): numbered sequences pushed by several upstreams
//! to many devices while other devices connect, disconnect and reconnect. Every push answered
//! `success` must arrive exactly once, in order, at the right device; every `partial`, 503 or
//! failed batch item must never arrive. Bounded: a few seconds of traffic, a capped number of
//! pushes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::*;

/// Devices connected for the whole run.
const STABLE: usize = 20;
/// Devices that keep leaving and coming back.
const CHURN: usize = 8;
/// Upstream tasks pushing one request at a time each; the last one sends batches.
const UPSTREAMS: usize = 4;
/// Items in one batch request.
const BATCH_ITEMS: usize = 5;
/// How long pushes are sent.
const TRAFFIC: Duration = Duration::from_secs(5);
/// Most requests one upstream sends, whatever the speed of the machine.
const MAX_REQUESTS_PER_UPSTREAM: usize = 3000;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// One frame a device received: (src, seq, data.to, data.user_id).
type Got = (u64, u64, String, String);

/// Frames received, per user id, in arrival order (across sessions of the same id).
type Received = Arc<Mutex<HashMap<String, Vec<Got>>>>;

/// How the daemon answered one numbered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Delivered,
    NotConnected,
    QueueFull,
}

/// A tiny deterministic generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn user_ids() -> Vec<String> {
    (0..STABLE)
        .map(|i| format!("s{i}"))
        .chain((0..CHURN).map(|i| format!("c{i}")))
        .collect()
}

fn record(received: &Received, user: &str, text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{user}: bad frame {e}"));
    let got = (
        v["src"].as_u64().unwrap_or(u64::MAX),
        v["seq"].as_u64().unwrap_or(u64::MAX),
        v["to"].as_str().unwrap_or("?").to_string(),
        v["user_id"].as_str().unwrap_or("?").to_string(),
    );
    received
        .lock()
        .expect("lock")
        .entry(user.to_string())
        .or_default()
        .push(got);
}

async fn connect(addr: std::net::SocketAddr, user: &str) -> Ws {
    let url = format!("ws://{addr}/ws?user_id={user}");
    let (ws, _) = tokio::time::timeout(
        step(),
        tokio_tungstenite::connect_async_with_config(url.as_str(), None, true),
    )
    .await
    .unwrap_or_else(|_| panic!("{user}: upgrade timed out"))
    .unwrap_or_else(|e| panic!("{user}: upgrade failed: {e}"));
    ws
}

/// Reads until the session ends, recording every text frame. Returns the close code, if any.
async fn read_until_end(
    ws: &mut Ws,
    user: &str,
    received: &Received,
    within: Duration,
) -> Option<u16> {
    let deadline = Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{user}: session did not end within {within:?}"));
        match next {
            Some(Ok(Message::Text(t))) => record(received, user, &t),
            Some(Ok(Message::Close(f))) => {
                let code = f.map(|f| u16::from(f.code));
                // Drain to the end: frames can't follow a close, but EOF must.
                let _ = tokio::time::timeout_at(deadline, async {
                    while let Some(Ok(m)) = ws.next().await {
                        assert!(!m.is_text(), "{user}: text after the close");
                    }
                })
                .await;
                return code;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// A device that stays connected until `stop`, then closes cleanly having read everything.
fn stable_device(
    addr: std::net::SocketAddr,
    user: String,
    sluggish: bool,
    received: Received,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ws = connect(addr, &user).await;
        loop {
            let next = tokio::time::timeout(Duration::from_millis(50), ws.next()).await;
            match next {
                Err(_) if stop.load(Ordering::Acquire) => break,
                Err(_) => {}
                Ok(Some(Ok(Message::Text(t)))) => {
                    record(&received, &user, &t);
                    if sluggish {
                        // A slow reader: its queue fills now and then (503 / queue_full).
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                }
                Ok(Some(Ok(Message::Close(f)))) => panic!("{user}: closed by the daemon: {f:?}"),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("{user}: {e}"),
                Ok(None) => panic!("{user}: connection ended"),
            }
        }
        let _ = ws.send(Message::Close(None)).await;
        read_until_end(&mut ws, &user, &received, step()).await;
    })
}

/// A device that connects, stays a little, leaves (clean close or TCP half-close, reading
/// everything the daemon wrote first), and comes back, until `stop`. Returns its session count.
fn churn_device(
    addr: std::net::SocketAddr,
    user: String,
    received: Received,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let mut rng = Rng(seed);
        let mut sessions = 0;
        while !stop.load(Ordering::Acquire) {
            let mut ws = connect(addr, &user).await;
            sessions += 1;
            let stay = Instant::now() + Duration::from_millis(20 + rng.below(200));
            let mut ended = false;
            while Instant::now() < stay {
                match tokio::time::timeout_at(stay, ws.next()).await {
                    Err(_) => break,
                    Ok(Some(Ok(Message::Text(t)))) => record(&received, &user, &t),
                    // The previous session of this id was still registered: try again.
                    Ok(Some(Ok(Message::Close(f)))) => {
                        let code = f.map(|f| u16::from(f.code));
                        assert_eq!(code, Some(1008), "{user}: unexpected close");
                        ended = true;
                        break;
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(e))) => panic!("{user}: {e}"),
                    Ok(None) => panic!("{user}: connection ended"),
                }
            }
            if ended {
                let _ = ws.close(None).await;
                continue;
            }
            if rng.below(2) == 0 {
                let _ = ws.send(Message::Close(None)).await;
            } else if let MaybeTlsStream::Plain(tcp) = ws.get_mut() {
                // FIN without a close frame: the daemon sees EOF; we still read what it wrote.
                let _ = tcp.shutdown().await;
            }
            read_until_end(&mut ws, &user, &received, step()).await;
        }
        sessions
    })
}

/// The numbered messages one upstream sent and how each was answered: (to, seq) -> answer.
type Sent = Vec<(String, u64, Answer)>;

async fn read_push_answer(c: &mut Http) -> (Answer, bool) {
    let r = c.read_response().await;
    let closes = r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let answer = match r.status {
        200 => {
            let v = r.json();
            match v["status"].as_str() {
                Some("success") => Answer::Delivered,
                Some("partial") => Answer::NotConnected,
                _ => panic!("push answered {v}"),
            }
        }
        503 => {
            assert_eq!(
                r.json(),
                json!({"status":"error","message":"User queue full"}),
                "503"
            );
            Answer::QueueFull
        }
        s => panic!("push answered {s}: {}", r.text()),
    };
    (answer, closes)
}

fn upstream(
    addr: std::net::SocketAddr,
    src: u64,
    batches: bool,
    stop_at: Instant,
) -> JoinHandle<Sent> {
    tokio::spawn(async move {
        let users = user_ids();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (src + 1));
        let mut seq: HashMap<String, u64> = HashMap::new();
        let mut sent: Sent = Vec::new();
        let mut c = Http::connect(addr).await;
        for _ in 0..MAX_REQUESTS_PER_UPSTREAM {
            if Instant::now() >= stop_at {
                break;
            }
            let count = if batches { BATCH_ITEMS } else { 1 };
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let to = users[rng.below(users.len() as u64) as usize].clone();
                let n = seq.entry(to.clone()).or_insert(0);
                *n += 1;
                items.push((to, *n));
            }
            let messages: Vec<Value> = items
                .iter()
                .map(|(to, n)| json!({"user_id": to, "data": {"src": src, "seq": n, "to": to}}))
                .collect();
            let closes = if batches {
                c.send(&post("/sse/push/batch", &Value::from(messages).to_string()))
                    .await;
                let r = c.read_response().await;
                let v = r.assert_json(200);
                let results = v["results"].as_array().expect("results");
                assert_eq!(results.len(), items.len());
                for (i, ((to, n), res)) in items.iter().zip(results).enumerate() {
                    assert_eq!(res["index"], i);
                    assert_eq!(res["user_id"], to.as_str());
                    let answer = match res["success"].as_bool() {
                        Some(true) => Answer::Delivered,
                        Some(false) => match res["error"].as_str() {
                            Some("not_connected") => Answer::NotConnected,
                            Some("queue_full") => Answer::QueueFull,
                            _ => panic!("batch result {res}"),
                        },
                        None => panic!("batch result {res}"),
                    };
                    sent.push((to.clone(), *n, answer));
                }
                r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            } else {
                c.send(&post("/sse/push", &messages[0].to_string())).await;
                let (answer, closes) = read_push_answer(&mut c).await;
                let (to, n) = &items[0];
                sent.push((to.clone(), *n, answer));
                closes
            };
            if closes {
                c = Http::connect(addr).await;
            }
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_nothing_lost_nothing_duplicated_nothing_misrouted() {
    let d = Daemon::start(&["--queue-depth", "2", "--max-connections", "64"]);
    let received: Received = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let stable: Vec<_> = (0..STABLE)
        .map(|i| {
            stable_device(
                d.addr,
                format!("s{i}"),
                i % 4 == 0,
                received.clone(),
                stop.clone(),
            )
        })
        .collect();
    wait_until(step(), "the stable devices are connected", || async {
        d.connections().await >= STABLE as u64
    })
    .await;
    let churn: Vec<_> = (0..CHURN)
        .map(|i| {
            churn_device(
                d.addr,
                format!("c{i}"),
                received.clone(),
                stop.clone(),
                0x5151 + i as u64,
            )
        })
        .collect();
    let stop_at = Instant::now() + TRAFFIC;
    let upstreams: Vec<_> = (0..UPSTREAMS)
        .map(|u| upstream(d.addr, u as u64, u == UPSTREAMS - 1, stop_at))
        .collect();

    let mut sent: BTreeMap<(String, u64), Vec<(u64, Answer)>> = BTreeMap::new();
    let mut total = 0;
    for (src, task) in upstreams.into_iter().enumerate() {
        let list = tokio::time::timeout(TRAFFIC + t(20.0), task)
            .await
            .expect("upstream never finished")
            .expect("upstream failed");
        total += list.len();
        for (to, n, answer) in list {
            sent.entry((to, src as u64)).or_default().push((n, answer));
        }
    }
    // Everyone reads to the end of its session, so whatever was written has been read.
    stop.store(true, Ordering::Release);
    let mut sessions = 0;
    for task in churn {
        sessions += tokio::time::timeout(t(20.0), task)
            .await
            .expect("churn device never finished")
            .expect("churn device failed");
    }
    for task in stable {
        tokio::time::timeout(t(20.0), task)
            .await
            .expect("stable device never finished")
            .expect("stable device failed");
    }

    let received = received.lock().expect("lock").clone();
    let mut delivered = 0;
    let mut not_delivered = 0;
    let mut queue_full = 0;
    let mut problems = Vec::new();
    for user in user_ids() {
        let got = received.get(&user).cloned().unwrap_or_default();
        for (src, seq, to, uid) in &got {
            if to != &user || uid != &user {
                problems.push(format!(
                    "{user} got src {src} seq {seq} meant for {to} (user_id {uid})"
                ));
            }
        }
        for src in 0..UPSTREAMS as u64 {
            let arrived: Vec<u64> = got
                .iter()
                .filter(|(s, _, _, _)| *s == src)
                .map(|(_, n, _, _)| *n)
                .collect();
            let answers = sent.get(&(user.clone(), src)).cloned().unwrap_or_default();
            let want: Vec<u64> = answers
                .iter()
                .filter(|(_, a)| *a == Answer::Delivered)
                .map(|(n, _)| *n)
                .collect();
            delivered += want.len();
            not_delivered += answers.len() - want.len();
            queue_full += answers
                .iter()
                .filter(|(_, a)| *a == Answer::QueueFull)
                .count();
            if arrived != want {
                let extra: Vec<_> = arrived.iter().filter(|n| !want.contains(n)).collect();
                let missing: Vec<_> = want.iter().filter(|n| !arrived.contains(n)).collect();
                problems.push(format!(
                    "{user} from {src}: {} arrived, {} answered success; missing {missing:?}, \
                     not answered success but arrived {extra:?}, order/duplicates: {}",
                    arrived.len(),
                    want.len(),
                    arrived.windows(2).any(|w| w[0] >= w[1])
                ));
            }
        }
    }
    eprintln!(
        "soak: {total} messages, {delivered} delivered, {not_delivered} not delivered \
         ({queue_full} of them queue full), {sessions} churn sessions"
    );
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(total >= 500, "too little traffic to mean anything: {total}");
    assert!(
        delivered > 0 && not_delivered > 0,
        "the run never hit both outcomes"
    );
    assert!(
        sessions >= 2 * CHURN,
        "the churn devices barely churned: {sessions}"
    );
}
