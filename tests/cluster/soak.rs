//! Nothing lost across nodes (docs/protocol.md §21.3): numbered pushes to devices spread over
//! three nodes, sent through any node, while a node is killed and started again, the engine
//! is killed and started again, and another node is stopped and started again. Devices whose
//! node goes away connect again to another one. Every push answered `success` must reach
//! its device exactly once, in the order its upstream sent it; no push answered `partial`
//! may arrive. Bounded in time (about ten seconds of traffic) and in count.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;
use crate::harness::*;

/// Devices, spread over the nodes.
const DEVICES: usize = 12;
/// Upstreams, each sending one push at a time.
const UPSTREAMS: u64 = 3;
/// Most pushes one upstream sends, however fast the machine (times `WSSED_TIMEOUT_SCALE`,
/// which stretches the run as well).
fn max_pushes_per_upstream() -> u64 {
    (8000.0 * scale()).min(80_000.0) as u64
}
/// Pause between one upstream's pushes, so that the bound lasts the whole run.
const PUSH_PACE: Duration = Duration::from_millis(1);

/// Where the nodes listen now (`None` while one is down).
type Nodes = Arc<Mutex<Vec<Option<SocketAddr>>>>;

/// What devices received: user id -> (src, seq) in arrival order.
type Received = Arc<Mutex<HashMap<String, Vec<(u64, u64)>>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Success,
    Partial,
    /// 503 at once (well under the nodes' `cluster_timeout_secs` of 3): never sent, so it
    /// must never arrive.
    Refused,
    /// 503 after waiting: the outcome is unknown.
    Unavailable,
    /// No answer (the node went away with the request).
    Unknown,
}

fn live(nodes: &Nodes, prefer: usize) -> Option<SocketAddr> {
    let nodes = nodes.lock().unwrap();
    (0..nodes.len()).find_map(|i| nodes[(prefer + i) % nodes.len()])
}

/// A device that stays connected to some node: when its session ends it connects again,
/// to the next node that is up.
async fn device(
    user: String,
    nodes: Nodes,
    received: Received,
    stop: Arc<AtomicBool>,
    sessions: Arc<AtomicU64>,
) {
    let mut prefer = user.trim_start_matches('d').parse::<usize>().unwrap_or(0);
    while !stop.load(Ordering::Relaxed) {
        let Some(addr) = live(&nodes, prefer) else {
            sleep(Duration::from_millis(20)).await;
            continue;
        };
        let url = format!("ws://{addr}/ws?user_id={user}");
        let connected =
            tokio::time::timeout(step(), tokio_tungstenite::connect_async(url.as_str())).await;
        let Ok(Ok((mut ws, _))) = connected else {
            prefer += 1;
            sleep(Duration::from_millis(20)).await;
            continue;
        };
        sessions.fetch_add(1, Ordering::Relaxed);
        // Read until the session ends; the stop flag is checked between frames.
        loop {
            let next = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
            match next {
                Err(_) if stop.load(Ordering::Relaxed) => return,
                Err(_) => {}
                Ok(Some(Ok(Message::Text(text)))) => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(v["user_id"], user.as_str(), "a frame for another device");
                    let got = (v["src"].as_u64().unwrap(), v["seq"].as_u64().unwrap());
                    received
                        .lock()
                        .unwrap()
                        .entry(user.clone())
                        .or_default()
                        .push(got);
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => break,
            }
        }
        prefer += 1;
        sleep(Duration::from_millis(20)).await;
    }
}

