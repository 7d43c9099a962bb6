//! The L4 proxy over the completion loop: each accepted client is paired with an upstream
//! connection (round-robin per worker) made by an io_uring connect; both sockets live in one
//! slab entry and their requests are told apart by the side in their [`Op`] tag.
//!
//! What to read, write, shut down or close is decided by the sans-IO [`Relay`], as on the
//! readiness backends ([`crate::readiness::proxy`]); the relay runs in its counted mode, the
//! bytes themselves being here, in flight or queued per destination socket:
//! - each socket has a multishot receive from the worker's provided-buffer ring while the relay
//!   wants it read (limited to the watermark headroom, cancelled when backpressure pauses it,
//!   re-armed when the other side's output drained to the low watermark);
//! - received bytes are relayed without a copy when nothing else is queued for their
//!   destination: the receive buffer itself is held out of the ring and sent as it is (the
//!   default, `--uring-relay zero-copy`); otherwise, or with `--uring-relay copy`, they are
//!   copied into the destination's output buffer, behind what is already queued;
//! - at most one send per socket is in flight; what arrives meanwhile collects behind it, and
//!   everything one batch of completions produced goes out in one send;
//! - a FIN is forwarded (shutdown(SHUT_WR)) once everything for that side has been sent; the
//!   pair closes when both directions are done, and at once (RST to both) on a reset or error.
//!
//! Closing cancels the pair's requests and closes the sockets once their completions are in.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use ringpoll_proto::relay::{Relay, Side};
use ringpoll_proto::OutBuf;
use tracing::{debug, warn};

use super::{out_buf, send_buf, Core, Handler, Op};
use crate::{CloseReason, RateLimit};
use ringpoll_sys::slab::{Key, Slab};
use ringpoll_sys::socket;
use ringpoll_sys::uring::{is_canceled, is_no_buffers, Completion, HeldBuf, OpId};

/// Smallest byte limit of a receive arm (a tiny headroom would mean tiny receives).
const MIN_RECV_LIMIT: usize = 4096;

const fn idx(side: Side) -> usize {
    side as usize
}

/// One socket of a pair and the requests on it.
struct Sock {
    stream: TcpStream,
    recv: Option<OpId>,
    /// A cancel was queued for `recv` (backpressure, closing).
    recv_cancelled: bool,
    /// The kernel ended the multishot receive (ENOBUFS, byte limit): re-arming it counts.
    recv_ended: bool,
    /// The buffer ring ran dry for this socket: it waits in `Proxies::starved`.
    starved: bool,
    /// The peer sent FIN.
    eof: bool,
    /// Reading is paused by backpressure (for the counter).
    paused: bool,
    /// The send in flight to this socket, and the bytes it carries.
    send: Option<OpId>,
    sending: usize,
    /// Zero-copy relay: a receive buffer to send next, as it is (before `out`).
    held: Option<HeldBuf>,
    /// Bytes for this socket not yet handed to the kernel.
    out: OutBuf,
    /// The drained buffer of the last send, swapped in when `out` goes to the kernel.
    spare: OutBuf,
}

impl Sock {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            recv: None,
            recv_cancelled: false,
            recv_ended: false,
            starved: false,
            eof: false,
            paused: false,
            send: None,
            sending: 0,
            held: None,
            out: OutBuf::new(),
            spare: OutBuf::new(),
        }
    }

    fn has_output(&self) -> bool {
        self.held.is_some() || !self.out.is_empty()
    }

    /// Hand the next output to the kernel unless a send is already in flight.
    fn start_send(&mut self, core: &mut Core, key: Key, side: Side) {
        if self.send.is_some() {
            return;
        }
        let op = Op::RelaySend(key, side);
        if let Some(h) = self.held.take() {
            let len = h.len();
            // Refused (and logged by the ring) only for another ring's buffer, which this
            // worker never holds.
            self.send = core.ring.send_held(&self.stream, h, op).ok();
            self.sending = if self.send.is_some() { len } else { 0 };
        } else if !self.out.is_empty() {
            let buf = std::mem::replace(&mut self.out, std::mem::take(&mut self.spare));
            self.sending = buf.len();
            self.send = Some(core.ring.send(&self.stream, send_buf(buf), op));
        }
    }
}

