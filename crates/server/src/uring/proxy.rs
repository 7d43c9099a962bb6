//! The L4 proxy over the completion loop: each accepted client is paired with an upstream its
//! lifecycle ([`ProxyPair`]) chose, connected by an io_uring connect; both sockets live in one
//! slab entry and their requests are told apart by the side in their [`Op`] tag.
//!
//! The lifecycle decides what to read, connect, shut down or close; the relay inside it runs
//! in its counted mode, the bytes themselves being here, in flight or queued per destination
//! socket:
//! - each socket has a multishot receive while the lifecycle wants it read (limited to the
//!   watermark headroom, cancelled when backpressure pauses it);
//! - received bytes are relayed without a copy when nothing else is queued for their
//!   destination: the receive buffer itself is held out of the ring and sent as it is (the
//!   default, `--uring-relay zero-copy`); otherwise they are copied into the destination's
//!   output buffer, behind what is already queued;
//! - bytes the relay buffered itself (a PROXY header to send first, what came with the client's
//!   PROXY header) are handed over to the upstream's output buffer when the connect completes;
//! - at most one send per socket is in flight; everything one batch of completions produced
//!   goes out in one send.
//!
//! Closing cancels the pair's requests and closes the sockets once their completions are in.
//!
//! With `--uring-fixed-files` the client's socket is a direct descriptor unless the pair needs
//! the client's address (see `accept::wants_fixed`); it is then shut down and set to reset
//! through the ring. The upstream's socket is always a regular descriptor. With recv bundles a
//! completion brings several buffers: relayed as one held piece, or copied buffer by buffer.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use ringpoll_proto::lifecycle::pair::{PairAction, PairConfig, ProxyPair};
use ringpoll_proto::lifecycle::wheel::{Tick, Wheel};
use ringpoll_proto::relay::Side;
use ringpoll_proto::CloseReason;
use ringpoll_sys::slab::{Key, Slab};
use ringpoll_sys::socket;
use ringpoll_sys::uring::{is_canceled, is_no_buffers, Completion, HeldBuf, OpId};
use tracing::{debug, warn};

use super::core::{Core, Handler};
use super::fd::{Done, Fd};
use super::ops::Op;
use super::sock::Sock;
use crate::ctx::WorkerCtx;
use crate::upstreams::{self, Upstreams};

/// Smallest byte limit of a receive arm (a tiny headroom would mean tiny receives).
const MIN_RECV_LIMIT: usize = 4096;

/// The addresses a pair is given when its client's socket cannot tell them (a direct
/// descriptor): only listeners whose pairs never use them get such sockets.
const UNKNOWN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

const fn idx(side: Side) -> usize {
    side as usize
}

struct Pair {
    /// Indexed by [`Side`].
    socks: [Sock; 2],
    life: ProxyPair,
    listener: usize,
    /// The connect in flight.
    connect: Option<OpId>,
    /// Upstream sockets of abandoned connects (timed out, cancelled), closed once their
    /// connect's completion is in.
    retired: Vec<(OpId, Fd)>,
    /// Counted as closed; the sockets close once no request uses them any more.
    closed: bool,
    /// In `Proxies::to_send`.
    queued: bool,
    timer: Option<Tick>,
}

impl Pair {
    fn idle(&self) -> bool {
        self.socks.iter().all(Sock::idle) && self.connect.is_none() && self.retired.is_empty()
    }
}

pub(crate) struct Proxies {
    pairs: Slab<Pair>,
    wheel: Wheel<Key>,
    due: Vec<(Key, Tick)>,
    upstreams: Upstreams,
    /// Pairs with output to send once the batch of completions is handled.
    to_send: Vec<Key>,
    /// Sockets whose receive ended with ENOBUFS, re-armed in order (see `uring::stream`).
    starved: VecDeque<(Key, Side)>,
}

fn pair_cfg(core: &Core, listener: usize) -> &PairConfig {
    &core.cfg.listeners[listener].pair
}

impl Proxies {
    pub fn new(ctx: &WorkerCtx, now: Instant) -> Self {
        Self {
            pairs: Slab::new(),
            wheel: Wheel::new(now),
            due: Vec::new(),
            upstreams: Upstreams::new(ctx),
            to_send: Vec::new(),
            starved: VecDeque::new(),
        }
    }

    fn release_held(core: &mut Core, h: HeldBuf) {
        core.held -= 1;
        if let Err(foreign) = core.ring.release(h) {
            warn!("{foreign}");
        }
    }