/// One push on a connection of its own: the status and the JSON body, or `None` when the
/// node went away before answering (nothing here panics on a node that dies).
async fn push_once(addr: SocketAddr, body: &str) -> Option<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let head = format!(
        "POST /sse/push HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.ok()?;
    s.write_all(body.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.ok()?;
    let text = String::from_utf8(answer).ok()?;
    let status = text.get(9..12)?.parse().ok()?;
    let (_, json) = text.split_once("\r\n\r\n")?;
    Some((status, serde_json::from_str(json).ok()?))
}

/// One upstream: numbered pushes to random devices through random nodes, one at a time.
async fn upstream(src: u64, nodes: Nodes, stop: Arc<AtomicBool>) -> Vec<(String, u64, Answer)> {
    let mut answers = Vec::new();
    let mut rng = src.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for seq in 0..max_pushes_per_upstream() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let user = format!("d{}", next() % DEVICES as u64);
        let Some(addr) = live(&nodes, (next() % 3) as usize) else {
            sleep(Duration::from_millis(20)).await;
            continue;
        };
        let body = json!({"user_id": user, "data": {"src": src, "seq": seq}}).to_string();
        let asked = Instant::now();
        let answer = match tokio::time::timeout(t(12.0), push_once(addr, &body)).await {
            Ok(Some((200, v))) if v["status"] == "success" => Answer::Success,
            Ok(Some((200, v))) if v["status"] == "partial" => Answer::Partial,
            Ok(Some((503, _))) if asked.elapsed() < t(1.0) => Answer::Refused,
            Ok(Some((503, _))) => Answer::Unavailable,
            Ok(Some((status, v))) => panic!("unexpected answer {status} {v}"),
            // The node went away with the request (or never took it).
            Ok(None) | Err(_) => Answer::Unknown,
        };
        answers.push((user, seq, answer));
        sleep(PUSH_PACE).await;
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_answered_success_is_lost_or_doubled_while_nodes_and_the_engine_restart() {
    let Some(bin) = nats_or_skip() else {
        return;
    };
    let mut nats = Nats::start(&bin);
    let url = nats.url();
    // Pings far apart: devices answer them, and a killed node then has nothing unread.
    let args = ["--cluster-timeout-secs", "3", "--ping-interval-secs", "600"];
    let mut daemons: Vec<Option<Daemon>> = (1..=3)
        .map(|i| Some(node_at(&url, &format!("n{i}"), &args)))
        .collect();
    {
        let all: Vec<&Daemon> = daemons.iter().flatten().collect();
        wait_all_up(&all).await;
    }
    let nodes: Nodes = Arc::new(Mutex::new(
        daemons.iter().map(|d| d.as_ref().map(|d| d.addr)).collect(),
    ));
    let received: Received = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_devices = Arc::new(AtomicBool::new(false));
    let sessions = Arc::new(AtomicU64::new(0));
    let devices: Vec<_> = (0..DEVICES)
        .map(|i| {
            tokio::spawn(device(
                format!("d{i}"),
                Arc::clone(&nodes),
                Arc::clone(&received),
                Arc::clone(&stop_devices),
                Arc::clone(&sessions),
            ))
        })
        .collect();
    wait_until(t(10.0), "every device present", || async {
        let mut n = 0;
        for d in daemons.iter().flatten() {
            n += present(d).await;
        }
        n == DEVICES as u64
    })
    .await;
    let upstreams: Vec<_> = (0..UPSTREAMS)
        .map(|src| tokio::spawn(upstream(src, Arc::clone(&nodes), Arc::clone(&stop))))
        .collect();

    // The chaos, on a timeline.
    let started = Instant::now();
    let at = |secs: f64| started + t(secs);
    tokio::time::sleep_until(at(1.5)).await;
    nodes.lock().unwrap()[1] = None;
    if let Some(d) = daemons[1].as_mut() {
        d.signal("KILL");
        d.wait_exit(step()).await.expect("n2 exits");
    }
    tokio::time::sleep_until(at(2.5)).await;
    let n2 = node_at(&url, "n2", &args);
    nodes.lock().unwrap()[1] = Some(n2.addr);
    daemons[1] = Some(n2);
    tokio::time::sleep_until(at(4.0)).await;
    nats.kill();
    tokio::time::sleep_until(at(5.0)).await;
    nats.restart();
    tokio::time::sleep_until(at(6.5)).await;
    nodes.lock().unwrap()[2] = None;
    if let Some(d) = daemons[2].as_mut() {
        d.signal("TERM");
        d.wait_exit(t(10.0)).await.expect("n3 stops");
    }
    tokio::time::sleep_until(at(7.5)).await;
    let n3 = node_at(&url, "n3", &args);
    nodes.lock().unwrap()[2] = Some(n3.addr);
    daemons[2] = Some(n3);
    tokio::time::sleep_until(at(10.0)).await;
    stop.store(true, Ordering::Relaxed);

    let mut sent: BTreeMap<(u64, u64), (String, Answer)> = BTreeMap::new();
    for (src, task) in upstreams.into_iter().enumerate() {
        for (user, seq, answer) in task.await.unwrap() {
            sent.insert((src as u64, seq), (user, answer));
        }
    }
    let count = |a: Answer| sent.values().filter(|(_, x)| *x == a).count();
    let success = count(Answer::Success);
    eprintln!(
        "soak: {} pushes: {success} success, {} partial, {} 503, {} unknown; {} device sessions",
        sent.len(),
        count(Answer::Partial),
        count(Answer::Refused) + count(Answer::Unavailable),
        count(Answer::Unknown),
        sessions.load(Ordering::Relaxed),
    );
    assert!(
        success > 100,
        "too little traffic to judge ({success} successes)"
    );
    assert!(
        sent.len() < (UPSTREAMS * max_pushes_per_upstream()) as usize,
        "the pushes ran out before the chaos ended"
    );

    // Everything answered success arrives (frames already written are on their way).
    let missing = || {
        let got = received.lock().unwrap();
        sent.iter()
            .filter(|(_, (_, a))| *a == Answer::Success)
            .filter(|((src, seq), (user, _))| {
                !got.get(user).is_some_and(|v| v.contains(&(*src, *seq)))
            })
            .map(|(k, (user, _))| (*k, user.clone()))
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + t(10.0);
    while !missing().is_empty() && Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
    }
    stop_devices.store(true, Ordering::Relaxed);
    for d in devices {
        let _ = tokio::time::timeout(step(), d).await;
    }
    assert_eq!(missing(), Vec::new(), "answered success, never arrived");

    let got = received.lock().unwrap();
    for (user, frames) in got.iter() {
        let mut seen = std::collections::HashSet::new();
        let mut last: HashMap<u64, u64> = HashMap::new();
        for &(src, seq) in frames {
            assert!(seen.insert((src, seq)), "{user} got ({src},{seq}) twice");
            let (sent_to, answer) = &sent[&(src, seq)];
            assert_eq!(sent_to, user, "({src},{seq}) reached the wrong device");
            assert!(
                !matches!(answer, Answer::Partial | Answer::Refused),
                "{user}: ({src},{seq}) was answered {answer:?}"
            );
            // One upstream's pushes to one device arrive in the order they were answered.
            if let Some(before) = last.insert(src, seq) {
                assert!(before < seq, "{user}: ({src},{seq}) after ({src},{before})");
            }
        }
    }
}
