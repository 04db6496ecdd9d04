//! loadgen: benchmark client for wssed and nchan on 127.0.0.1. One scenario per run, one JSON
//! line on stdout. A dev tool (scripts/bench.sh drives it); it is not shipped.

mod args;
mod clock;
mod device;
mod error;
mod http;
mod procfs;
mod scenarios;
mod stats;
mod target;

use std::process::ExitCode;
use std::time::Duration;

/// Time allowed beyond `--max-secs` for draining and closing before the run is cut.
const GRACE: Duration = Duration::from_secs(90);

fn main() -> ExitCode {
    let a = match args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("loadgen: {e}\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    // One thread: the tool is pinned to one core, and a single-threaded runtime costs least per frame.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let limit = Duration::from_secs(a.max_secs) + GRACE;
    let r = rt.block_on(async { tokio::time::timeout(limit, scenarios::run(&a)).await });
    let r = r.unwrap_or(Err(error::LgError::Timeout("whole run")));
    match r {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({
                    "scenario": a.scenario.name(),
                    "target": a.target.name(),
                    "label": a.label,
                    "error": e.to_string(),
                })
            );
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
