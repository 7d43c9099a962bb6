//! Connection lifecycles, sans-IO: what happens to a connection from accept to close, written
//! once for every backend.
//!
//! A lifecycle object is driven by events (bytes received, end of input, bytes sent, an error,
//! a timer) with `now` passed in, and asked what to do next (read or not, what to send, shut
//! down the write side, close with a reason) and when it next needs a timer
//! ([`stream::StreamConn::deadline`]). The readiness loop and the completion loop of the server
//! only translate those answers into system calls or ring operations; the rules (phases,
//! watermarks, half-close, linger, deadlines, upstream choice and retry) live here and are
//! tested here, in memory.
//!
//! - [`stream::StreamConn`]: one socket speaking a [`crate::Protocol`] (echo, HTTP/1.1).
//! - [`pair::ProxyPair`]: a client and its upstream, around the byte [`crate::relay::Relay`].

pub mod pair;
#[cfg(test)]
mod pair_tests;
#[cfg(test)]
mod pass_tests;
pub mod stream;
#[cfg(test)]
mod tests;
pub mod wheel;

/// Why a connection (or a proxy pair) was closed. Each reason is counted on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The peer finished (EOF) or the protocol ended the connection, after everything was sent.
    Normal,
    /// Reset, broken pipe, a socket error, or a proxy side that failed.
    Error,
    /// No byte moved either way for the idle timeout.
    Idle,
    /// The request head did not arrive within the head deadline (HTTP: answered 408).
    HeaderTimeout,
    /// The request body stalled longer than the body deadline (HTTP: answered 408).
    BodyTimeout,
    /// No new request within the keep-alive timeout.
    KeepaliveTimeout,
    /// Output was pending and the peer accepted no byte of it for the send timeout.
    SendTimeout,
    /// Proxy: one direction finished and the other moved nothing for the half-close timeout.
    HalfCloseTimeout,
    /// Proxy: no upstream could be reached (connect failed or timed out, or none is up).
    Upstream,
    /// Proxy: a PROXY protocol header was required and was malformed, missing or too slow.
    ProxyHeader,
    /// The shutdown deadline passed with work still pending.
    Shutdown,
}

impl CloseReason {
    pub const COUNT: usize = 11;
    pub const ALL: [CloseReason; Self::COUNT] = [
        CloseReason::Normal,
        CloseReason::Error,
        CloseReason::Idle,
        CloseReason::HeaderTimeout,
        CloseReason::BodyTimeout,
        CloseReason::KeepaliveTimeout,
        CloseReason::SendTimeout,
        CloseReason::HalfCloseTimeout,
        CloseReason::Upstream,
        CloseReason::ProxyHeader,
        CloseReason::Shutdown,
    ];

    /// The label used in summaries, metrics and access logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::Error => "error",
            CloseReason::Idle => "idle",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::BodyTimeout => "body_timeout",
            CloseReason::KeepaliveTimeout => "keepalive_timeout",
            CloseReason::SendTimeout => "send_timeout",
            CloseReason::HalfCloseTimeout => "half_close_timeout",
            CloseReason::Upstream => "upstream",
            CloseReason::ProxyHeader => "proxy_header",
            CloseReason::Shutdown => "shutdown",
        }
    }

    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The close ends the connection abortively: the peers get a reset, not a FIN.
    #[must_use]
    pub const fn is_abortive(self) -> bool {
        matches!(self, CloseReason::Error)
    }
}

/// What the lifecycle objects count, per worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes received from peers (proxy: from both sides).
    pub bytes_in: u64,
    /// Bytes sent to peers (proxy: to both sides).
    pub bytes_out: u64,
    /// Requests (HTTP), messages (echo: reads that carried data), relayed reads (proxy).
    pub requests: u64,
    /// Times reading a peer was paused by the output high watermark.
    pub backpressure_pauses: u64,
    /// Closes, indexed by [`CloseReason::index`].
    pub closed: [u64; CloseReason::COUNT],
}

impl Stats {
    pub fn count_close(&mut self, reason: CloseReason) {
        self.closed[reason.index()] += 1;
    }

    #[must_use]
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }

    #[must_use]
    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()]
    }

    pub fn add(&mut self, o: &Stats) {
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.requests += o.requests;
        self.backpressure_pauses += o.backpressure_pauses;
        for (a, b) in self.closed.iter_mut().zip(o.closed) {
            *a += b;
        }
    }
}

/// The earlier of two optional instants.
#[must_use]
pub(crate) fn earliest(a: Option<std::time::Instant>, b: Option<std::time::Instant>) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
