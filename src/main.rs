//! `ringpoll serve | load | compare`: the command line, nothing more.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ringpoll", version, about = "Thread-per-core TCP server, load generator and I/O-model benchmark")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sharded server (echo, HTTP/1.1 plaintext or L4 proxy).
    Serve(ringpoll_server::config::flags::ServeArgs),
    /// Generate load against an echo or HTTP server (wrk-style).
    Load(ringpoll_load::LoadArgs),
    /// Run every backend on the same workloads side by side and write tables and plots.
    Compare(ringpoll_compare::CompareArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.cmd {
        Cmd::Serve(args) => return ringpoll_server::serve::run(&args),
        Cmd::Load(args) => ringpoll_load::run(args),
        Cmd::Compare(args) => ringpoll_compare::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringpoll: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RINGPOLL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
