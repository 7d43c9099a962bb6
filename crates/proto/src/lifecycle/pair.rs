//! A proxied client and its upstream, from accept to close.
//!
//! [`ProxyPair`] wraps the byte [`Relay`] (what to read, write, shut down) with what happens
//! around it: connecting to an upstream chosen by the worker's balancer, the connect deadline,
//! one retry on another upstream when the connect fails or times out (reported to the balancer
//! for passive health), forwarding FINs once everything before them was sent, the idle and
//! half-close deadlines, and the close reason.
//!
//! The transport moves the bytes (copied through the relay's buffers, spliced through pipes, or
//! sent straight out of io_uring receive buffers) and reports them here; the pair decides.

use std::time::{Duration, Instant};

use super::{earliest, CloseReason, Stats};
use crate::buf::Watermarks;
use crate::relay::{Relay, Side};

/// The deadlines of a proxy pair (`None`: off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairTimeouts {
    /// Connecting to an upstream (then the next one is tried, once).
    pub connect: Duration,
    /// Nothing moved either way.
    pub idle: Option<Duration>,
    /// One direction finished and nothing moved since.
    pub half_close: Option<Duration>,
}

impl Default for PairTimeouts {
    /// nginx `proxy_connect_timeout`-like 3s, HAProxy-like 600s idle, 60s half-closed.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            idle: Some(Duration::from_secs(600)),
            half_close: Some(Duration::from_secs(60)),
        }
    }
}

/// Everything a pair needs to know about its listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairConfig {
    pub timeouts: PairTimeouts,
    pub watermarks: Watermarks,
    /// Other upstreams tried after a failed connect.
    pub retries: u8,
}

impl Default for PairConfig {
    fn default() -> Self {
        Self { timeouts: PairTimeouts::default(), watermarks: Watermarks::default(), retries: 1 }
    }
}

/// The worker's upstream choice, as far as a pair needs it.
pub trait Balance {
    /// The connect to upstream `i` failed at `now` (passive health counts it).
    fn connect_failed(&mut self, i: usize, now: Instant);
    /// The connect to upstream `i` succeeded.
    fn connected(&mut self, i: usize);
    /// Another upstream than `failed` to try now, if one is usable.
    fn retry(&mut self, failed: usize, now: Instant) -> Option<usize>;
    /// A pair that used upstream `i` is gone (for least-connections).
    fn released(&mut self, i: usize);
}

/// What the transport should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairAction {
    /// Keep reading what [`ProxyPair::wants_read`] says and sending what is pending.
    Continue,
    /// Connect (again) to this upstream; the previous upstream socket is done with.
    Connect(usize),
    /// Shut down this side's write half, then call [`ProxyPair::on_shut_down`].
    ShutdownWrite(Side),
    /// Close both sockets (counted already); abortive reasons reset both peers.
    Close(CloseReason),
}

/// One client and its upstream.
#[derive(Debug)]
pub struct ProxyPair {
    relay: Relay,
    upstream: usize,
    attempts: u8,
    /// Some while connecting: when the current attempt started.
    connecting: Option<Instant>,
    /// A retry was decided and not yet handed to the transport.
    reconnect: bool,
    started: Instant,
    last_active: Instant,
    /// When the first direction finished.
    half_since: Option<Instant>,
    close_now: Option<CloseReason>,
    closed: bool,
    /// Bytes received from each side, indexed by [`Side`].
    bytes_from: [u64; 2],
}

impl ProxyPair {
    /// A pair accepted at `now`, about to connect to `upstream`.
    #[must_use]
    pub fn new(now: Instant, upstream: usize, cfg: &PairConfig) -> Self {
        Self {
            relay: Relay::new(cfg.watermarks),
            upstream,
            attempts: 1,
            connecting: Some(now),
            reconnect: false,
            started: now,
            last_active: now,
            half_since: None,
            close_now: None,
            closed: false,
            bytes_from: [0; 2],
        }
    }

    /// The upstream being connected to, or connected.
    #[must_use]
    pub const fn upstream(&self) -> usize {
        self.upstream
    }

    #[must_use]
    pub const fn is_connecting(&self) -> bool {
        self.connecting.is_some()
    }

    #[must_use]
    pub const fn is_closed(&self) -> bool {
        self.closed
    }

    /// When the client was accepted.
    #[must_use]
    pub const fn started(&self) -> Instant {
        self.started
    }

    /// Bytes received from `side` so far.
    #[must_use]
    pub const fn bytes_from(&self, side: Side) -> u64 {
        self.bytes_from[side as usize]
    }

    /// The byte relay, for the transport's questions (what to write, pipe state).
    #[must_use]
    pub const fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The byte relay, for the transport's pipe bookkeeping (`pipe_blocked`).
    pub fn relay_mut(&mut self) -> &mut Relay {
        &mut self.relay
    }

    /// Whether the transport should read `side` now.
    #[must_use]
    pub fn wants_read(&self, side: Side) -> bool {
        !self.closed && self.close_now.is_none() && self.relay.wants_read(side)
    }

    /// The connect succeeded: relaying starts.
    pub fn on_connected(&mut self, now: Instant, bal: &mut impl Balance) {
        if self.connecting.take().is_some() {
            bal.connected(self.upstream);
            self.relay.connected();
            self.last_active = now;
        }
    }

