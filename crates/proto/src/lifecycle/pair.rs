//! A proxied client and its upstream, from accept to close.
//!
//! [`ProxyPair`] wraps the byte [`Relay`] (what to read, write, shut down) with what happens
//! around it: reading a PROXY protocol header from the client when the listener asks for one
//! (strictly, within a deadline), choosing an upstream with the worker's balancer (or closing
//! the client at once when none is usable), the connect deadline, one retry on another
//! upstream when the connect fails or times out (reported to the balancer for passive health),
//! sending a PROXY protocol header to the upstream first when the group asks for one,
//! forwarding FINs once everything before them was sent, the idle and half-close deadlines,
//! and the close reason.
//!
//! The transport moves the bytes (copied through the relay's buffers, spliced through pipes, or
//! sent straight out of io_uring receive buffers) and reports them here; the pair decides.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{earliest, CloseReason, Stats};
use crate::buf::Watermarks;
use crate::proxy_protocol::{self, HeaderReader, Read};
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
    /// Receiving the client's PROXY protocol header (listeners that accept one).
    pub proxy_header: Duration,
}

impl Default for PairTimeouts {
    /// nginx `proxy_connect_timeout`-like 3s, HAProxy-like 600s idle, 60s half-closed.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            idle: Some(Duration::from_secs(600)),
            half_close: Some(Duration::from_secs(60)),
            proxy_header: Duration::from_secs(5),
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
    /// Read a PROXY protocol header (v1 or v2) from each client before anything else.
    pub accept_proxy: bool,
    /// Send a PROXY protocol header to the upstream before the client's bytes.
    pub send_proxy: Option<proxy_protocol::Version>,
}

impl Default for PairConfig {
    fn default() -> Self {
        Self {
            timeouts: PairTimeouts::default(),
            watermarks: Watermarks::default(),
            retries: 1,
            accept_proxy: false,
            send_proxy: None,
        }
    }
}

/// The worker's upstream choice, as far as a pair needs it.
pub trait Balance {
    /// The upstream for a new connection from `client` (`None`: none is usable). It counts
    /// against that upstream until [`Balance::released`].
    fn pick(&mut self, client: IpAddr, now: Instant) -> Option<usize>;
    /// The connect to upstream `i` failed at `now` (passive health counts it).
    fn connect_failed(&mut self, i: usize, now: Instant);
    /// The connect to upstream `i` succeeded.
    fn connected(&mut self, i: usize);
    /// Another upstream than `failed` to try now for `client`, if one is usable (counted like
    /// [`Balance::pick`]).
    fn retry(&mut self, failed: usize, client: IpAddr, now: Instant) -> Option<usize>;
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

#[derive(Debug)]
enum Phase {
    /// Reading the client's PROXY header (since the accept).
    Header(Box<HeaderReader>),
    /// An upstream must be chosen.
    Choose,
    /// Connecting to `upstream` since this instant.
    Connecting(Instant),
    Relaying,
    Closed,
}

/// One client and its upstream.
#[derive(Debug)]
pub struct ProxyPair {
    relay: Relay,
    phase: Phase,
    /// The upstream chosen (counted by the balancer until released).
    upstream: Option<usize>,
    attempts: u8,
    /// A connect was decided and not yet handed to the transport.
    connect: bool,
    /// The client's address and the address it connected to (from the PROXY header when the
    /// listener takes one).
    client: SocketAddr,
    local: SocketAddr,
    /// The address the connection was accepted on (ours, whatever a PROXY header says).
    accepted_on: SocketAddr,
    started: Instant,
    last_active: Instant,
    /// When the first direction finished.
    half_since: Option<Instant>,
    close_now: Option<CloseReason>,
    /// Bytes received from each side, indexed by [`Side`].
    bytes_from: [u64; 2],
}

impl ProxyPair {
    /// A client accepted at `now` from `client` on `local`.
    #[must_use]
    pub fn new(now: Instant, cfg: &PairConfig, client: SocketAddr, local: SocketAddr) -> Self {
        Self {
            relay: Relay::new(cfg.watermarks),
            phase: if cfg.accept_proxy { Phase::Header(Box::default()) } else { Phase::Choose },
            upstream: None,
            attempts: 0,
            connect: false,
            client,
            local,
            accepted_on: local,
            started: now,
            last_active: now,
            half_since: None,
            close_now: None,
            bytes_from: [0; 2],
        }
    }

