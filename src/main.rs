//! The `wssed` binary: flags, allocator, runtime, exit codes (0 clean, 1 failure, 2 bad settings).

use std::process::ExitCode;

use wssed::net::listener;
use wssed::ops::settings::{self, Command, Config};
use wssed::ops::{build_info, logger, memory, systemd};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = match settings::parse_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wssed: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            print!("{}", settings::help());
            ExitCode::SUCCESS
        }
        Command::Version => {
            print!("{}", build_info::text());
            ExitCode::SUCCESS
        }
        Command::CheckConfig(config) => {
            print!("{}", config.to_toml());
            // A comment, so the output stays a settings file that can be fed back.
            println!("# memory budget in force: {}", memory::in_force(&config));
            ExitCode::SUCCESS
        }
        Command::Run(config) => run(config),
    }
}

fn run(config: Config) -> ExitCode {
    let _ = logger::init(config.log_level);
    // Socket activation hands us a listening socket; `listen` applies only without one.
    let listener = match systemd::listen_socket() {
        Some(l) => {
            log::info!("using the listening socket passed by the service manager");
            l
        }
        None => match listener::bind(config.listen) {
            Ok(l) => l,
            Err(e) => {
                log::error!("cannot listen on {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        },
    };
    // One event loop by default: no cross-thread wakeups on the push path, the smallest
    // footprint, and the watchdog's "event loop answered" check means exactly that loop.
    let mut builder = if config.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.worker_threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(listener::run(config, listener, |_| {})) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
