//! The scenarios. Each connects its devices, warms them up (one push each, not measured), runs a
//! bounded measured phase and returns one JSON object.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::args::{Args, Scenario};
use crate::clock::now_ns;
use crate::device::{self, DeviceSet, Mode};
use crate::error::LgError;
use crate::http::{self, HttpConn};
use crate::procfs::{self, Snap};
use crate::stats;
use crate::target::{contains, find, Outcome, Target};

/// Longest wait for one HTTP answer (a `/sse/send` answer included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for frames still in flight after the last answer.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Warm-up pushes tried per device before it counts as unreachable.
const WARMUP_TRIES: u32 = 200;
/// Pause between warm-up tries of one device.
const WARMUP_RETRY: Duration = Duration::from_millis(5);
/// Time given to RSS to settle once every idle device is registered.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// Longest wait for the server to count every idle device.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(60);
/// File descriptors kept free for the runtime, stdio and status connections.
const SPARE_FDS: u64 = 64;

/// Runs the scenario `a` asks for.
pub async fn run(a: &Args) -> Result<Value, LgError> {
    crate::clock::init();
    let deadline = Instant::now() + Duration::from_secs(a.max_secs);
    let mut out = Map::new();
    out.insert("scenario".into(), json!(a.scenario.name()));
    out.insert("target".into(), json!(a.target.name()));
    if let Some(l) = &a.label {
        out.insert("label".into(), json!(l));
    }
    let body = match a.scenario {
        Scenario::Idle => idle(a, deadline).await?,
        Scenario::Push => push(a, deadline).await?,
        Scenario::Batch => batch(a, deadline).await?,
        Scenario::Send => send(a, deadline).await?,
        Scenario::Connect => connect(a, deadline).await?,
    };
    if let Value::Object(m) = body {
        out.extend(m);
    }
    Ok(Value::Object(out))
}

fn need_fds(n: usize) -> Result<(), LgError> {
    let need = n as u64 + SPARE_FDS;
    match procfs::nofile_soft() {
        Some(have) if have < need => Err(LgError::FdLimit(need, have)),
        _ => Ok(()),
    }
}