    /// The upstream chosen, if any yet.
    #[must_use]
    pub const fn upstream(&self) -> Option<usize> {
        self.upstream
    }

    /// The client's address (the PROXY header's source when one was received).
    #[must_use]
    pub const fn client(&self) -> SocketAddr {
        self.client
    }

    /// The address the client connected to (the PROXY header's destination when one was
    /// received).
    #[must_use]
    pub const fn local(&self) -> SocketAddr {
        self.local
    }

    /// The address of the listener that accepted the connection (never from a PROXY header).
    #[must_use]
    pub const fn listener(&self) -> SocketAddr {
        self.accepted_on
    }

    #[must_use]
    pub const fn is_connecting(&self) -> bool {
        matches!(self.phase, Phase::Connecting(_))
    }

    /// Bytes flow between the two sockets (the transport may relay them its own way).
    #[must_use]
    pub const fn is_relaying(&self) -> bool {
        matches!(self.phase, Phase::Relaying)
    }

    #[must_use]
    pub const fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// When the client was accepted.
    #[must_use]
    pub const fn started(&self) -> Instant {
        self.started
    }

    /// Bytes received from `side` so far and relayed (or to be relayed) to the other side: a
    /// PROXY header the client sent is not among them.
    #[must_use]
    pub const fn bytes_from(&self, side: Side) -> u64 {
        self.bytes_from[side as usize]
    }

    /// The byte relay, for the transport's questions (what to write, pipe state).
    #[must_use]
    pub const fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The byte relay, for the transport's bookkeeping (`pipe_blocked`, `hand_over`).
    pub fn relay_mut(&mut self) -> &mut Relay {
        &mut self.relay
    }

    /// Whether the transport should read `side` now.
    #[must_use]
    pub fn wants_read(&self, side: Side) -> bool {
        if self.close_now.is_some() {
            return false;
        }
        match self.phase {
            Phase::Header(_) => side == Side::Client,
            Phase::Relaying => self.relay.wants_read(side),
            _ => false,
        }
    }

    /// The connect succeeded: relaying starts, behind the PROXY header if one is to be sent.
    pub fn on_connected(&mut self, now: Instant, cfg: &PairConfig, bal: &mut impl Balance) {
        if !self.is_connecting() {
            return;
        }
        if let Some(i) = self.upstream {
            bal.connected(i);
        }
        if let Some(version) = cfg.send_proxy {
            let mut hdr = Vec::with_capacity(64);
            proxy_protocol::encode(version, self.client, self.local, &mut hdr);
            self.relay.inject(Side::Upstream, &hdr);
        }
        self.phase = Phase::Relaying;
        self.relay.connected();
        self.last_active = now;
    }

    /// The connect failed: count it against the upstream and retry elsewhere once, or give up.
    pub fn on_connect_failed(&mut self, now: Instant, cfg: &PairConfig, bal: &mut impl Balance) {
        let (true, Some(failed)) = (self.is_connecting(), self.upstream) else { return };
        bal.connect_failed(failed, now);
        let next = if self.attempts <= cfg.retries { bal.retry(failed, self.client.ip(), now) } else { None };
        bal.released(failed);
        self.upstream = next;
        match next {
            Some(_) => self.start_connect(now),
            None => self.abort(CloseReason::Upstream),
        }
    }

    fn start_connect(&mut self, now: Instant) {
        self.attempts += 1;
        self.phase = Phase::Connecting(now);
        self.connect = true;
    }

    /// Bytes read from `side` into the relay's buffer (copying transports, and every
    /// transport while a PROXY header is expected).
    pub fn received(&mut self, side: Side, data: &[u8], now: Instant, st: &mut Stats) {
        if let Phase::Header(reader) = &mut self.phase {
            if side != Side::Client {
                return;
            }
            st.bytes_in += data.len() as u64;
            self.last_active = now;
            match reader.feed(data) {
                Read::More => {}
                Read::Invalid(_) => self.abort(CloseReason::ProxyHeader),
                Read::Done(header, rest) => {
                    if let Some((src, dst)) = header.addrs {
                        self.client = src;
                        self.local = dst;
                    }
                    self.phase = Phase::Choose;
                    if !rest.is_empty() {
                        self.bytes_from[Side::Client as usize] += rest.len() as u64;
                        self.relay.received(Side::Client, &rest);
                    }
                }
            }
            return;
        }
        if self.relay.received(side, data) {
            self.count_in(side, data.len(), now, st);
        }
    }