    /// The connect failed: count it against the upstream and retry elsewhere once, or give up.
    pub fn on_connect_failed(&mut self, now: Instant, cfg: &PairConfig, bal: &mut impl Balance) {
        if self.connecting.is_none() || self.closed {
            return;
        }
        bal.connect_failed(self.upstream, now);
        let next = if self.attempts <= cfg.retries { bal.retry(self.upstream, now) } else { None };
        match next {
            Some(i) => {
                bal.released(self.upstream);
                self.upstream = i;
                self.attempts += 1;
                self.connecting = Some(now);
                self.reconnect = true;
            }
            None => self.abort(CloseReason::Upstream),
        }
    }

    /// Bytes read from `side` into the relay's buffer (copying transports).
    pub fn received(&mut self, side: Side, data: &[u8], now: Instant, st: &mut Stats) {
        if self.relay.received(side, data) {
            self.count_in(side, data.len(), now, st);
        }
    }

    /// Bytes read from `side` that the transport holds itself (pipes, receive buffers).
    pub fn received_counted(&mut self, side: Side, n: usize, now: Instant, st: &mut Stats) {
        if self.relay.received_piped(side, n) {
            self.count_in(side, n, now, st);
        }
    }

    fn count_in(&mut self, side: Side, n: usize, now: Instant, st: &mut Stats) {
        let was = self.relay.is_paused(side);
        self.bytes_from[side as usize] += n as u64;
        st.bytes_in += n as u64;
        st.requests += 1;
        self.last_active = now;
        if self.relay.is_paused(side) && !was {
            st.backpressure_pauses += 1;
        }
    }

    /// `n` bytes of [`Relay::outgoing`] were written to `side`.
    pub fn sent(&mut self, side: Side, n: usize, now: Instant, st: &mut Stats) {
        self.relay.sent(side, n);
        self.count_out(n, now, st);
    }

    /// `n` bytes the transport held were written to `side`.
    pub fn sent_counted(&mut self, side: Side, n: usize, now: Instant, st: &mut Stats) {
        self.relay.sent_piped(side, n);
        self.count_out(n, now, st);
    }

    fn count_out(&mut self, n: usize, now: Instant, st: &mut Stats) {
        st.bytes_out += n as u64;
        if n > 0 {
            self.last_active = now;
        }
    }

    /// `side` sent FIN.
    pub fn received_eof(&mut self, side: Side, now: Instant) {
        if !self.closed {
            self.relay.received_eof(side);
            self.last_active = now;
        }
    }

    /// A socket of the pair failed: the pair ends now and both peers are reset.
    pub fn on_error(&mut self) {
        self.relay.reset();
        self.abort(CloseReason::Error);
    }

    /// Close at the next action (the shutdown deadline, a registration failure).
    pub fn abort(&mut self, reason: CloseReason) {
        if !self.closed && self.close_now.is_none() {
            self.close_now = Some(reason);
        }
    }

    /// `side`'s write half was shut down.
    pub fn on_shut_down(&mut self, side: Side, now: Instant) {
        self.relay.shut_down(side);
        if self.half_since.is_none() && !self.relay.is_done() {
            self.half_since = Some(now);
        }
    }

    /// What to do next; call after every event, until it answers `Continue` or `Close`.
    pub fn next_action(&mut self, st: &mut Stats) -> PairAction {
        if self.closed {
            return PairAction::Continue;
        }
        if let Some(reason) = self.close_now.take() {
            return self.close(reason, st);
        }
        if std::mem::take(&mut self.reconnect) {
            return PairAction::Connect(self.upstream);
        }
        if self.connecting.is_some() {
            return PairAction::Continue;
        }
        for side in Side::BOTH {
            if self.relay.should_shutdown(side) {
                return PairAction::ShutdownWrite(side);
            }
        }
        if self.relay.is_done() {
            let reason = if self.relay.is_reset() { CloseReason::Error } else { CloseReason::Normal };
            return self.close(reason, st);
        }
        PairAction::Continue
    }

    fn close(&mut self, reason: CloseReason, st: &mut Stats) -> PairAction {
        self.closed = true;
        st.count_close(reason);
        PairAction::Close(reason)
    }

    /// When [`ProxyPair::on_timer`] next has something to do.
    #[must_use]
    pub fn deadline(&self, now: Instant, cfg: &PairConfig) -> Option<Instant> {
        if self.closed {
            return None;
        }
        if self.close_now.is_some() || self.reconnect {
            return Some(now);
        }
        let t = &cfg.timeouts;
        if let Some(since) = self.connecting {
            return Some(since + t.connect);
        }
        let half = self.half_since.and_then(|h| t.half_close.map(|d| h.max(self.last_active) + d));
        earliest(half, t.idle.map(|d| self.last_active + d))
    }

    /// Apply whatever deadline has passed at `now` (nothing if none has). A connect that timed
    /// out is retried like a failed one.
    pub fn on_timer(&mut self, now: Instant, cfg: &PairConfig, bal: &mut impl Balance) {
        if self.closed || self.close_now.is_some() {
            return;
        }
        let t = &cfg.timeouts;
        if let Some(since) = self.connecting {
            if now >= since + t.connect {
                self.on_connect_failed(now, cfg, bal);
            }
            return;
        }
        if let (Some(h), Some(d)) = (self.half_since, t.half_close) {
            if now >= h.max(self.last_active) + d {
                return self.abort(CloseReason::HalfCloseTimeout);
            }
        }
        if t.idle.is_some_and(|d| now >= self.last_active + d) {
            self.abort(CloseReason::Idle);
        }
    }
}
