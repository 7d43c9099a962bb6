//! One stream connection (echo, HTTP/1.1) from accept to close.
//!
//! [`StreamConn`] wraps a [`Protocol`] object with everything around it that does not depend
//! on how bytes move: the output buffer and what the transport holds of it, backpressure
//! (pause reading above the high watermark, resume at the low one), the closing sequence
//! (flush, shut down the write side, linger, close), half-close, and every deadline.
//!
//! # Phases
//! `Open` → (the protocol ends the connection) `Closing`: flush, then
//! [`Action::ShutdownWrite`] → `Lingering`: input is read and dropped until the peer's FIN or
//! the linger deadline, so that unread request bytes do not turn our FIN into a reset that
//! destroys the last response (nginx's lingering close) → closed. The peer's FIN while `Open`
//! goes to the protocol (which ends the connection once its output is flushed). An error, or a
//! deadline that ends the connection at once, closes from any phase.
//!
//! # Deadlines
//! [`StreamConn::deadline`] is the next instant at which [`StreamConn::on_timer`] has something
//! to do; nothing is armed or re-armed per request: the answer is derived from a few instants
//! the events update, so the caller's timer structure only ever needs the earliest one.
//! - head (`header`): from the accept, or from the first byte of a request head, to the end of
//!   that head; HTTP answers `408`. A connection that never sent a byte is just closed.
//! - body (`body`): between two reads of a request body; HTTP answers `408`.
//! - keep-alive (`keepalive`): between the end of a response and the next request. Bytes that
//!   start no request (empty lines between HTTP requests) do not move it: a peer that sends one
//!   `\r\n` a second holds nothing open. Until a first request was served, the head deadline
//!   from the accept applies instead.
//! - send (`send`): output pending and not one byte of it accepted by the peer.
//! - idle (`idle`): nothing moved either way.
//! - linger: how long a lingering close waits for the peer's FIN.
//! - while the server drains, a connection that has served something and sits between requests
//!   closes `drain_grace` after its last output (so that a client whose next request is already
//!   on its way gets it answered, with `Connection: close`, instead of a reset).

use std::time::{Duration, Instant};

use super::{earliest, CloseReason, Stats};
use crate::buf::{OutBuf, Watermarks};
use crate::{Ctx, Limits, Protocol, RequestState};

/// The deadlines of a stream connection (`None`: off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub header: Option<Duration>,
    pub body: Option<Duration>,
    pub keepalive: Option<Duration>,
    pub send: Option<Duration>,
    pub idle: Option<Duration>,
    pub linger: Duration,
    pub drain_grace: Duration,
}

/// How long a lingering close waits for the peer's FIN.
pub const LINGER: Duration = Duration::from_secs(2);
/// How long a quiet connection may stay open once the server drains.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

impl Timeouts {
    /// No deadline but the linger and the drain grace.
    pub const NONE: Self = Self {
        header: None,
        body: None,
        keepalive: None,
        send: None,
        idle: None,
        linger: LINGER,
        drain_grace: DRAIN_GRACE,
    };

    /// HTTP defaults (nginx's `client_header_timeout` / `client_body_timeout` 60s is kept for
    /// the body; the head gets 10s as HAProxy's `timeout http-request` recommends).
    #[must_use]
    pub const fn http() -> Self {
        Self {
            header: Some(Duration::from_secs(10)),
            body: Some(Duration::from_secs(60)),
            keepalive: Some(Duration::from_secs(60)),
            send: Some(Duration::from_secs(60)),
            ..Self::NONE
        }
    }

    /// Echo defaults: an echo has no requests, so only idle and send deadlines apply.
    #[must_use]
    pub const fn echo() -> Self {
        Self { send: Some(Duration::from_secs(60)), idle: Some(Duration::from_secs(300)), ..Self::NONE }
    }
}

/// Everything a stream connection needs to know about its listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    pub timeouts: Timeouts,
    pub watermarks: Watermarks,
    pub limits: Limits,
}

impl StreamConfig {
    #[must_use]
    pub fn http() -> Self {
        Self { timeouts: Timeouts::http(), watermarks: Watermarks::default(), limits: Limits::default() }
    }

