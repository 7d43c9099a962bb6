//! What the driver and the load threads exchange: the thread's assignment, the live
//! counters behind the progress line, timeline messages, and the thread's final result.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64};

use hdrhistogram::Histogram;

use crate::stats::Recorder;

/// Counters a load thread publishes for the driver (progress line, dead-target detection).
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Live {
    /// Successful requests of the measured window.
    pub requests: AtomicU64,
    /// Replies of any kind since the start, warm-up included.
    pub replies: AtomicU64,
    pub errors: AtomicU64,
    pub connected: AtomicBool,
    /// Failed connects since the start (warmup included).
    pub connect_failures: AtomicU64,
}

/// Which connections a thread runs.
#[derive(Clone, Copy, Debug)]
pub struct ThreadSpec {
    pub index: usize,
    /// Global index of its first active connection.
    pub first: usize,
    pub active: usize,
    /// Global index of its first idle connection.
    pub first_idle: usize,
    pub idle: usize,
    pub cpu: Option<usize>,
    /// `-n`: this thread's share of the requests to send in the window.
    pub budget: Option<u64>,
}

/// From the threads to the driver.
#[derive(Debug)]
pub enum Msg {
    /// `--timeline`: latencies of the requests completed during second `sec` of the window.
    Second { sec: u64, hist: Histogram<u64> },
}

/// What a thread hands back when it is done.
#[derive(Debug)]
pub struct ThreadOut {
    pub rec: Recorder,
    pub cpu_us: u64,
    /// Socket and poller system calls made over the window.
    pub syscalls: u64,
    /// When its measured window ended (ns since the epoch).
    pub end: u64,
    pub connected_ever: bool,
    pub last_connect_error: Option<io::Error>,
    pub idle_connected: usize,
    pub incomplete: u64,
    /// The first error counted in the window, described.
    pub first_error: Option<String>,
}

/// CPU time (user + system) of the calling thread, in µs.
#[must_use]
pub fn thread_cpu_us() -> u64 {
    use nix::sys::resource::{getrusage, UsageWho};
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(u) => {
            let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
            us(u.user_time()) + us(u.system_time())
        }
        Err(_) => 0,
    }
}