    /// Bytes read from `side` that the transport holds itself (pipes, receive buffers).
    pub fn received_counted(&mut self, side: Side, n: usize, now: Instant, st: &mut Stats) {
        if self.is_relaying() && self.relay.received_piped(side, n) {
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
        match self.phase {
            Phase::Closed => {}
            // The client left before its PROXY header was complete.
            Phase::Header(_) => self.abort(CloseReason::ProxyHeader),
            _ => {
                self.relay.received_eof(side);
                self.last_active = now;
            }
        }
    }

    /// A socket of the pair failed: the pair ends now and both peers are reset.
    pub fn on_error(&mut self) {
        self.relay.reset();
        self.abort(CloseReason::Error);
    }

    /// Close at the next action (the shutdown deadline, a registration failure).
    pub fn abort(&mut self, reason: CloseReason) {
        if !self.is_closed() && self.close_now.is_none() {
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
    pub fn next_action(&mut self, now: Instant, bal: &mut impl Balance, st: &mut Stats) -> PairAction {
        if self.is_closed() {
            return PairAction::Continue;
        }
        if let Some(reason) = self.close_now.take() {
            return self.close(reason, bal, st);
        }
        if matches!(self.phase, Phase::Choose) {
            self.upstream = bal.pick(self.client.ip(), now);
            if self.upstream.is_none() {
                return self.close(CloseReason::Upstream, bal, st);
            }
            self.start_connect(now);
        }
        if std::mem::take(&mut self.connect) {
            if let Some(i) = self.upstream {
                return PairAction::Connect(i);
            }
        }
        if !self.is_relaying() {
            return PairAction::Continue;
        }
        for side in Side::BOTH {
            if self.relay.should_shutdown(side) {
                return PairAction::ShutdownWrite(side);
            }
        }
        if self.relay.is_done() {
            let reason = if self.relay.is_reset() { CloseReason::Error } else { CloseReason::Normal };
            return self.close(reason, bal, st);
        }
        PairAction::Continue
    }

    fn close(&mut self, reason: CloseReason, bal: &mut impl Balance, st: &mut Stats) -> PairAction {
        self.phase = Phase::Closed;
        if let Some(i) = self.upstream {
            bal.released(i);
        }
        st.count_close(reason);
        PairAction::Close(reason)
    }

    /// When [`ProxyPair::on_timer`] next has something to do.
    #[must_use]
    pub fn deadline(&self, now: Instant, cfg: &PairConfig) -> Option<Instant> {
        let t = &cfg.timeouts;
        match self.phase {
            Phase::Closed => None,
            _ if self.close_now.is_some() || self.connect => Some(now),
            Phase::Choose => Some(now),
            Phase::Header(_) => Some(self.started + t.proxy_header),
            Phase::Connecting(since) => Some(since + t.connect),
            Phase::Relaying => {
                let half = self.half_since.and_then(|h| t.half_close.map(|d| h.max(self.last_active) + d));
                earliest(half, t.idle.map(|d| self.last_active + d))
            }
        }
    }

    /// Apply whatever deadline has passed at `now` (nothing if none has). A connect that timed
    /// out is retried like a failed one; returns true in that case (for the caller's log).
    pub fn on_timer(&mut self, now: Instant, cfg: &PairConfig, bal: &mut impl Balance) -> bool {
        if self.close_now.is_some() {
            return false;
        }
        let t = &cfg.timeouts;
        match self.phase {
            Phase::Header(_) if now >= self.started + t.proxy_header => self.abort(CloseReason::ProxyHeader),
            Phase::Connecting(since) if now >= since + t.connect => {
                self.on_connect_failed(now, cfg, bal);
                return true;
            }
            Phase::Relaying => {
                if let (Some(h), Some(d)) = (self.half_since, t.half_close) {
                    if now >= h.max(self.last_active) + d {
                        self.abort(CloseReason::HalfCloseTimeout);
                        return false;
                    }
                }
                if t.idle.is_some_and(|d| now >= self.last_active + d) {
                    self.abort(CloseReason::Idle);
                }
            }
            _ => {}
        }
        false
    }
}
