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
            #[cfg(feature = "tls")]
            match wssed::ops::tls::load_configured(&config) {
                Some(Ok(loaded)) => println!("# TLS certificate: {}", loaded.info),
                Some(Err(e)) => {
                    eprintln!("wssed: {e}");
                    return ExitCode::from(2);
                }
                None => {}
            }
            ExitCode::SUCCESS
        }
        Command::Run(config) => run(config),
    }
}

fn run(config: Config) -> ExitCode {
    let _ = logger::init(config.log_level);
    // The certificate and key are settings' files: a bad one exits 2 before anything binds.
    #[cfg(feature = "tls")]
    let loaded = match wssed::ops::tls::load_configured(&config) {
        Some(Ok(loaded)) => Some(loaded),
        Some(Err(e)) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
        None => None,
    };
    // Socket activation hands us listening sockets; `listen` and `tls_listen` apply only
    // to the ones it does not pass.
    let passed = systemd::listen_sockets();
    let plain = match passed.plain {
        Some(l) => {
            log::info!("using the listening socket passed by the service manager");
            Some(l)
        }
        None => match config.listen.map(|addr| (addr, listener::bind(addr))) {
            Some((_, Ok(l))) => Some(l),
            Some((addr, Err(e))) => {
                log::error!("cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
            None => None,
        },
    };
    #[cfg(feature = "tls")]
    let tls = match (passed.tls, loaded) {
        (Some(l), Some(loaded)) => {
            log::info!("using the TLS listening socket passed by the service manager");
            Some((l, loaded))
        }
        (Some(_), None) => {
            log::error!(
                "tls_cert_file: must be set when the service manager passes a socket named `{}`",
                systemd::TLS_FD_NAME
            );
            return ExitCode::from(2);
        }
        (None, Some(loaded)) => match config.tls_listen.map(|addr| (addr, listener::bind(addr))) {
            Some((_, Ok(l))) => Some((l, loaded)),
            Some((addr, Err(e))) => {
                log::error!("cannot listen for TLS on {addr}: {e}");
                return ExitCode::FAILURE;
            }
            None => {
                log::warn!("tls_cert_file is set, but tls_listen is not and no `tls` socket was passed: no TLS listener");
                None
            }
        },
        (None, None) => None,
    };
    #[cfg(not(feature = "tls"))]
    if passed.tls.is_some() {
        log::warn!(
            "the service manager passed a `tls` socket, but this build has no TLS: ignoring it"
        );
    }
    let listeners = listener::Listeners {
        plain,
        #[cfg(feature = "tls")]
        tls,
    };
    #[cfg(feature = "tls")]
    let nothing = listeners.plain.is_none() && listeners.tls.is_none();
    #[cfg(not(feature = "tls"))]
    let nothing = listeners.plain.is_none();
    if nothing {
        log::error!(
            "listen: is off and no other listener was configured or passed: nothing to listen on"
        );
        return ExitCode::from(2);
    }
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
    match runtime.block_on(listener::run(config, listeners, |_| {})) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
