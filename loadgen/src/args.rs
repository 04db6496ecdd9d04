//! Command-line flags. Every count and time has a default and an upper bound.

use std::net::SocketAddr;

use crate::error::LgError;
use crate::target::Target;

/// Usage text.
pub const USAGE: &str = "\
loadgen --scenario idle|push|send|batch|connect --target wssed|nchan --url http://127.0.0.1:PORT
        [--device-url http://127.0.0.1:PORT] [--server-pid PID[,PID...]] [--devices N] [--pushes N] [--rate PER_SEC]
        [--connections N] [--batch-size N] [--batches N] [--requests N]
        [--concurrency N] [--source-ips N] [--max-secs S] [--label TEXT]
Prints one JSON line. Targets must be on 127.0.0.0/8. --device-url puts the devices on another
server than the one --url sends requests to (another node of a wssed cluster).";

/// Most devices one run may open.
pub const MAX_DEVICES: usize = 20_000;
/// Most upstream connections.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most pushes, batches or requests in one run.
pub const MAX_COUNT: u64 = 10_000_000;
/// Longest run, seconds.
pub const MAX_SECS: u64 = 600;
/// Largest batch.
pub const MAX_BATCH_SIZE: usize = 1000;

/// A load scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// RSS just after start and per idle device.
    Idle,
    /// Push throughput and push-to-device latency.
    Push,
    /// `/sse/send` round trip.
    Send,
    /// `/sse/push/batch` throughput.
    Batch,
    /// Device connect rate.
    Connect,
}

impl Scenario {
    /// Name used in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Push => "push",
            Self::Send => "send",
            Self::Batch => "batch",
            Self::Connect => "connect",
        }
    }
}

/// Parsed flags.
#[derive(Clone, Debug)]
pub struct Args {
    /// Which scenario.
    pub scenario: Scenario,
    /// Which server.
    pub target: Target,
    /// The server's address (loopback only): requests go there.
    pub addr: SocketAddr,
    /// Where devices connect (and are counted): `--device-url`, else `addr`.
    pub device_addr: SocketAddr,
    /// Server processes whose RSS and CPU time are read (nginx: master and worker).
    pub server_pids: Vec<u32>,
    /// Devices connected.
    pub devices: usize,
    /// Pushes sent (push scenario).
    pub pushes: u64,
    /// Pushes per second for a paced run; unpaced when absent.
    pub rate: Option<u64>,
    /// Upstream keep-alive connections.
    pub connections: usize,
    /// Items per batch.
    pub batch_size: usize,
    /// Batches sent.
    pub batches: u64,
    /// `/sse/send` requests.
    pub requests: u64,
    /// WebSocket handshakes in flight at once.
    pub concurrency: usize,
    /// Loopback source addresses devices spread over (127.0.0.1 ..= 127.0.0.N).
    pub source_ips: u8,
    /// Upper bound on the run, seconds.
    pub max_secs: u64,
    /// Free text copied into the JSON line.
    pub label: Option<String>,
}

fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, LgError> {
    let v = v.ok_or_else(|| LgError::Args(format!("{flag} needs a value")))?;
    v.parse()
        .map_err(|_| LgError::Args(format!("{flag}: not a number: {v}")))
}

fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    flag: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, LgError> {
    if v < lo || v > hi {
        return Err(LgError::Args(format!(
            "{flag} must be in {lo}..={hi}, got {v}"
        )));
    }
    Ok(v)
}

/// Parses a `http://HOST:PORT` URL into a loopback socket address.
pub fn parse_url(url: &str) -> Result<SocketAddr, LgError> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = if let Some(p) = hostport.strip_prefix("localhost:") {
        format!("127.0.0.1:{p}")
    } else {
        hostport.to_string()
    };
    let addr: SocketAddr = hostport
        .parse()
        .map_err(|_| LgError::Args(format!("--url: want http://127.0.0.1:PORT, got {url}")))?;
    if !addr.ip().is_loopback() {
        return Err(LgError::NotLoopback(addr.to_string()));
    }
    Ok(addr)
}