    /// Carry out the pair's actions, then bring its requests in line with its state.
    fn settle(&mut self, core: &mut Core, key: Key) {
        loop {
            let Some(pair) = self.pairs.get_mut(key) else { return };
            if pair.closed {
                return self.release_if_done(core, key);
            }
            let Some(bal) = self.upstreams.balancer(&core.cfg, pair.listener) else { return };
            match pair.life.next_action(core.clock.now(), bal, &mut core.stats.conn) {
                PairAction::Continue => break,
                PairAction::Connect(i) => self.connect(core, key, i),
                PairAction::ShutdownWrite(side) => {
                    let sock = &mut pair.socks[idx(side)];
                    let done = sock.fd.as_ref().map(|fd| fd.shutdown_write(&mut core.ring, Op::RelayCtl(key, side)));
                    match done {
                        None | Some(Done::Now(Ok(()))) => pair.life.on_shut_down(side, core.clock.now()),
                        // On its way, after the sends before it; a failure shows in its completion.
                        Some(Done::Queued(id)) => {
                            sock.ctl = Some(id);
                            pair.life.on_shut_down(side, core.clock.now());
                        }
                        Some(Done::Now(Err(e))) => {
                            debug!("proxy {side:?} shutdown: {e}");
                            pair.life.on_error();
                        }
                    }
                }
                PairAction::Close(reason) => return self.close(core, key, reason),
            }
        }
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let high = pair_cfg(core, pair.listener).watermarks.high;
        for side in Side::BOTH {
            let want = pair.life.wants_read(side);
            // At most the watermark headroom per arm, so that data already on its way cannot
            // overshoot the high watermark.
            let pending = pair.life.relay().outgoing_len(side.other());
            let limit = (high + 1).saturating_sub(pending).max(MIN_RECV_LIMIT);
            let sock = &mut pair.socks[idx(side)];
            let Some(fd) = &sock.fd else { continue };
            match sock.recv {
                None if want && !sock.starved => {
                    if std::mem::take(&mut sock.recv_ended) {
                        core.stats.uring_rearms += 1;
                    }
                    let limit = u32::try_from(limit).unwrap_or(u32::MAX);
                    sock.recv = Some(core.ring.recv_multi(fd, Op::RelayRecv(key, side), limit));
                }
                Some(id) if !want && !sock.recv_cancelled => {
                    core.ring.cancel(id);
                    sock.recv_cancelled = true;
                }
                _ => {}
            }
        }
        if !pair.queued && pair.socks.iter().any(Sock::wants_send) {
            pair.queued = true;
            self.to_send.push(key);
        }
        if let Some(at) = pair.life.deadline(core.clock.now(), pair_cfg(core, pair.listener)) {
            let tick = self.wheel.tick_of(at);
            if pair.timer.is_none_or(|t| tick < t) {
                pair.timer = Some(self.wheel.insert(key, at));
            }
        }
    }

