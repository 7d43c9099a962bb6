//! `ringpoll load`: a wrk-class load generator for echo and HTTP/1.1 servers.
//!
//! - Thread per core: each load thread runs its own epoll event loop (the one-shot
//!   [`Poller`](ringpoll_sys::poller::Poller)) over its share of the
//!   connections; no thread per connection, no allocation per request, reads batched.
//! - Echo mode verifies every byte against a deterministic pattern
//!   ([`ringpoll_proto::client::pattern`]); HTTP mode frames every response
//!   ([`ringpoll_proto::client::ResponseFramer`]) and counts status classes.
//! - Latency goes into per-thread HDR histograms, merged at the end. With a rate (open loop)
//!   each request has an intended send time on a fixed per-connection schedule and latency is
//!   measured from it (coordinated-omission correction, as wrk2 does); the uncorrected
//!   histogram is kept too.
//! - Connection failures are counted and retried with backoff (10 ms doubling to 1 s); a
//!   target nothing can connect to ends the run early with a clear error.
//!
//! The library API is [`run_load`] / [`run_load_until`] returning a [`Report`] (the very
//! object `--json` prints; field reference in `crates/load/README.md`).
#![forbid(unsafe_code)]

mod cli;
mod config;
mod conn;
mod describe;
mod driver;
pub mod histogram;
mod merge;
mod report;
mod request;
mod stats;
mod thread;
mod worker;

pub use cli::{run, CpuList, LoadArgs};
pub use config::{parse_cpus, parse_target, LoadConfig, LoadMode, LoadPoller, Target};
pub use describe::describe_connect_error;
pub use driver::{run_load, run_load_until};
pub use merge::{merge_reports, window_overlap};
pub use report::{fmt_bytes, fmt_us, Errors, Latency, Report, StatusClasses, TimelineRow};
pub use request::{parse_header, RequestSpec};
pub use ringpoll_proto::units;
