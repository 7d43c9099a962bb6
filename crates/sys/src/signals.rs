//! SIGINT/SIGTERM, handled the same way by `serve` and `load`: the signals are blocked in the
//! main thread before any other thread is spawned (threads inherit the mask), and one
//! dedicated thread waits for them with sigwait. The first signal runs the caller's action (a
//! graceful shutdown, or stopping a load run with partial results); a second one exits at
//! once.

use std::io;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

/// Block SIGINT and SIGTERM in the calling thread. Call it before spawning any thread, so
/// that every thread inherits the mask and only the signal thread receives them.
pub fn block_termination_signals() -> io::Result<()> {
    crate::count_syscall();
    termination_set().thread_block().map_err(io::Error::from)
}

fn termination_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// What a signal after the first one does.
#[derive(Clone, Copy, Debug)]
pub struct Repeat {
    /// Signals arriving this soon after the first are ignored: `timeout -s INT` signals the
    /// process and then its group, which is one interruption, not two.
    pub ignore_within: Duration,
    /// The process exits with this code.
    pub exit_code: i32,
}

/// Spawn the signal thread (after [`block_termination_signals`]). `on_first` runs once, on the
/// first SIGINT or SIGTERM, with the signal's name; a later one (see [`Repeat`]) prints
/// `SIGNAL again: exiting now` on stderr and exits the process.
pub fn spawn_signal_thread(on_first: impl FnOnce(&'static str) + Send + 'static, repeat: Repeat) -> io::Result<()> {
    std::thread::Builder::new().name("ringpoll-signals".into()).spawn(move || {
        let set = termination_set();
        let first = match set.wait() {
            Ok(sig) => sig,
            Err(e) => {
                tracing::warn!("waiting for signals: {e}");
                return;
            }
        };
        let at = Instant::now();
        on_first(first.as_str());
        while let Ok(sig) = set.wait() {
            if at.elapsed() >= repeat.ignore_within {
                eprintln!("{sig} again: exiting now");
                std::process::exit(repeat.exit_code);
            }
        }
    })?;
    Ok(())
}
