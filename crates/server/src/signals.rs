//! SIGINT/SIGTERM → graceful shutdown of every worker.
//!
//! The signals are blocked in the calling thread before the workers are spawned (threads
//! inherit the mask), and one dedicated thread waits for them with sigwait. The first signal
//! starts a graceful shutdown; a second one exits at once.

use std::io;
use std::sync::Arc;

use nix::sys::signal::{SigSet, Signal};
use tracing::warn;

use crate::Shutdown;

/// Block SIGINT and SIGTERM in the calling thread (call before spawning workers).
pub fn block_shutdown_signals() -> io::Result<()> {
    shutdown_set().thread_block().map_err(io::Error::from)
}

fn shutdown_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Spawn the thread that turns signals into a graceful shutdown.
pub fn spawn_signal_thread(shutdown: Arc<Shutdown>) -> io::Result<()> {
    std::thread::Builder::new().name("ringpoll-signals".into()).spawn(move || {
        let set = shutdown_set();
        match set.wait() {
            Ok(sig) => {
                tracing::info!("{sig}: stopping (finishing in-flight work; send again to exit at once)");
                shutdown.trigger();
            }
            Err(e) => {
                warn!("waiting for signals: {e}");
                return;
            }
        }
        if let Ok(sig) = set.wait() {
            eprintln!("{sig} again: exiting now");
            std::process::exit(1);
        }
    })?;
    Ok(())
}