/// Parses the flags (without the program name).
pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, LgError> {
    let mut scenario = None;
    let mut target = None;
    let mut addr = None;
    let mut device_addr = None;
    let mut pids = Vec::new();
    let mut devices = None;
    let mut pushes = None;
    let mut rate = None;
    let mut connections = None;
    let mut batch_size = 100;
    let mut batches = 1000;
    let mut requests = 10_000;
    let mut concurrency = 64;
    let mut source_ips = 8u8;
    let mut max_secs = 60;
    let mut label = None;
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--scenario" => {
                scenario = Some(match it.next().as_deref() {
                    Some("idle") => Scenario::Idle,
                    Some("push") => Scenario::Push,
                    Some("send") => Scenario::Send,
                    Some("batch") => Scenario::Batch,
                    Some("connect") => Scenario::Connect,
                    other => return Err(LgError::Args(format!("--scenario: unknown {other:?}"))),
                })
            }
            "--target" => {
                target = Some(match it.next().as_deref() {
                    Some("wssed") => Target::Wssed,
                    Some("nchan") => Target::Nchan,
                    other => return Err(LgError::Args(format!("--target: unknown {other:?}"))),
                })
            }
            "--url" => {
                let u = it
                    .next()
                    .ok_or_else(|| LgError::Args("--url needs a value".into()))?;
                addr = Some(parse_url(&u)?);
            }
            "--device-url" => {
                let u = it
                    .next()
                    .ok_or_else(|| LgError::Args("--device-url needs a value".into()))?;
                device_addr = Some(parse_url(&u)?);
            }
            "--server-pid" => {
                let v = it
                    .next()
                    .ok_or_else(|| LgError::Args("--server-pid needs a value".into()))?;
                for p in v.split(',').filter(|p| !p.is_empty()).take(16) {
                    pids.push(num::<u32>("--server-pid", Some(p.to_string()))?);
                }
            }
            "--devices" => {
                devices = Some(bounded(
                    "--devices",
                    num(&flag, it.next())?,
                    1,
                    MAX_DEVICES,
                )?)
            }
            "--pushes" => pushes = Some(bounded("--pushes", num(&flag, it.next())?, 1, MAX_COUNT)?),
            "--rate" => rate = Some(bounded("--rate", num(&flag, it.next())?, 1, 10_000_000)?),
            "--connections" => {
                connections = Some(bounded(
                    "--connections",
                    num(&flag, it.next())?,
                    1,
                    MAX_CONNECTIONS,
                )?)
            }
            "--batch-size" => {
                batch_size = bounded("--batch-size", num(&flag, it.next())?, 1, MAX_BATCH_SIZE)?
            }
            "--batches" => batches = bounded("--batches", num(&flag, it.next())?, 1, MAX_COUNT)?,
            "--requests" => requests = bounded("--requests", num(&flag, it.next())?, 1, MAX_COUNT)?,
            "--concurrency" => {
                concurrency = bounded("--concurrency", num(&flag, it.next())?, 1, 1024)?
            }
            "--source-ips" => source_ips = bounded("--source-ips", num(&flag, it.next())?, 1, 254)?,
            "--max-secs" => max_secs = bounded("--max-secs", num(&flag, it.next())?, 1, MAX_SECS)?,
            "--label" => label = it.next(),
            "-h" | "--help" => return Err(LgError::Args(USAGE.to_string())),
            other => return Err(LgError::Args(format!("unknown flag {other}"))),
        }
    }
    let scenario = scenario.ok_or_else(|| LgError::Args("--scenario is required".into()))?;
    let target = target.ok_or_else(|| LgError::Args("--target is required".into()))?;
    let addr = addr.ok_or_else(|| LgError::Args("--url is required".into()))?;
    let devices = devices.unwrap_or(match scenario {
        Scenario::Idle => 1000,
        Scenario::Connect => 2000,
        _ => 100,
    });
    let connections = connections.unwrap_or(match scenario {
        Scenario::Send => 1,
        Scenario::Batch => 8,
        _ => 32,
    });
    // A paced run lasts ten seconds unless told otherwise.
    let pushes = pushes.unwrap_or(match rate {
        Some(r) => (r * 10).min(MAX_COUNT),
        None => 100_000,
    });
    Ok(Args {
        scenario,
        target,
        addr,
        device_addr: device_addr.unwrap_or(addr),
        server_pids: pids,
        devices,
        pushes,
        rate,
        connections,
        batch_size,
        batches,
        requests,
        concurrency,
        source_ips,
        max_secs,
        label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, LgError> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn loopback_only() {
        assert!(parse_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_url("http://localhost:8080/").is_ok());
        assert!(matches!(
            parse_url("http://10.0.0.1:80"),
            Err(LgError::NotLoopback(_))
        ));
        assert!(matches!(
            parse_url("http://192.168.1.1:80"),
            Err(LgError::NotLoopback(_))
        ));
    }

    #[test]
    fn defaults_and_bounds() {
        let a =
            args("--scenario push --target nchan --url http://127.0.0.1:9 --rate 1000").unwrap();
        assert_eq!(a.pushes, 10_000);
        assert_eq!(a.connections, 32);
        assert_eq!(a.devices, 100);
        assert!(
            args("--scenario push --target nchan --url http://127.0.0.1:9 --devices 0").is_err()
        );
        assert!(
            args("--scenario push --target nchan --url http://127.0.0.1:9 --max-secs 9999")
                .is_err()
        );
        assert!(args("--scenario nope --target nchan --url http://127.0.0.1:9").is_err());
        assert_eq!(
            a.device_addr, a.addr,
            "devices on the requests' server by default"
        );
        let b = args("--scenario push --target wssed --url http://127.0.0.1:9 --device-url http://127.0.0.1:10")
            .unwrap();
        assert_eq!(b.device_addr.port(), 10);
        assert!(args("--scenario push --target wssed --url http://127.0.0.1:9 --device-url http://10.0.0.1:10").is_err());
    }
}