struct Connecting {
    /// The connect request (`None` once its completion is in).
    op: Option<OpId>,
    deadline: Instant,
    upstream: usize,
    retried: bool,
    /// The deadline passed and the connect was cancelled.
    timed_out: bool,
}

struct Pair {
    /// Indexed by [`Side`].
    socks: [Sock; 2],
    relay: Relay,
    connecting: Option<Connecting>,
    /// Counted as closed; the sockets close once no request uses them any more.
    closed: bool,
    /// In `Proxies::to_send`.
    queued: bool,
    last_active: Instant,
}

impl Pair {
    fn idle(&self) -> bool {
        self.socks.iter().all(|s| s.recv.is_none() && s.send.is_none())
            && self.connecting.as_ref().is_none_or(|c| c.op.is_none())
    }
}

pub(crate) struct Proxies {
    pairs: Slab<Pair>,
    next_upstream: usize,
    /// Pairs with output to send once the batch of completions is handled.
    to_send: Vec<Key>,
    /// Sockets whose receive ended with ENOBUFS, re-armed in order (see `uring::stream`).
    starved: VecDeque<(Key, Side)>,
    /// Receive buffers held by the zero-copy relay; at most half the ring, so that holding
    /// buffers for slow peers can never starve every receive.
    held: usize,
    log_limit: RateLimit,
}

impl Proxies {
    pub fn new() -> Self {
        Self {
            pairs: Slab::new(),
            next_upstream: 0,
            to_send: Vec::new(),
            starved: VecDeque::new(),
            held: 0,
            log_limit: RateLimit::new(Duration::from_secs(1)),
        }
    }

    fn upstream_failed(&mut self, core: &mut Core, addr: SocketAddr, e: &io::Error) {
        core.stats.upstream_failures += 1;
        if self.log_limit.allow(core.clock.now()) {
            warn!("upstream {addr}: {e} ({} upstream failures so far)", core.stats.upstream_failures);
        }
    }

    fn release_held(&mut self, core: &mut Core, h: HeldBuf) {
        self.held -= 1;
        // Refused (and logged by the ring) only for another ring's buffer, which this worker
        // never holds.
        let _ = core.ring.release(h);
    }

