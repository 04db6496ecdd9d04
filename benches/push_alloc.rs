//! Heap allocations per push on the server's thread, counted by a wrapping global allocator.
//!
//! The daemon runs in this process on its own thread with its default one-loop runtime; only
//! allocations made on that thread are counted, so the clients (a real WebSocket device and a
//! keep-alive upstream on raw TCP, on another thread) don't pollute the figure.
//!
//! `cargo bench --bench push_alloc` prints one JSON line.

// Test and tool code: a failed unwrap or expect is a failed run, and test futures need not be
// small (the daemon's own are checked by clippy::large_futures).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::large_futures)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

/// Pushes before counting starts (buffers and channel blocks reach their steady size).
const WARMUP_PUSHES: u64 = 2_000;
/// Pushes counted.
const MEASURED_PUSHES: u64 = 20_000;
/// Upper bound on the whole run.
const RUN_LIMIT: Duration = Duration::from_secs(120);

struct Counting;

static SERVER_ALLOCS: AtomicU64 = AtomicU64::new(0);
static SERVER_BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn note(size: usize) {
    // `try_with`: the thread-local may already be gone while a thread tears down.
    if TRACKED.try_with(Cell::get).unwrap_or(false) {
        SERVER_ALLOCS.fetch_add(1, Ordering::Relaxed);
        SERVER_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let (addr_tx, addr_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let config = wssed::ops::settings::Config {
            listen: Some("127.0.0.1:0".parse().expect("literal address")),
            ..Default::default()
        };
        let addr = "127.0.0.1:0".parse().expect("literal address");
        let listener = wssed::net::listener::bind(addr).expect("bind 127.0.0.1:0");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        TRACKED.with(|t| t.set(true));
        let _ = rt.block_on(wssed::net::listener::run(config, listener, move |addr| {
            let _ = addr_tx.send(addr);
        }));
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server started");

    // The device: reads frames on its own runtime thread and counts them.
    let received = std::sync::Arc::new(AtomicU64::new(0));
    let seen = std::sync::Arc::clone(&received);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let url = format!("ws://{addr}/ws?user_id=bench");
            let (mut ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("device connects");
            let _ = ready_tx.send(());
            while let Some(Ok(_)) = ws.next().await {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("device ready");

    let mut upstream = TcpStream::connect(addr).expect("upstream connects");
    upstream.set_nodelay(true).expect("nodelay");
    upstream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let body = br#"{"user_id":"bench","data":{"message":"hello device","type":"notification"},"timestamp":1704067200}"#;
    let mut request = format!(
        "POST /sse/push HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let started = Instant::now();
    let mut response = vec![0u8; 4096];
    let mut push = |n: u64| {
        for _ in 0..n {
            assert!(started.elapsed() < RUN_LIMIT, "run took too long");
            upstream.write_all(&request).expect("request written");
            let mut got = 0;
            // The answer is small and fixed; read until its body's closing brace.
            loop {
                let k = upstream.read(&mut response[got..]).expect("response read");
                assert!(k > 0, "server closed the connection");
                got += k;
                if response[..got].ends_with(b"}") {
                    break;
                }
            }
            assert!(
                response[..got].windows(7).any(|w| w == b"success"),
                "push not delivered: {}",
                String::from_utf8_lossy(&response[..got])
            );
        }
    };
    push(WARMUP_PUSHES);
    let allocs_before = SERVER_ALLOCS.load(Ordering::Relaxed);
    let bytes_before = SERVER_BYTES.load(Ordering::Relaxed);
    let t0 = Instant::now();
    push(MEASURED_PUSHES);
    let elapsed = t0.elapsed();
    let allocs = SERVER_ALLOCS.load(Ordering::Relaxed) - allocs_before;
    let bytes = SERVER_BYTES.load(Ordering::Relaxed) - bytes_before;
    let delivered = received.load(Ordering::Relaxed);
    println!(
        "{{\"bench\":\"push_alloc\",\"pushes\":{MEASURED_PUSHES},\"server_allocs_per_push\":{:.3},\"server_alloc_bytes_per_push\":{:.1},\"frames_received\":{delivered},\"sequential_pushes_per_sec\":{:.0}}}",
        allocs as f64 / MEASURED_PUSHES as f64,
        bytes as f64 / MEASURED_PUSHES as f64,
        MEASURED_PUSHES as f64 / elapsed.as_secs_f64()
    );
}
