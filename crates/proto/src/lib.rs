//! Sans-IO protocols for ringpoll.
//!
//! Nothing in this crate touches a socket, a clock or a thread. A protocol object is fed the
//! bytes a connection received and appends what must be sent back to a caller-owned output
//! buffer; time (the cached `Date` header) comes in through [`Ctx`]. Every I/O backend of the
//! server (readiness loops and the io_uring loop alike) drives the same objects, and the tests
//! drive them in memory.
#![forbid(unsafe_code)]

pub mod buf;
pub mod client;
pub mod echo;
pub mod http;
pub mod lifecycle;
pub mod proxy_protocol;
pub mod relay;
pub mod units;
pub mod upstream;

pub use buf::OutBuf;
pub use lifecycle::{CloseReason, Stats};

/// What the connection's worker hands to a protocol on every call.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    /// The current `Date` header value in IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`),
    /// refreshed by the worker at most once per second.
    pub date: &'a [u8],
    /// The server is shutting down: end the connection after the response being produced
    /// (HTTP: `Connection: close`), so that a client never sends a request into a close.
    pub closing: bool,
}

impl<'a> Ctx<'a> {
    #[must_use]
    pub const fn new(date: &'a [u8]) -> Self {
        Self { date, closing: false }
    }
}

/// Per-connection limits a protocol enforces itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// HTTP: requests served on one connection; the last response carries
    /// `Connection: close` (0: no limit).
    pub keepalive_requests: u32,
    /// HTTP: largest request body accepted, in bytes; a larger one is answered `413` and the
    /// connection closes (as soon as the head says so, or as the chunks add up past it).
    pub max_body: u64,
}

impl Default for Limits {
    /// The server's defaults (nginx's `keepalive_requests`, a 1 MiB body).
    fn default() -> Self {
        Self { keepalive_requests: 10_000, max_body: 1 << 20 }
    }
}

impl Limits {
    /// No limits at all (tests, fuzzing).
    pub const NONE: Self = Self { keepalive_requests: 0, max_body: u64::MAX };
}

/// Where a protocol is within the current request, for the lifecycle's read deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestState {
    /// Between requests: nothing partially received (the keep-alive deadline applies).
    Idle,
    /// Part of a request head is held (the head deadline applies).
    Head,
    /// A body is being received (the body deadline applies between reads).
    Body,
}

/// What a protocol call did, beyond the bytes it appended to the output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Requests (HTTP) or messages (echo) completed by this call.
    pub requests: u32,
    /// Once the output produced so far is flushed, close the connection. Nothing more will be
    /// produced by this protocol object.
    pub close: bool,
}

/// A per-connection protocol state machine.
///
/// Contract shared by every implementation:
/// - `on_data` consumes *all* of `input` (keeping whatever partial frame it needs internally,
///   bounded by the protocol's own limits) and appends responses to `out`;
/// - once a call returns `close: true`, further input is ignored;
/// - no call panics, whatever the bytes.
pub trait Protocol: Send + 'static {
    /// Short name used in logs and summaries.
    const NAME: &'static str;

    /// A fresh connection.
    fn new(limits: &Limits) -> Self;

    /// Feed bytes received from the peer.
    fn on_data(&mut self, input: &[u8], out: &mut Vec<u8>, ctx: &Ctx<'_>) -> Progress;

    /// The peer shut down its sending side (read returned 0).
    fn on_eof(&mut self, out: &mut Vec<u8>, ctx: &Ctx<'_>) -> Progress;

    /// Where the connection is within a request.
    fn request_state(&self) -> RequestState;

    /// A read deadline of the lifecycle expired (request head or body too slow): append what
    /// the peer should be told (HTTP: `408`) and close.
    fn on_read_timeout(&mut self, out: &mut Vec<u8>, ctx: &Ctx<'_>) -> Progress;

    /// True when the connection sits between requests with nothing partially received, i.e.
    /// closing it now loses nothing.
    fn is_idle(&self) -> bool {
        self.request_state() == RequestState::Idle
    }

    /// Whether the output for the next input would be that input, unchanged (echo). A
    /// completion transport may then send received bytes straight out of its receive buffer
    /// and report them with [`Protocol::on_passed_through`] instead of [`Protocol::on_data`].
    fn passes_through(&self) -> bool {
        false
    }

    /// `n` bytes of input went out unchanged, by the transport, as this protocol's output
    /// (only called while [`Protocol::passes_through`]): account for them as `on_data` would.
    fn on_passed_through(&mut self, n: usize) -> Progress {
        let _ = n;
        Progress::default()
    }
}