/// Device-id prefix unique to this run, so devices of a previous run that the server is still
/// closing never collide with this run's (wssed rejects a duplicate user id).
fn run_prefix(letter: &str) -> String {
    format!("{letter}{}_", std::process::id())
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn snap(a: &Args) -> Result<Option<Snap>, LgError> {
    if a.server_pids.is_empty() {
        return Ok(None);
    }
    procfs::snap(&a.server_pids).map(Some)
}

/// The load tool's own CPU reading, to show whether it (rather than the server) was the limit.
fn self_ns() -> u64 {
    procfs::sched_ns(std::process::id()).unwrap_or(0)
}

/// Server CPU fields for `ops` units of work between two readings.
fn cpu_fields(
    before: Option<Snap>,
    after: Option<Snap>,
    ops: u64,
    unit: &str,
) -> Map<String, Value> {
    let mut m = Map::new();
    let (Some(b), Some(a)) = (before, after) else {
        m.insert("server_cpu".into(), json!("not measured (no --server-pid)"));
        return m;
    };
    let tck = procfs::clk_tck();
    let ticks = a.cpu_ticks.saturating_sub(b.cpu_ticks);
    let cpu_us = ticks as f64 * 1e6 / tck as f64;
    let sched_us = a.sched_ns.saturating_sub(b.sched_ns) as f64 / 1e3;
    let per = |v: f64| {
        if ops == 0 {
            Value::Null
        } else {
            json!((v / ops as f64 * 100.0).round() / 100.0)
        }
    };
    m.insert(
        "server_cpu_ms".into(),
        json!((cpu_us / 10.0).round() / 100.0),
    );
    m.insert(format!("server_cpu_us_per_{unit}"), per(cpu_us));
    m.insert(format!("server_cpu_us_per_{unit}_schedstat"), per(sched_us));
    // User space is what callgrind counts; the rest is the kernel (syscalls, wake-ups).
    let user_us = a.user_ticks.saturating_sub(b.user_ticks) as f64 * 1e6 / tck as f64;
    m.insert(format!("server_user_cpu_us_per_{unit}"), per(user_us));
    m.insert("server_rss_kib".into(), json!(a.rss_kib));
    m
}

fn loadgen_util(self0: u64, self1: u64, wall: Duration) -> Value {
    let w = wall.as_nanos() as f64;
    if w <= 0.0 {
        return Value::Null;
    }
    json!(((self1.saturating_sub(self0)) as f64 / w * 100.0).round() / 100.0)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 1e4
}

/// Pushes one warm-up frame (timestamp 0) to every device until the server says delivered,
/// then waits for all of them to arrive. Proves every device is registered before measuring.
async fn warmup(
    a: &Args,
    ids: &[String],
    set: &DeviceSet,
    deadline: Instant,
) -> Result<(), LgError> {
    let mut conn = HttpConn::connect(a.addr).await?;
    let (mut req, mut scratch, mut resp) = (Vec::new(), Vec::new(), Vec::new());
    for id in ids {
        let mut delivered = false;
        for _ in 0..WARMUP_TRIES {
            req.clear();
            a.target
                .push_request(&mut req, &mut scratch, id, b"{\"ts\":0}");
            conn.write_all(&req).await?;
            let st = tokio::time::timeout(REQUEST_TIMEOUT, conn.read_response(&mut resp))
                .await
                .map_err(|_| LgError::Timeout("warm-up push answer"))??;
            if a.target.classify(st, &resp) == Outcome::Delivered {
                delivered = true;
                break;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(WARMUP_RETRY).await;
        }
        if !delivered {
            return Err(LgError::Timeout("warm-up: a device never became reachable"));
        }
    }
    let until = (Instant::now() + DRAIN_TIMEOUT).min(deadline + DRAIN_TIMEOUT);
    if !set.wait_warm(ids.len() as u64, until).await {
        return Err(LgError::Timeout("warm-up frames"));
    }
    Ok(())
}

/// Settings every upstream task copies.
#[derive(Clone, Copy)]
struct UpCfg {
    addr: SocketAddr,
    target: Target,
    total: u64,
    rate: Option<u64>,
    batch_size: usize,
    t0: Instant,
    deadline: Instant,
}

/// State the upstream tasks share.
struct UpShared {
    ids: Vec<String>,
    next: AtomicU64,
    success: Vec<AtomicU64>,
}

impl UpShared {
    fn new(ids: Vec<String>) -> Arc<Self> {
        let n = ids.len();
        Arc::new(Self {
            ids,
            next: AtomicU64::new(0),
            success: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn count(&self, dev: usize) {
        if let Some(c) = self.success.get(dev) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What one upstream task did.
#[derive(Default)]
struct UpOut {
    rtt_ns: Vec<u64>,
    delivered: u64,
    not_connected: u64,
    queue_full: u64,
    failed: u64,
    errors: Vec<String>,
}

impl UpOut {
    fn tally(&mut self, o: Outcome) {
        match o {
            Outcome::Delivered => self.delivered += 1,
            Outcome::NotConnected => self.not_connected += 1,
            Outcome::QueueFull => self.queue_full += 1,
            Outcome::Failed => self.failed += 1,
        }
    }

    fn merge(&mut self, o: UpOut) {
        self.rtt_ns.extend(o.rtt_ns);
        self.delivered += o.delivered;
        self.not_connected += o.not_connected;
        self.queue_full += o.queue_full;
        self.failed += o.failed;
        self.errors.extend(o.errors.into_iter().take(8));
    }
}

/// Takes the next unit of work, waiting for its slot in a paced run; None when done.
async fn next_job(cfg: &UpCfg, sh: &UpShared) -> Option<u64> {
    let k = sh.next.fetch_add(1, Ordering::Relaxed);
    if k >= cfg.total || Instant::now() >= cfg.deadline {
        return None;
    }
    if let Some(r) = cfg.rate {
        let at = cfg.t0 + Duration::from_nanos(k.saturating_mul(1_000_000_000) / r);
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
    Some(k)
}

async fn answer(conn: &mut HttpConn, resp: &mut Vec<u8>) -> Result<u16, LgError> {
    tokio::time::timeout(REQUEST_TIMEOUT, conn.read_response(resp))
        .await
        .map_err(|_| LgError::Timeout("HTTP answer"))?
}

async fn push_upstream(cfg: UpCfg, sh: Arc<UpShared>) -> UpOut {
    let mut out = UpOut::default();
    let mut conn = match HttpConn::connect(cfg.addr).await {
        Ok(c) => c,
        Err(e) => {
            out.errors.push(e.to_string());
            return out;
        }
    };
    let (mut req, mut scratch, mut data, mut resp) = (
        Vec::with_capacity(512),
        Vec::with_capacity(256),
        Vec::with_capacity(64),
        Vec::with_capacity(256),
    );
    let n = sh.ids.len() as u64;
    while let Some(k) = next_job(&cfg, &sh).await {
        let dev = (k % n) as usize;
        let Some(id) = sh.ids.get(dev) else { break };
        data.clear();
        let _ = write!(data, "{{\"ts\":{},\"seq\":{k}}}", now_ns());
        req.clear();
        cfg.target.push_request(&mut req, &mut scratch, id, &data);
        let sent = Instant::now();
        let r = match conn.write_all(&req).await {
            Ok(()) => answer(&mut conn, &mut resp).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(st) => {
                out.rtt_ns.push(sent.elapsed().as_nanos() as u64);
                let o = cfg.target.classify(st, &resp);
                if o == Outcome::Delivered {
                    sh.count(dev);
                }
                out.tally(o);
            }
            Err(e) => {
                out.errors.push(e.to_string());
                break;
            }
        }
    }
    out
}

/// Sends one batch: wssed's `/sse/push/batch`, or for nchan (no batch endpoint) the same items
/// as pipelined publishes in one write, answered one by one.
async fn batch_upstream(cfg: UpCfg, sh: Arc<UpShared>) -> UpOut {
    let mut out = UpOut::default();
    let mut conn = match HttpConn::connect(cfg.addr).await {
        Ok(c) => c,
        Err(e) => {
            out.errors.push(e.to_string());
            return out;
        }
    };
    let bs = cfg.batch_size;
    let n = sh.ids.len() as u64;
    let (mut req, mut body, mut data, mut scratch, mut resp) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut devs = Vec::with_capacity(bs);
    while let Some(b) = next_job(&cfg, &sh).await {
        devs.clear();
        devs.extend((0..bs as u64).map(|j| ((b * bs as u64 + j) % n) as usize));
        let ts = now_ns();
        req.clear();
        body.clear();
        for (j, &dev) in devs.iter().enumerate() {
            let id = sh.ids.get(dev).map(String::as_str).unwrap_or("");
            data.clear();
            let _ = write!(data, "{{\"ts\":{ts},\"seq\":{}}}", b * bs as u64 + j as u64);
            match cfg.target {
                Target::Wssed => {
                    body.push(if j == 0 { b'[' } else { b',' });
                    let _ = write!(body, "{{\"user_id\":\"{id}\",\"data\":");
                    body.extend_from_slice(&data);
                    body.push(b'}');
                }
                Target::Nchan => cfg.target.push_request(&mut req, &mut scratch, id, &data),
            }
        }
        if cfg.target == Target::Wssed {
            body.push(b']');
            http::post(&mut req, "/sse/push/batch", &body);
        }
        let sent = Instant::now();
        if let Err(e) = conn.write_all(&req).await {
            out.errors.push(e.to_string());
            break;
        }
        let r = match cfg.target {
            Target::Wssed => read_batch_answer(&mut conn, &mut resp, &devs, &sh, &mut out).await,
            Target::Nchan => {
                read_pipelined(&mut conn, &mut resp, &devs, &sh, &mut out, cfg.target).await
            }
        };
        if let Err(e) = r {
            out.errors.push(e.to_string());
            break;
        }
        out.rtt_ns.push(sent.elapsed().as_nanos() as u64);
    }
    out
}

async fn read_batch_answer(
    conn: &mut HttpConn,
    resp: &mut Vec<u8>,
    devs: &[usize],
    sh: &UpShared,
    out: &mut UpOut,
) -> Result<(), LgError> {
    let st = answer(conn, resp).await?;
    if st != 200 {
        out.failed += devs.len() as u64;
        return Ok(());
    }
    // Results come in input order; each carries one `"success":` key.
    let mut rest: &[u8] = resp;
    for &dev in devs {
        let Some(at) = find(rest, b"\"success\":") else {
            out.failed += 1;
            continue;
        };
        rest = rest.get(at + 10..).unwrap_or(&[]);
        let ok = rest.starts_with(b"true");
        let item_end = rest.iter().position(|&c| c == b'}').unwrap_or(rest.len());
        let item = rest.get(..item_end).unwrap_or(&[]);
        if ok {
            sh.count(dev);
            out.delivered += 1;
        } else if contains(item, b"queue_full") {
            out.queue_full += 1;
        } else if contains(item, b"not_connected") {
            out.not_connected += 1;
        } else {
            out.failed += 1;
        }
    }
    Ok(())
}

async fn read_pipelined(
    conn: &mut HttpConn,
    resp: &mut Vec<u8>,
    devs: &[usize],
    sh: &UpShared,
    out: &mut UpOut,
    target: Target,
) -> Result<(), LgError> {
    for &dev in devs {
        let st = answer(conn, resp).await?;
        let o = target.classify(st, resp);
        if o == Outcome::Delivered {
            sh.count(dev);
        }
        out.tally(o);
    }
    Ok(())
}

async fn send_upstream(cfg: UpCfg, sh: Arc<UpShared>) -> UpOut {
    let mut out = UpOut::default();
    let mut conn = match HttpConn::connect(cfg.addr).await {
        Ok(c) => c,
        Err(e) => {
            out.errors.push(e.to_string());
            return out;
        }
    };
    let (mut req, mut body, mut resp) = (Vec::new(), Vec::new(), Vec::new());
    let n = sh.ids.len() as u64;
    while let Some(k) = next_job(&cfg, &sh).await {
        let dev = (k % n) as usize;
        let Some(id) = sh.ids.get(dev) else { break };
        body.clear();
        let _ = write!(
            body,
            "{{\"user_id\":\"{id}\",\"data\":{{\"correlation_id\":\"lg{k}\",\"ts\":{}}}}}",
            now_ns()
        );
        req.clear();
        http::post(&mut req, "/sse/send", &body);
        let sent = Instant::now();
        let r = match conn.write_all(&req).await {
            Ok(()) => answer(&mut conn, &mut resp).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(st) => {
                out.rtt_ns.push(sent.elapsed().as_nanos() as u64);
                if st == 200 && contains(&resp, b"\"is_final\":true") {
                    sh.count(dev);
                    out.delivered += 1;
                } else if st == 503 {
                    out.queue_full += 1;
                } else {
                    out.failed += 1;
                }
            }
            Err(e) => {
                out.errors.push(e.to_string());
                break;
            }
        }
    }
    out
}

/// Which upstream loop a measured phase runs.
#[derive(Clone, Copy)]
enum Job {
    Push,
    Batch,
    Send,
}

/// Results of a measured phase.
struct Phase {
    up: UpOut,
    lat_ns: Vec<u64>,
    received: u64,
    missing: u64,
    extra: u64,
    closed_early: u64,
    bad: u64,
    answered: Duration,
    done: Duration,
    before: Option<Snap>,
    after: Option<Snap>,
    loadgen_util: Value,
}

/// Connects `a.devices` devices named `prefix{i}`, warms them up, runs `job` over
/// `a.connections` upstream connections, waits for in-flight frames, and collects everything.
async fn measured(
    a: &Args,
    prefix: &str,
    job: Job,
    total: u64,
    deadline: Instant,
) -> Result<Phase, LgError> {
    need_fds(a.devices + a.connections)?;
    let prefix = &run_prefix(prefix);
    let ids = ids(prefix, a.devices);
    let conn = device::connect_many(
        a.device_addr,
        a.target,
        prefix,
        a.devices,
        a.concurrency,
        a.source_ips,
        deadline,
    )
    .await?;
    let mode = if matches!(job, Job::Send) {
        Mode::Answer
    } else {
        Mode::Count
    };
    let per_dev = match job {
        Job::Batch => total.saturating_mul(a.batch_size as u64),
        _ => total,
    } / a.devices as u64;
    let set = DeviceSet::spawn(
        conn.devices,
        mode,
        (per_dev as usize).saturating_mul(2) + 16,
    );
    warmup(a, &ids, &set, deadline).await?;
    let sh = UpShared::new(ids);
    let before = snap(a)?;
    let self0 = self_ns();
    let t0 = Instant::now();
    let cfg = UpCfg {
        addr: a.addr,
        target: a.target,
        total,
        rate: a.rate,
        batch_size: a.batch_size,
        t0,
        deadline,
    };
    let tasks: Vec<_> = (0..a.connections)
        .map(|_| match job {
            Job::Push => tokio::spawn(push_upstream(cfg, sh.clone())),
            Job::Batch => tokio::spawn(batch_upstream(cfg, sh.clone())),
            Job::Send => tokio::spawn(send_upstream(cfg, sh.clone())),
        })
        .collect();
    let mut up = UpOut::default();
    for t in tasks {
        match t.await {
            Ok(o) => up.merge(o),
            Err(e) => up.errors.push(format!("upstream task: {e}")),
        }
    }
    let answered = t0.elapsed();
    let want = up.delivered;
    let until = Instant::now() + DRAIN_TIMEOUT;
    let _ = set.wait_total(want, until).await;
    let done = t0.elapsed();
    let after = snap(a)?;
    let self1 = self_ns();
    let shared = set.shared.clone();
    let outs = set.stop().await;
    let mut missing = 0;
    let mut extra = 0;
    for (s, r) in sh.success.iter().zip(shared.received.iter()) {
        let (s, r) = (s.load(Ordering::Relaxed), r.load(Ordering::Relaxed));
        missing += s.saturating_sub(r);
        extra += r.saturating_sub(s);
    }
    let closed_early = outs.iter().filter(|o| o.closed_early).count() as u64;
    let mut lat_ns = Vec::new();
    for o in outs {
        lat_ns.extend(o.lat_ns);
    }
    Ok(Phase {
        up,
        lat_ns,
        received: shared.total.load(Ordering::Relaxed),
        missing,
        extra,
        closed_early,
        bad: shared.bad.load(Ordering::Relaxed),
        answered,
        done,
        before,
        after,
        loadgen_util: loadgen_util(self0, self1, done),
    })
}

fn phase_common(p: &mut Phase, m: &mut Map<String, Value>) {
    m.insert("delivered".into(), json!(p.up.delivered));
    m.insert("not_connected".into(), json!(p.up.not_connected));
    m.insert("queue_full".into(), json!(p.up.queue_full));
    m.insert("failed".into(), json!(p.up.failed));
    m.insert("frames_received".into(), json!(p.received));
    m.insert("missing".into(), json!(p.missing));
    m.insert("extra_frames".into(), json!(p.extra));
    m.insert("every_success_delivered".into(), json!(p.missing == 0));
    m.insert("devices_closed_early".into(), json!(p.closed_early));
    m.insert("bad_frames".into(), json!(p.bad));
    m.insert("answered_s".into(), json!(secs(p.answered)));
    m.insert("elapsed_s".into(), json!(secs(p.done)));
    m.insert("http_rtt_us".into(), stats::summary_us(&mut p.up.rtt_ns));
    m.insert("loadgen_cpu_util".into(), p.loadgen_util.clone());
    if !p.up.errors.is_empty() {
        m.insert("errors".into(), json!(p.up.errors));
    }
}

async fn push(a: &Args, deadline: Instant) -> Result<Value, LgError> {
    let mut p = measured(a, "p", Job::Push, a.pushes, deadline).await?;
    let mut m = Map::new();
    m.insert("devices".into(), json!(a.devices));
    m.insert("connections".into(), json!(a.connections));
    m.insert("rate".into(), json!(a.rate));
    m.insert("pushes".into(), json!(p.up.rtt_ns.len()));
    phase_common(&mut p, &mut m);
    m.insert(
        "pushes_per_s".into(),
        json!(stats::rate(p.up.delivered, p.done.as_secs_f64())),
    );
    m.insert("latency_us".into(), stats::summary_us(&mut p.lat_ns));
    m.insert("cdf_us".into(), stats::cdf_us(&p.lat_ns));
    m.extend(cpu_fields(
        p.before,
        p.after,
        p.received.min(p.up.delivered),
        "push",
    ));
    Ok(Value::Object(m))
}

async fn batch(a: &Args, deadline: Instant) -> Result<Value, LgError> {
    let mut p = measured(a, "b", Job::Batch, a.batches, deadline).await?;
    let mut m = Map::new();
    m.insert("devices".into(), json!(a.devices));
    m.insert("connections".into(), json!(a.connections));
    m.insert("batch_size".into(), json!(a.batch_size));
    m.insert("batches".into(), json!(p.up.rtt_ns.len()));
    if a.target == Target::Nchan {
        m.insert("mode".into(), json!("nchan has no batch endpoint: each batch is its items as pipelined publishes in one write"));
    }
    phase_common(&mut p, &mut m);
    let batches = p.up.rtt_ns.len() as u64;
    m.insert(
        "batches_per_s".into(),
        json!(stats::rate(batches, p.done.as_secs_f64())),
    );
    m.insert(
        "items_per_s".into(),
        json!(stats::rate(p.up.delivered, p.done.as_secs_f64())),
    );
    m.insert("latency_us".into(), stats::summary_us(&mut p.lat_ns));
    m.extend(cpu_fields(
        p.before,
        p.after,
        p.received.min(p.up.delivered),
        "item",
    ));
    Ok(Value::Object(m))
}

async fn send(a: &Args, deadline: Instant) -> Result<Value, LgError> {
    if a.target == Target::Nchan {
        return Ok(json!({
            "applicable": false,
            "reason": "nchan has no request/response over one HTTP call (/sse/send has no nchan equivalent)",
        }));
    }
    let mut p = measured(a, "s", Job::Send, a.requests, deadline).await?;
    let mut m = Map::new();
    m.insert("devices".into(), json!(a.devices));
    m.insert("connections".into(), json!(a.connections));
    m.insert("requests".into(), json!(p.up.rtt_ns.len()));
    m.insert("ok".into(), json!(p.up.delivered));
    m.insert("failed".into(), json!(p.up.failed + p.up.queue_full));
    m.insert(
        "requests_per_s".into(),
        json!(stats::rate(p.up.delivered, p.answered.as_secs_f64())),
    );
    m.insert("rtt_us".into(), stats::summary_us(&mut p.up.rtt_ns));
    m.insert("cdf_us".into(), stats::cdf_us(&p.up.rtt_ns));
    m.insert("loadgen_cpu_util".into(), p.loadgen_util.clone());
    m.insert("devices_closed_early".into(), json!(p.closed_early));
    if !p.up.errors.is_empty() {
        m.insert("errors".into(), json!(p.up.errors));
    }
    m.extend(cpu_fields(p.before, p.after, p.up.delivered, "request"));
    Ok(Value::Object(m))
}

async fn connect(a: &Args, deadline: Instant) -> Result<Value, LgError> {
    need_fds(a.devices)?;
    let before = snap(a)?;
    let self0 = self_ns();
    let mut c = device::connect_many(
        a.device_addr,
        a.target,
        &run_prefix("c"),
        a.devices,
        a.concurrency,
        a.source_ips,
        deadline,
    )
    .await?;
    let after = snap(a)?;
    let util = loadgen_util(self0, self_ns(), c.elapsed);
    let n = c.devices.len() as u64;
    let set = DeviceSet::spawn(std::mem::take(&mut c.devices), Mode::Count, 0);
    let _ = set.stop().await;
    let mut m = Map::new();
    m.insert("devices".into(), json!(a.devices));
    m.insert("concurrency".into(), json!(a.concurrency));
    m.insert("connected".into(), json!(n));
    m.insert("elapsed_s".into(), json!(secs(c.elapsed)));
    m.insert(
        "connects_per_s".into(),
        json!(stats::rate(n, c.elapsed.as_secs_f64())),
    );
    m.insert(
        "handshake_us".into(),
        stats::summary_us(&mut c.handshake_ns),
    );
    m.insert("loadgen_cpu_util".into(), util);
    m.extend(cpu_fields(before, after, n, "connect"));
    Ok(Value::Object(m))
}

async fn idle(a: &Args, deadline: Instant) -> Result<Value, LgError> {
    if a.server_pids.is_empty() {
        return Err(LgError::Args("idle needs --server-pid".into()));
    }
    need_fds(a.devices)?;
    let before = procfs::snap(&a.server_pids)?;
    let c = device::connect_many(
        a.device_addr,
        a.target,
        &run_prefix("i"),
        a.devices,
        a.concurrency,
        a.source_ips,
        deadline,
    )
    .await?;
    let connect_s = c.elapsed;
    let n = c.devices.len() as u64;
    // Devices keep reading so heartbeat pings are answered while the RSS is read.
    let set = DeviceSet::spawn(c.devices, Mode::Count, 0);
    let until = (Instant::now() + REGISTER_TIMEOUT).min(deadline + REGISTER_TIMEOUT);
    let mut registered = 0;
    while Instant::now() < until {
        registered = a.target.registered(a.device_addr).await?;
        if registered >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if registered < n {
        return Err(LgError::Timeout("server never counted every idle device"));
    }
    tokio::time::sleep(IDLE_SETTLE).await;
    let with = procfs::snap(&a.server_pids)?;
    let closed_early = {
        let outs = set.stop().await;
        outs.iter().filter(|o| o.closed_early).count()
    };
    let grown = with.rss_kib.saturating_sub(before.rss_kib);
    let per_dev = (grown * 1024) as f64 / n.max(1) as f64;
    Ok(json!({
        "devices": n,
        "server_pids": a.server_pids.len(),
        "idle_rss_kib": before.rss_kib,
        "idle_rss_anon_kib": before.rss_anon_kib,
        "idle_rss_file_kib": before.rss_file_kib,
        "rss_kib_with_devices": with.rss_kib,
        "rss_anon_kib_with_devices": with.rss_anon_kib,
        "rss_file_kib_with_devices": with.rss_file_kib,
        "rss_per_device_bytes": per_dev.round(),
        "registered": registered,
        "connect_s": secs(connect_s),
        "connects_per_s": stats::rate(n, connect_s.as_secs_f64()),
        "devices_closed_early": closed_early,
    }))
}
