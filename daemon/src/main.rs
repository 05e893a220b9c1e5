//! remote-directoryd's command line; the daemon itself is the library next to it.
//!
//! remote-directoryd: opens every directory of a configuration file once and answers local
//! programs on the sockets of its `[daemon]` table, so that short-lived processes (PAM,
//! checkpassword, Postfix lookups) share one set of pools, caches and throttles.
//!
//! Foreground, logs on stderr. SIGHUP re-reads the directories; SIGTERM/SIGINT stop
//! accepting, let calls in flight finish (`daemon.shutdown-timeout`) and exit 0.
#![forbid(unsafe_code)]

use remote_directoryd::{config, run};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit status of a configuration error: the C API's DIRECTORY_RESULT_CONFIG.
const EXIT_CONFIG: u8 = 5;
/// Exit status when a socket cannot be set up or a thread started.
const EXIT_RUNTIME: u8 = 1;
const EXIT_USAGE: u8 = 2;

const USAGE: &str = "usage: remote-directoryd [-c FILE] [--check]
  -c, --config FILE  configuration file (default /etc/remote-directory.toml)
      --check        validate FILE (directories and [daemon]) and exit: 0 valid, 5 invalid
  -h, --help         this text
  -V, --version      the version";

const DEFAULT_CONFIG: &str = "/etc/remote-directory.toml";

struct Args {
    config: PathBuf,
    check: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut config = PathBuf::from(DEFAULT_CONFIG);
    let mut check = false;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-c" | "--config") => {
                config = args
                    .next()
                    .map(PathBuf::from)
                    .ok_or("-c needs a file name")?;
            }
            Some("--check") => check = true,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return Ok(None);
            }
            Some("-V" | "--version") => {
                println!("remote-directoryd {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            _ => return Err(format!("unknown argument {}", arg.to_string_lossy())),
        }
    }
    Ok(Some(Args { config, check }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remote-directoryd: {e}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (directories, daemon) = match config::load(&args.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("remote-directoryd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        println!(
            "{}: OK ({} directories, {} sockets)",
            args.config.display(),
            directories.count(),
            daemon.endpoints.len()
        );
        return ExitCode::SUCCESS;
    }
    match run(&args.config, directories, daemon) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("remote-directoryd: error: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