    /// Connect to upstream `i`, retiring an abandoned connect's socket.
    fn connect(&mut self, core: &mut Core, key: Key, i: usize) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let listener = pair.listener;
        if let Some(old) = pair.socks[idx(Side::Upstream)].fd.take() {
            match pair.connect.take() {
                Some(id) => {
                    core.ring.cancel(id);
                    pair.retired.push((id, old));
                }
                None => old.close(&mut core.ring),
            }
        }
        let addr = upstreams::addr(&core.cfg, listener, i);
        match addr.map(socket::stream_socket) {
            Some(Ok(s)) => {
                let Some(a) = addr else { return };
                pair.connect = Some(core.ring.connect(&s, a, Op::Connect(key)));
                pair.socks[idx(Side::Upstream)] = Sock::new(Fd::Plain(s));
            }
            other => {
                let e = match other {
                    Some(Err(e)) => e,
                    _ => io::Error::other("no such upstream"),
                };
                self.upstreams.connect_failed(&core.stats, core.clock.now(), addr, &e);
                if let (Some(pair), Some(bal)) = (self.pairs.get_mut(key), self.upstreams.balancer(&core.cfg, listener))
                {
                    pair.life.on_connect_failed(core.clock.now(), pair_cfg(core, listener), bal);
                }
            }
        }
    }

    /// Count the close and cancel what is in flight; the sockets close when that has ended.
    /// An abortive close resets both peers (SO_LINGER 0) instead of a clean FIN.
    fn close(&mut self, core: &mut Core, key: Key, reason: CloseReason) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        if pair.closed {
            return;
        }
        pair.closed = true;
        core.stats.open_pairs -= 1;
        self.upstreams.finished(&core.cfg, &core.stats, pair.listener, &pair.life, reason, core.clock.now());
        let mut held = Vec::new();
        for side in Side::BOTH {
            let sock = &mut pair.socks[idx(side)];
            if let (Some(fd), true) = (&sock.fd, reason.is_abortive()) {
                match fd.set_linger_zero(&mut core.ring, Op::RelayCtl(key, side)) {
                    Done::Now(Ok(())) => {}
                    Done::Now(Err(e)) => debug!("SO_LINGER on a proxy socket: {e}"),
                    Done::Queued(id) => sock.ctl = Some(id),
                }
            }
            sock.cancel(core);
            held.extend(sock.take_held());
        }
        if let Some(id) = pair.connect {
            core.ring.cancel(id);
        }
        for h in held {
            Self::release_held(core, h);
        }
        self.release_if_done(core, key);
    }

    fn release_if_done(&mut self, core: &mut Core, key: Key) {
        if self.pairs.get(key).is_some_and(|p| p.closed && p.idle()) {
            if let Some(pair) = self.pairs.remove(key) {
                for sock in pair.socks {
                    if let Some(fd) = sock.fd {
                        fd.close(&mut core.ring);
                    }
                }
                for (_, fd) in pair.retired {
                    fd.close(&mut core.ring);
                }
            }
        }
    }

    fn on_connect(&mut self, core: &mut Core, key: Key, c: &Completion<Op>) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        if let Some(pos) = pair.retired.iter().position(|(id, _)| *id == c.id) {
            // An abandoned connect ended: its socket can go.
            let (_, fd) = pair.retired.swap_remove(pos);
            fd.close(&mut core.ring);
            return self.release_if_done(core, key);
        }
        if pair.connect != Some(c.id) {
            return;
        }
        pair.connect = None;
        if pair.closed {
            return self.release_if_done(core, key);
        }
        let listener = pair.listener;
        let Some(bal) = self.upstreams.balancer(&core.cfg, listener) else { return };
        match &c.result {
            Ok(_) => {
                pair.life.on_connected(core.clock.now(), pair_cfg(core, listener), bal);
                // Bytes the relay holds (a PROXY header, what came with the client's) go first.
                if let Some(bytes) = pair.life.relay_mut().hand_over(Side::Upstream) {
                    pair.socks[idx(Side::Upstream)].out.extend_from_slice(&bytes);
                }
            }
            Err(e) => {
                let e = if is_canceled(e) {
                    io::Error::new(io::ErrorKind::TimedOut, "connect cancelled")
                } else {
                    io::Error::new(e.kind(), e.to_string())
                };
                let addr = pair.life.upstream().and_then(|i| upstreams::addr(&core.cfg, listener, i));
                pair.life.on_connect_failed(core.clock.now(), pair_cfg(core, listener), bal);
                self.upstreams.connect_failed(&core.stats, core.clock.now(), addr, &e);
            }
        }
        self.settle(core, key);
    }

    fn on_recv(&mut self, core: &mut Core, key: Key, side: Side, c: &Completion<Op>) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let now = core.clock.now();
        let sock = &mut pair.socks[idx(side)];
        if !c.more {
            sock.recv = None;
            sock.recv_ended = !sock.recv_cancelled;
            sock.recv_cancelled = false;
        }
        match &c.result {
            Ok(0) => {
                sock.recv_ended = false;
                if !pair.closed {
                    pair.life.received_eof(side, now);
                }
            }
            Ok(_) if pair.closed => {}
            Ok(_) => {
                core.stats.uring_bundles += u64::from(c.buffers > 1);
                // Relay straight from the receive buffer when nothing is queued ahead.
                let zero_copy = core.cfg.uring.zero_copy_relay
                    && core.held < core.held_max
                    && pair.life.is_relaying()
                    && pair.socks[idx(side.other())].is_clear();
                match zero_copy.then(|| core.ring.hold(c)).flatten() {
                    Some(h) => {
                        core.held += 1;
                        let n = h.len();
                        pair.socks[idx(side.other())].hold(h);
                        pair.life.received_counted(side, n, now, &mut core.stats.conn);
                    }
                    None => {
                        for chunk in core.ring.chunks(c) {
                            if pair.life.is_relaying() {
                                pair.socks[idx(side.other())].out.extend_from_slice(chunk);
                                pair.life.received_counted(side, chunk.len(), now, &mut core.stats.conn);
                            } else {
                                // A PROXY header being read: the lifecycle parses a copy.
                                pair.life.received(side, chunk, now, &mut core.stats.conn);
                            }
                        }
                    }
                }
            }
            Err(e) if is_no_buffers(e) => {
                core.stats.uring_enobufs += 1;
                let sock = &mut pair.socks[idx(side)];
                if !sock.starved {
                    sock.starved = true;
                    self.starved.push_back((key, side));
                }
            }
            Err(e) if is_canceled(e) => pair.socks[idx(side)].recv_ended = false,
            Err(e) => {
                pair.socks[idx(side)].recv_ended = false;
                if !pair.closed {
                    debug!("proxy {side:?} recv: {e}");
                    pair.life.on_error();
                }
            }
        }
        self.settle(core, key);
    }

    fn on_send(&mut self, core: &mut Core, key: Key, side: Side, c: Completion<Op>) {
        let Some(pair) = self.pairs.get_mut(key) else {
            // Cannot happen (a pair lives until its requests end); still give the buffer back.
            if let Some(h) = c.held {
                Self::release_held(core, h);
            }
            return;
        };
        let now = core.clock.now();
        let resend = !pair.closed;
        let (sent, done_with) = pair.socks[idx(side)].on_send(core, key, side, c, resend);
        if !pair.closed {
            pair.life.sent_counted(side, sent.n, now, &mut core.stats.conn);
            if sent.failed {
                pair.life.on_error();
            }
        }
        if let Some(h) = done_with {
            Self::release_held(core, h);
        }
        self.settle(core, key);
    }

    fn on_ctl(&mut self, core: &mut Core, key: Key, side: Side, c: &Completion<Op>) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        pair.socks[idx(side)].ctl = None;
        if let Err(e) = &c.result {
            debug!("proxy {side:?} shutdown or SO_LINGER: {e}");
            if !pair.closed {
                pair.life.on_error();
            }
        }
        self.settle(core, key);
    }
}