    #[must_use]
    pub fn echo() -> Self {
        Self { timeouts: Timeouts::echo(), watermarks: Watermarks::default(), limits: Limits::default() }
    }
}

/// What every call is given: the time, the cached `Date`, whether the server drains, and the
/// listener's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Env<'a> {
    pub now: Instant,
    pub date: &'a [u8],
    pub draining: bool,
    pub cfg: &'a StreamConfig,
}

impl Env<'_> {
    fn ctx(&self) -> Ctx<'_> {
        Ctx { date: self.date, closing: self.draining }
    }
}

/// What the transport should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing but reading (if [`StreamConn::wants_read`]) and sending what is pending.
    Continue,
    /// Shut down the write side (FIN after the queued bytes), then call
    /// [`StreamConn::on_shutdown_done`] (or [`StreamConn::on_error`] if that failed).
    ShutdownWrite,
    /// Close the socket. The close is already counted. An [`CloseReason::is_abortive`] close
    /// should reset the peer (SO_LINGER 0).
    Close(CloseReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    Closing,
    Lingering { until: Instant },
    Closed,
}

/// What an expired deadline asks for.
enum Expiry {
    Close(CloseReason),
    /// Tell the protocol (HTTP: 408), then close gracefully with this reason.
    ReadTimeout(CloseReason),
}

/// One connection's lifecycle around its protocol object.
#[derive(Debug)]
pub struct StreamConn<P> {
    proto: P,
    /// Output not yet handed to the transport.
    out: OutBuf,
    /// A drained buffer kept for the next [`StreamConn::take_output`] (no allocation per send).
    spare: OutBuf,
    /// Bytes the transport holds and has not reported sent (completion-based I/O).
    in_flight: usize,
    phase: Phase,
    /// The peer has not sent FIN.
    read_open: bool,
    /// Reading is paused by the output high watermark.
    paused: bool,
    /// At least one request was served (HTTP: answered; echo: a read echoed).
    served: bool,
    /// Close at the next action, with this reason (an error, an expired deadline, a forced close).
    close_now: Option<CloseReason>,
    /// The reason a graceful close will be counted with.
    reason: CloseReason,
    /// The accept, or the first byte of the current request head.
    head_since: Instant,
    last_in: Instant,
    /// The last byte accepted by the peer, or when output became pending.
    last_out: Instant,
}

impl<P: Protocol> StreamConn<P> {
    /// A connection accepted at `now`.
    #[must_use]
    pub fn new(now: Instant, cfg: &StreamConfig) -> Self {
        Self {
            proto: P::new(&cfg.limits),
            out: OutBuf::new(),
            spare: OutBuf::new(),
            in_flight: 0,
            phase: Phase::Open,
            read_open: true,
            paused: false,
            served: false,
            close_now: None,
            reason: CloseReason::Normal,
            head_since: now,
            last_in: now,
            last_out: now,
        }
    }

    /// The protocol object (for statistics such as HTTP error statuses).
    #[must_use]
    pub fn protocol(&self) -> &P {
        &self.proto
    }