    /// Bring a pair's requests in line with its state after anything happened to it.
    fn settle(&mut self, core: &mut Core, key: Key) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        if pair.closed {
            return self.release_if_done(core, key);
        }
        if pair.connecting.is_some() {
            return;
        }
        for side in Side::BOTH {
            if pair.relay.should_shutdown(side) {
                if let Err(e) = socket::shutdown_write(&pair.socks[idx(side)].stream) {
                    debug!("proxy {side:?} shutdown: {e}");
                    pair.relay.reset();
                    return self.close(core, key, CloseReason::Error);
                }
                pair.relay.shut_down(side);
            }
        }
        if pair.relay.is_done() {
            return self.close(core, key, CloseReason::Normal);
        }
        for side in Side::BOTH {
            let want = pair.relay.wants_read(side);
            // At most the watermark headroom per arm, so that data already on its way cannot
            // overshoot the high watermark.
            let pending = pair.relay.outgoing_len(side.other());
            let limit = (core.cfg.watermarks.high + 1).saturating_sub(pending).max(MIN_RECV_LIMIT);
            let sock = &mut pair.socks[idx(side)];
            let paused = !want && !sock.eof;
            if paused && !sock.paused {
                core.stats.backpressure_pauses += 1;
            }
            sock.paused = paused;
            match sock.recv {
                None if want && !sock.starved => {
                    if std::mem::take(&mut sock.recv_ended) {
                        core.stats.uring_rearms += 1;
                    }
                    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
                    sock.recv = Some(core.ring.recv_multi(&sock.stream, Op::RelayRecv(key, side), limit));
                }
                Some(id) if !want && !sock.recv_cancelled => {
                    core.ring.cancel(id);
                    sock.recv_cancelled = true;
                }
                _ => {}
            }
        }
        if !pair.queued && pair.socks.iter().any(|s| s.send.is_none() && s.has_output()) {
            pair.queued = true;
            self.to_send.push(key);
        }
    }

    /// Count the close and cancel what is in flight; the sockets close when that has ended.
    /// An error close resets both peers (SO_LINGER 0) instead of a clean FIN.
    fn close(&mut self, core: &mut Core, key: Key, reason: CloseReason) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        if pair.closed {
            return;
        }
        pair.closed = true;
        reason.count(&mut core.stats);
        let mut held = Vec::new();
        for sock in &mut pair.socks {
            if reason == CloseReason::Error {
                if let Err(e) = socket::set_linger_zero(&sock.stream) {
                    debug!("SO_LINGER on a proxy socket: {e}");
                }
            }
            if let Some(id) = sock.recv {
                if !sock.recv_cancelled {
                    core.ring.cancel(id);
                    sock.recv_cancelled = true;
                }
            }
            if let Some(id) = sock.send {
                core.ring.cancel(id);
            }
            held.extend(sock.held.take());
        }
        if let Some(id) = pair.connecting.as_ref().and_then(|c| c.op) {
            core.ring.cancel(id);
        }
        for h in held {
            self.release_held(core, h);
        }
        self.release_if_done(core, key);
    }

    fn release_if_done(&mut self, core: &mut Core, key: Key) {
        if self.pairs.get(key).is_some_and(|p| p.closed && p.idle()) {
            if let Some(pair) = self.pairs.remove(key) {
                for sock in pair.socks {
                    core.ring.close(OwnedFd::from(sock.stream));
                }
            }
        }
    }

    /// Connect failed or timed out: try the next upstream once, else close the client.
    fn retry_or_close(&mut self, core: &mut Core, key: Key, e: &io::Error) {
        let Some((failed, retried)) =
            self.pairs.get(key).and_then(|p| p.connecting.as_ref()).map(|c| (c.upstream, c.retried))
        else {
            return;
        };
        let ups = core.cfg.upstreams;
        self.upstream_failed(core, ups[failed], e);
        if retried || ups.len() < 2 {
            return self.close(core, key, CloseReason::Error);
        }
        let i = (failed + 1) % ups.len();
        let stream = match socket::stream_socket(ups[i]) {
            Ok(s) => s,
            Err(e) => {
                self.upstream_failed(core, ups[i], &e);
                return self.close(core, key, CloseReason::Error);
            }
        };
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let op = core.ring.connect(&stream, ups[i], Op::Connect(key));
        // The failed socket has no request left (its connect just ended).
        let old = std::mem::replace(&mut pair.socks[idx(Side::Upstream)].stream, stream);
        core.ring.close(OwnedFd::from(old));
        let deadline = core.clock.now() + core.cfg.connect_timeout;
        pair.connecting = Some(Connecting { op: Some(op), deadline, upstream: i, retried: true, timed_out: false });
    }

    fn on_connect(&mut self, core: &mut Core, key: Key, c: &Completion<Op>) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let timed_out = match pair.connecting.as_mut() {
            Some(conn) if conn.op == Some(c.id) => {
                conn.op = None;
                conn.timed_out
            }
            _ => return,
        };
        if pair.closed {
            return self.release_if_done(core, key);
        }
        match &c.result {
            Ok(_) => {
                pair.connecting = None;
                pair.relay.connected();
                pair.last_active = core.clock.now();
                // Whatever the client sent meanwhile is waiting: the receives start now.
                self.settle(core, key);
            }
            Err(e) if timed_out && is_canceled(e) => {
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                self.retry_or_close(core, key, &e);
            }
            Err(e) => self.retry_or_close(core, key, e),
        }
    }

    fn on_recv(&mut self, core: &mut Core, key: Key, side: Side, c: &Completion<Op>) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let sock = &mut pair.socks[idx(side)];
        if !c.more {
            sock.recv = None;
            sock.recv_ended = !sock.recv_cancelled;
            sock.recv_cancelled = false;
        }
        match &c.result {
            Ok(0) => {
                sock.recv_ended = false;
                sock.eof = true;
                if !pair.closed {
                    pair.relay.received_eof(side);
                    pair.last_active = core.clock.now();
                }
            }
            Ok(_) if pair.closed => {}
            Ok(_) => {
                pair.last_active = core.clock.now();
                let zero_copy = core.cfg.uring.zero_copy_relay
                    && self.held < usize::from(core.cfg.uring.buf_count) / 2
                    && !pair.socks[idx(side.other())].has_output()
                    && pair.socks[idx(side.other())].send.is_none();
                let held = if zero_copy { core.ring.hold(c) } else { None };
                let dst = &mut pair.socks[idx(side.other())];
                let n = match held {
                    Some(h) => {
                        self.held += 1;
                        let n = h.len();
                        dst.held = Some(h);
                        n
                    }
                    None => {
                        let data = core.ring.data(c);
                        dst.out.extend_from_slice(data);
                        data.len()
                    }
                };
                core.stats.bytes_in += n as u64;
                core.stats.requests += 1;
                pair.relay.received_piped(side, n);
            }
            Err(e) if is_no_buffers(e) => {
                core.stats.uring_enobufs += 1;
                if !sock.starved {
                    sock.starved = true;
                    self.starved.push_back((key, side));
                }
            }
            Err(e) if is_canceled(e) => sock.recv_ended = false,
            Err(e) => {
                sock.recv_ended = false;
                if !pair.closed {
                    debug!("proxy {side:?} recv: {e}");
                    pair.relay.reset();
                    return self.close(core, key, CloseReason::Error);
                }
            }
        }
        self.settle(core, key);
    }

    fn on_send(&mut self, core: &mut Core, key: Key, side: Side, c: Completion<Op>) {
        let Completion { result, sent, held, .. } = c;
        let Some(pair) = self.pairs.get_mut(key) else {
            // Cannot happen (a pair lives until its requests end); still give the buffer back.
            if let Some(h) = held {
                self.release_held(core, h);
            }
            return;
        };
        let sock = &mut pair.socks[idx(side)];
        sock.send = None;
        let carried = std::mem::take(&mut sock.sending);
        let (n, failed) = match &result {
            // A stream socket never accepts nothing from a non-empty send; do not spin.
            Ok(n) => ((*n as usize).min(carried), *n == 0 && carried > 0),
            Err(e) if is_canceled(e) => (0, false),
            Err(e) => {
                debug!("proxy {side:?} send: {e}");
                (0, true)
            }
        };
        core.stats.bytes_out += n as u64;
        let resend = !pair.closed && !failed;
        // The rest of a short send goes first, before anything collected since.
        if let Some(mut buf) = sent.map(out_buf) {
            buf.advance(n);
            if buf.is_empty() {
                sock.spare = buf;
            } else if resend {
                sock.sending = buf.len();
                sock.send = Some(core.ring.send(&sock.stream, send_buf(buf), Op::RelaySend(key, side)));
            }
        }
        let mut done_with = None;
        if let Some(mut h) = held {
            h.advance(n);
            if resend && !h.is_empty() {
                let len = h.len();
                // Refused (and logged) only for another ring's buffer: never here.
                sock.send = core.ring.send_held(&sock.stream, h, Op::RelaySend(key, side)).ok();
                sock.sending = if sock.send.is_some() { len } else { 0 };
            } else {
                done_with = Some(h);
            }
        }
        let closed = pair.closed;
        if !closed {
            pair.relay.sent_piped(side, n);
            if n > 0 {
                pair.last_active = core.clock.now();
            }
            if failed {
                pair.relay.reset();
            }
        }
        if let Some(h) = done_with {
            self.release_held(core, h);
        }
        if closed {
            self.release_if_done(core, key);
        } else if failed {
            self.close(core, key, CloseReason::Error);
        } else {
            self.settle(core, key);
        }
    }
}

