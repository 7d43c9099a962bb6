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
pub mod relay;
pub mod units;

pub use buf::OutBuf;

/// What the connection's worker hands to a protocol on every call.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    /// The current `Date` header value in IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`),
    /// refreshed by the worker at most once per second.
    pub date: &'a [u8],
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
pub trait Protocol: Default + Send + 'static {
    /// Short name used in logs and summaries.
    const NAME: &'static str;

    /// Feed bytes received from the peer.
    fn on_data(&mut self, input: &[u8], out: &mut Vec<u8>, ctx: &Ctx<'_>) -> Progress;

    /// The peer shut down its sending side (read returned 0).
    fn on_eof(&mut self, out: &mut Vec<u8>, ctx: &Ctx<'_>) -> Progress;

    /// True when the connection sits between requests with nothing partially received, i.e.
    /// closing it now loses nothing (used by graceful shutdown and idle timeouts).
    fn is_idle(&self) -> bool;
}