    /// Output bytes not yet sent: queued here plus held by the transport.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.out.len() + self.in_flight
    }

    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the transport should be receiving now.
    #[must_use]
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Open => self.read_open && !self.paused && self.close_now.is_none(),
            Phase::Lingering { .. } => self.read_open && self.close_now.is_none(),
            Phase::Closing | Phase::Closed => false,
        }
    }

    /// How many bytes a receive may bring in without overshooting the high watermark
    /// (`None`: no limit, the input is being discarded).
    #[must_use]
    pub fn read_headroom(&self, cfg: &StreamConfig) -> Option<usize> {
        match self.phase {
            Phase::Open => Some((cfg.watermarks.high + 1).saturating_sub(self.pending())),
            _ => None,
        }
    }

    /// Bytes received from the peer.
    pub fn on_data(&mut self, data: &[u8], env: &Env<'_>, st: &mut Stats) {
        if self.phase == Phase::Closed || data.is_empty() {
            return;
        }
        self.last_in = env.now;
        if self.phase != Phase::Open || !self.read_open || self.close_now.is_some() {
            return; // closing or lingering: input is discarded
        }
        st.bytes_in += data.len() as u64;
        let state_before = self.proto.request_state();
        let pending_before = self.pending();
        let p = self.proto.on_data(data, self.out.writer(), &env.ctx());
        st.requests += u64::from(p.requests);
        self.served |= p.requests > 0;
        if p.close {
            self.phase = Phase::Closing;
        }
        if self.proto.request_state() == RequestState::Head && (state_before != RequestState::Head || p.requests > 0) {
            self.head_since = env.now;
        }
        self.output_grew(pending_before, env.now);
        self.backpressure(env.cfg, st);
    }

    /// The peer shut down its sending side.
    pub fn on_eof(&mut self, env: &Env<'_>, st: &mut Stats) {
        if self.phase == Phase::Closed {
            return;
        }
        self.read_open = false;
        self.last_in = env.now;
        if self.phase == Phase::Open && self.close_now.is_none() {
            let pending_before = self.pending();
            let p = self.proto.on_eof(self.out.writer(), &env.ctx());
            st.requests += u64::from(p.requests);
            if p.close {
                self.phase = Phase::Closing;
            }
            self.output_grew(pending_before, env.now);
        }
    }

    /// The socket failed (reset, EPIPE, SO_ERROR, a failed shutdown or send). During a
    /// lingering close that just ends it.
    pub fn on_error(&mut self) {
        if self.phase == Phase::Closed || self.close_now.is_some() {
            return;
        }
        self.close_now = Some(match self.phase {
            Phase::Lingering { .. } => self.reason,
            _ => CloseReason::Error,
        });
    }

    /// Close at the next action whatever the state (the shutdown deadline, a refused
    /// registration).
    pub fn abort(&mut self, reason: CloseReason) {
        if self.phase != Phase::Closed && self.close_now.is_none() {
            self.close_now = Some(reason);
        }
    }

    /// Readiness transports: the bytes to write now.
    #[must_use]
    pub fn output(&self) -> &[u8] {
        self.out.pending()
    }

    /// Readiness transports: `n` bytes of [`StreamConn::output`] were written.
    pub fn on_written(&mut self, n: usize, env: &Env<'_>, st: &mut Stats) {
        let n = n.min(self.out.len());
        self.out.advance(n);
        st.bytes_out += n as u64;
        if n > 0 {
            self.last_out = env.now;
        }
        self.backpressure(env.cfg, st);
    }

    /// Completion transports: take the pending output to hand to the kernel (`None` while a
    /// send is already in flight, or when there is nothing to send). Its bytes count as
    /// pending until [`StreamConn::on_send_done`].
    pub fn take_output(&mut self) -> Option<OutBuf> {
        if self.in_flight > 0 || self.out.is_empty() || self.phase == Phase::Closed {
            return None;
        }
        let buf = std::mem::replace(&mut self.out, std::mem::take(&mut self.spare));
        self.in_flight = buf.len();
        Some(buf)
    }

    /// Completion transports: the send of `buf` took `n` bytes. Returns the rest to send
    /// again (before anything produced since), or `None` when it is all out (the buffer is
    /// kept for reuse). A stream socket never accepts nothing from a non-empty send: that is an
    /// error, not a reason to spin.
    pub fn on_send_done(&mut self, mut buf: OutBuf, n: usize, env: &Env<'_>, st: &mut Stats) -> Option<OutBuf> {
        let n = n.min(buf.len());
        buf.advance(n);
        st.bytes_out += n as u64;
        self.in_flight = buf.len();
        if n > 0 {
            self.last_out = env.now;
        }
        if self.phase == Phase::Closed {
            self.in_flight = 0;
            return None;
        }
        self.backpressure(env.cfg, st);
        if buf.is_empty() {
            self.spare = buf;
            return None;
        }
        if n == 0 {
            self.in_flight = 0;
            self.on_error();
            return None;
        }
        Some(buf)
    }

    /// Completion transports that can send received bytes straight out of their receive
    /// buffer: whether the bytes about to be handed over may go that way
    /// ([`StreamConn::on_data_passed`]): while open and reading, with nothing pending ahead of
    /// them (queued or in flight), for a protocol that passes its input through
    /// ([`Protocol::passes_through`], echo). Otherwise hand them to [`StreamConn::on_data`].
    #[must_use]
    pub fn may_pass_through(&self) -> bool {
        self.phase == Phase::Open
            && self.read_open
            && self.close_now.is_none()
            && self.pending() == 0
            && self.proto.passes_through()
    }

    /// `n` bytes received that, as [`StreamConn::may_pass_through`] allowed, the transport
    /// sends back itself from its receive buffer: they count as received, and as output the
    /// transport holds (pending, for backpressure and the send deadline) until
    /// [`StreamConn::on_passed_sent`] reports them sent.
    pub fn on_data_passed(&mut self, n: usize, env: &Env<'_>, st: &mut Stats) {
        if n == 0 || !self.may_pass_through() {
            return;
        }
        self.last_in = env.now;
        st.bytes_in += n as u64;
        let p = self.proto.on_passed_through(n);
        st.requests += u64::from(p.requests);
        self.served |= p.requests > 0;
        if p.close {
            self.phase = Phase::Closing;
        }
        self.in_flight = n;
        self.output_grew(0, env.now);
        self.backpressure(env.cfg, st);
    }

    /// Completion transports: a send of passed-through bytes took `n` of them and `left` are
    /// still to send. Returns whether to send those again (before anything queued since); a
    /// send that took nothing of a non-empty rest is an error, as in
    /// [`StreamConn::on_send_done`].
    pub fn on_passed_sent(&mut self, n: usize, left: usize, env: &Env<'_>, st: &mut Stats) -> bool {
        st.bytes_out += n as u64;
        self.in_flight = left;
        if n > 0 {
            self.last_out = env.now;
        }
        if self.phase == Phase::Closed {
            self.in_flight = 0;
            return false;
        }
        self.backpressure(env.cfg, st);
        if left > 0 && n == 0 {
            self.in_flight = 0;
            self.on_error();
            return false;
        }
        left > 0
    }

    /// Completion transports: a send failed or was cancelled; its bytes are gone.
    pub fn on_send_failed(&mut self) {
        self.in_flight = 0;
        self.on_error();
    }

    /// The write side was shut down: linger.
    pub fn on_shutdown_done(&mut self, env: &Env<'_>) {
        if self.phase == Phase::Closing {
            self.phase = Phase::Lingering { until: env.now + env.cfg.timeouts.linger };
        }
    }

    /// What to do next. Call after every event (data, EOF, sends, timer) for this connection;
    /// repeat while it answers [`Action::ShutdownWrite`] and the shutdown succeeded.
    pub fn next_action(&mut self, env: &Env<'_>, st: &mut Stats) -> Action {
        if self.phase == Phase::Closed {
            return Action::Continue;
        }
        if let Some(reason) = self.close_now.take() {
            return self.close(reason, st);
        }
        let pending = self.pending();
        match self.phase {
            Phase::Lingering { .. } if !self.read_open => return self.close(self.reason, st),
            Phase::Closing if pending == 0 => {
                return if self.read_open { Action::ShutdownWrite } else { self.close(self.reason, st) };
            }
            Phase::Open if !self.read_open && pending == 0 => return self.close(self.reason, st),
            _ => {}
        }
        self.backpressure(env.cfg, st);
        Action::Continue
    }

    /// Pause reading above the high watermark, resume at the low one.
    fn backpressure(&mut self, cfg: &StreamConfig, st: &mut Stats) {
        if self.phase != Phase::Open {
            return;
        }
        let was = self.paused;
        self.paused = !cfg.watermarks.may_read(self.pending(), self.paused);
        if self.paused && !was {
            st.backpressure_pauses += 1;
        }
    }

    fn close(&mut self, reason: CloseReason, st: &mut Stats) -> Action {
        self.phase = Phase::Closed;
        st.count_close(reason);
        Action::Close(reason)
    }

    /// When [`StreamConn::on_timer`] next has something to do (`None`: never, until another
    /// event). Cheap: a few comparisons.
    #[must_use]
    pub fn deadline(&self, env: &Env<'_>) -> Option<Instant> {
        let t = &env.cfg.timeouts;
        match self.phase {
            Phase::Closed => return None,
            _ if self.close_now.is_some() => return Some(env.now),
            Phase::Lingering { until } => return Some(until),
            Phase::Open | Phase::Closing => {}
        }
        let pending = self.pending() > 0;
        let quiet = self.last_in.max(self.last_out);
        let mut d = if pending { t.send.map(|s| self.last_out + s) } else { None };
        if self.phase == Phase::Open && self.read_open {
            match self.proto.request_state() {
                RequestState::Head => d = earliest(d, t.header.map(|h| self.head_since + h)),
                RequestState::Body => d = earliest(d, t.body.map(|b| self.last_in + b)),
                RequestState::Idle if !pending => {
                    // Between requests only output counts as activity (see the module doc).
                    if self.served {
                        d = earliest(d, t.keepalive.map(|k| self.last_out + k));
                        if env.draining {
                            d = earliest(d, Some(self.last_out + t.drain_grace));
                        }
                    } else {
                        d = earliest(d, t.header.map(|h| self.head_since + h));
                    }
                }
                RequestState::Idle => {}
            }
        }
        earliest(d, t.idle.map(|i| quiet + i))
    }

    /// Apply whatever deadline has passed at `env.now` (nothing if none has: a timer that fires
    /// early or for an old deadline is harmless). Follow with [`StreamConn::next_action`].
    pub fn on_timer(&mut self, env: &Env<'_>, st: &mut Stats) {
        match self.expired(env) {
            None => {}
            Some(Expiry::Close(reason)) => self.abort(reason),
            Some(Expiry::ReadTimeout(reason)) => {
                let pending_before = self.pending();
                let p = self.proto.on_read_timeout(self.out.writer(), &env.ctx());
                st.requests += u64::from(p.requests);
                self.reason = reason;
                self.phase = Phase::Closing;
                self.output_grew(pending_before, env.now);
            }
        }
    }

    fn expired(&self, env: &Env<'_>) -> Option<Expiry> {
        let (t, now) = (&env.cfg.timeouts, env.now);
        let due = |since: Instant, after: Option<Duration>| after.is_some_and(|a| now >= since + a);
        match self.phase {
            Phase::Closed => return None,
            Phase::Lingering { until } => return (now >= until).then_some(Expiry::Close(self.reason)),
            Phase::Open | Phase::Closing => {}
        }
        let pending = self.pending() > 0;
        if pending && due(self.last_out, t.send) {
            return Some(Expiry::Close(CloseReason::SendTimeout));
        }
        let quiet = self.last_in.max(self.last_out);
        if self.phase == Phase::Open && self.read_open {
            match self.proto.request_state() {
                RequestState::Head if due(self.head_since, t.header) => {
                    return Some(Expiry::ReadTimeout(CloseReason::HeaderTimeout));
                }
                RequestState::Body if due(self.last_in, t.body) => {
                    return Some(Expiry::ReadTimeout(CloseReason::BodyTimeout));
                }
                RequestState::Idle if !pending => {
                    if !self.served && due(self.head_since, t.header) {
                        return Some(Expiry::Close(CloseReason::HeaderTimeout));
                    }
                    if self.served && due(self.last_out, t.keepalive) {
                        return Some(Expiry::Close(CloseReason::KeepaliveTimeout));
                    }
                    if self.served && env.draining && due(self.last_out, Some(t.drain_grace)) {
                        return Some(Expiry::Close(CloseReason::Normal));
                    }
                }
                _ => {}
            }
        }
        due(quiet, t.idle).then_some(Expiry::Close(CloseReason::Idle))
    }

    fn output_grew(&mut self, pending_before: usize, now: Instant) {
        if pending_before == 0 && self.pending() > 0 {
            self.last_out = now; // the send deadline starts now
        }
    }
}