impl Handler for Proxies {
    fn accept(&mut self, core: &mut Core, client: TcpStream) {
        // TCP_NODELAY is inherited from the listener.
        let ups = core.cfg.upstreams;
        let i = self.next_upstream % ups.len();
        self.next_upstream = self.next_upstream.wrapping_add(1);
        let upstream = match socket::stream_socket(ups[i]) {
            Ok(s) => s,
            Err(e) => {
                self.upstream_failed(core, ups[i], &e);
                CloseReason::Error.count(&mut core.stats);
                core.ring.close(OwnedFd::from(client));
                return;
            }
        };
        let key = self.pairs.vacant_key();
        let op = core.ring.connect(&upstream, ups[i], Op::Connect(key));
        let now = core.clock.now();
        let inserted = self.pairs.insert(Pair {
            socks: [Sock::new(client), Sock::new(upstream)],
            relay: Relay::new(core.cfg.watermarks),
            connecting: Some(Connecting {
                op: Some(op),
                deadline: now + core.cfg.connect_timeout,
                upstream: i,
                retried: false,
                timed_out: false,
            }),
            closed: false,
            queued: false,
            last_active: now,
        });
        debug_assert_eq!(inserted, key);
    }

    fn complete(&mut self, core: &mut Core, c: Completion<Op>) {
        match c.op {
            Op::Connect(key) => self.on_connect(core, key, &c),
            Op::RelayRecv(key, side) => self.on_recv(core, key, side, &c),
            Op::RelaySend(key, side) => self.on_send(core, key, side, c),
            _ => {}
        }
    }