impl Handler for Proxies {
    fn accept(&mut self, core: &mut Core, client: Fd, listener: usize) {
        // TCP_NODELAY is inherited from the listener.
        let (peer, local) = match client.addresses() {
            Some(Ok(a)) => a,
            // A direct descriptor: this listener's pairs do not use the addresses.
            None => (UNKNOWN, UNKNOWN),
            Some(Err(e)) => {
                debug!("addresses of an accepted socket: {e}");
                core.stats.conn.count_close(CloseReason::Error);
                return client.close(&mut core.ring);
            }
        };
        let life = ProxyPair::new(core.clock.now(), pair_cfg(core, listener), peer, local);
        let key = self.pairs.insert(Pair {
            socks: [Sock::new(client), Sock::default()],
            life,
            listener,
            connect: None,
            retired: Vec::new(),
            closed: false,
            queued: false,
            timer: None,
        });
        core.stats.open_pairs += 1;
        self.settle(core, key);
    }

    fn complete(&mut self, core: &mut Core, c: Completion<Op>) {
        match c.op {
            Op::Connect(key) => self.on_connect(core, key, &c),
            Op::RelayRecv(key, side) => self.on_recv(core, key, side, &c),
            Op::RelaySend(key, side) => self.on_send(core, key, side, c),
            Op::RelayCtl(key, side) => self.on_ctl(core, key, side, &c),
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

    fn timers(&mut self, core: &mut Core) {
        self.wheel.expire(core.clock.now(), &mut self.due);
        let mut due = std::mem::take(&mut self.due);
        for (key, tick) in due.drain(..) {
            let Some(pair) = self.pairs.get_mut(key) else { continue };
            if pair.timer != Some(tick) || pair.closed {
                continue;
            }
            pair.timer = None;
            self.upstreams.pair_timer(&core.cfg, &core.stats, core.clock.now(), pair.listener, &mut pair.life);
            self.settle(core, key);
        }
        self.due = due;
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    fn close_all(&mut self, core: &mut Core) {
        for key in self.pairs.keys() {
            if let Some(pair) = self.pairs.get_mut(key) {
                pair.life.abort(CloseReason::Shutdown);
            }
            self.settle(core, key);
        }
    }

    fn publish(&mut self, core: &mut Core) {
        self.upstreams.publish(&mut core.stats);
    }
}