    fn end_of_batch(&mut self, core: &mut Core) {
        for _ in 0..usize::from(core.cfg.uring.buf_count).min(self.starved.len()) {
            let Some((key, side)) = self.starved.pop_front() else { break };
            if let Some(pair) = self.pairs.get_mut(key) {
                pair.socks[idx(side)].starved = false;
                self.settle(core, key);
            }
        }
        let mut keys = std::mem::take(&mut self.to_send);
        for key in keys.drain(..) {
            let Some(pair) = self.pairs.get_mut(key) else { continue };
            pair.queued = false;
            if !pair.closed {
                for side in Side::BOTH {
                    pair.socks[idx(side)].start_send(core, key, side);
                }
            }
        }
        self.to_send = keys;
    }

    fn live(&self) -> usize {
        self.pairs.len()
    }

    fn drain(&mut self, _core: &mut Core) {
        // As on the readiness backends: pairs run until both sides finish or the shutdown
        // deadline closes them (an L4 proxy cannot tell an idle pair from a waiting one).
    }

    fn sweep(&mut self, core: &mut Core) {
        let now = core.clock.now();
        let idle = core.cfg.idle_timeout;
        let mut expired = Vec::new();
        for (key, p) in self.pairs.iter_mut() {
            if p.closed {
                continue;
            }
            match &mut p.connecting {
                Some(c) if now >= c.deadline => {
                    // The connect's completion (ECANCELED) retries or closes.
                    if let (false, Some(id)) = (c.timed_out, c.op) {
                        c.timed_out = true;
                        core.ring.cancel(id);
                    }
                }
                _ if idle.is_some_and(|t| now.saturating_duration_since(p.last_active) >= t) => expired.push(key),
                _ => {}
            }
        }
        for key in expired {
            self.close(core, key, CloseReason::Idle);
        }
    }

    fn close_all(&mut self, core: &mut Core) {
        for key in self.pairs.keys() {
            self.close(core, key, CloseReason::Shutdown);
        }
    }
}
