//! The L4 proxy over the readiness loop: each accepted client is paired with a non-blocking
//! connection to an upstream its lifecycle ([`ProxyPair`]) chose with the worker's balancer;
//! both sockets live in one slab entry and their tokens differ by a side bit. What to read,
//! write, connect, shut down or close is the lifecycle's decision; this file moves bytes
//! (copied through the relay's buffers, or spliced through a pipe per direction) and translates.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Instant;

use ringpoll_proto::buf::Watermarks;
use ringpoll_proto::lifecycle::pair::{PairAction, PairConfig, ProxyPair};
use ringpoll_proto::lifecycle::wheel::{Tick, Wheel};
use ringpoll_proto::relay::Side;
use ringpoll_proto::CloseReason;
use ringpoll_sys::pipe::Pipe;
use ringpoll_sys::poller::{is_fd_out_of_range, Event, Interest, Poller};
use ringpoll_sys::slab::{Key, Slab};
use ringpoll_sys::socket;
use tracing::{debug, warn};

use super::core::{split, token, Core, Handler, Kind};
use crate::ctx::WorkerCtx;
use crate::upstreams::{self, Upstreams};

const fn idx(side: Side) -> usize {
    side as usize
}

struct Pair {
    client: TcpStream,
    /// The upstream socket, once a connect was started.
    upstream: Option<TcpStream>,
    life: ProxyPair,
    listener: usize,
    /// What each side is armed for; `None` once an event consumed the one-shot arming.
    armed: [Option<Interest>; 2],
    /// Edge mode: the last read of each side found it empty.
    drained: [bool; 2],
    /// The side's FIN is known to be queued (RDHUP/HUP seen), possibly while it was not being
    /// read: a short read is then not the end of it.
    hup: [bool; 2],
    /// `--splice`: one pipe per direction, indexed by the source side.
    pipes: Option<Box<[Pipe; 2]>>,
    timer: Option<Tick>,
}

impl Pair {
    fn stream(&self, side: Side) -> Option<&TcpStream> {
        match side {
            Side::Client => Some(&self.client),
            Side::Upstream => self.upstream.as_ref(),
        }
    }

    fn want(&self, side: Side) -> Interest {
        if self.life.is_connecting() {
            // Only the upstream's connect completion matters until then.
            return if side == Side::Upstream { Interest::WRITE } else { Interest::NONE };
        }
        Interest {
            read: self.life.wants_read(side),
            write: self.life.is_relaying() && self.life.relay().wants_write(side),
        }
    }
}

pub(crate) struct Proxies {
    pairs: Slab<Pair>,
    wheel: Wheel<Key>,
    due: Vec<(Key, Tick)>,
    upstreams: Upstreams,
}

/// The pair lifecycle's configuration for `listener`.
fn pair_cfg<P>(core: &Core<P>, listener: usize) -> &PairConfig {
    &core.cfg.listeners[listener].pair
}

impl Proxies {
    pub fn new(ctx: &WorkerCtx, now: Instant) -> Self {
        Self { pairs: Slab::new(), wheel: Wheel::new(now), due: Vec::new(), upstreams: Upstreams::new(ctx) }
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Carry out the pair's actions, then re-arm its sockets and its timer.
    fn settle<P: Poller>(&mut self, core: &mut Core<P>, key: Key) {
        loop {
            let Some(pair) = self.pairs.get_mut(key) else { return };
            let now = core.clock.now();
            let Some(bal) = self.upstreams.balancer(&core.cfg, pair.listener) else { return };
            match pair.life.next_action(now, bal, &mut core.stats.conn) {
                PairAction::Continue => break,
                PairAction::Connect(i) => self.connect(core, key, i),
                PairAction::ShutdownWrite(side) => {
                    let r = pair.stream(side).map_or(Ok(()), socket::shutdown_write);
                    match r {
                        Ok(()) => pair.life.on_shut_down(side, now),
                        Err(e) => {
                            debug!("proxy {side:?} shutdown: {e}");
                            pair.life.on_error();
                        }
                    }
                }
                PairAction::Close(reason) => return self.close(core, key, reason),
            }
        }
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let mut failed = false;
        for side in Side::BOTH {
            let want = pair.want(side);
            let Some(s) = pair.stream(side) else { continue };
            let tok = token(Kind::Proxy, key, side == Side::Upstream);
            if pair.armed[idx(side)] != Some(want) {
                if let Err(e) = core.poller.rearm(s.as_raw_fd(), tok, want) {
                    warn!("re-arming a proxy socket: {e}");
                    failed = true;
                }
                pair.armed[idx(side)] = Some(want);
            }
            if want.read && !pair.drained[idx(side)] {
                core.revisit_if_edge(tok);
            }
        }
        if failed {
            pair.life.on_error();
            return self.settle(core, key);
        }
        let cfg = pair_cfg(core, pair.listener);
        if let Some(at) = pair.life.deadline(core.clock.now(), cfg) {
            let tick = self.wheel.tick_of(at);
            if pair.timer.is_none_or(|t| tick < t) {
                pair.timer = Some(self.wheel.insert(key, at));
            }
        }
    }

    /// Start a non-blocking connect to upstream `i`, replacing a failed upstream socket.
    fn connect<P: Poller>(&mut self, core: &mut Core<P>, key: Key, i: usize) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let listener = pair.listener;
        if let Some(old) = pair.upstream.take() {
            pair.armed[idx(Side::Upstream)] = None;
            core.forget(old);
        }
        let addr = upstreams::addr(&core.cfg, listener, i);
        let started = match addr.map(socket::connect_nonblocking) {
            Some(Ok(s)) => {
                let tok = token(Kind::Proxy, key, true);
                match core.poller.add(s.as_raw_fd(), tok, Interest::WRITE) {
                    Ok(()) => Ok(s),
                    Err(e) => {
                        core.close(s);
                        Err(e)
                    }
                }
            }
            Some(Err(e)) => Err(e),
            None => Err(io::Error::other("no such upstream")),
        };
        match started {
            Ok(s) => {
                let pair = self.pairs.get_mut(key).expect("looked up above");
                pair.upstream = Some(s);
                pair.armed[idx(Side::Upstream)] = Some(Interest::WRITE);
                pair.drained[idx(Side::Upstream)] = false;
                pair.hup[idx(Side::Upstream)] = false;
            }
            Err(e) => {
                self.upstreams.connect_failed(&core.stats, core.clock.now(), addr, &e);
                self.connect_failed(core, key);
            }
        }
    }

    fn connect_failed<P>(&mut self, core: &mut Core<P>, key: Key) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let cfg = pair_cfg(core, pair.listener);
        if let Some(bal) = self.upstreams.balancer(&core.cfg, pair.listener) {
            pair.life.on_connect_failed(core.clock.now(), cfg, bal);
        }
    }

    /// Close both sockets (reset both peers on an abortive close) and log the pair.
    fn close<P: Poller>(&mut self, core: &mut Core<P>, key: Key, reason: CloseReason) {
        let Some(pair) = self.pairs.remove(key) else { return };
        core.stats.open_pairs -= 1;
        self.upstreams.finished(&core.cfg, &core.stats, pair.listener, &pair.life, reason, core.clock.now());
        for s in [Some(pair.client), pair.upstream].into_iter().flatten() {
            if reason.is_abortive() {
                // Propagate the abort: the surviving peer gets a reset, not a clean FIN.
                let _ = socket::set_linger_zero(&s);
            }
            core.forget(s);
        }
    }
}

/// Move bytes: read the side that fired, write whatever is pending both ways.
fn pump<P: Poller>(pair: &mut Pair, core: &mut Core<P>, side: Side, ev: Event) {
    if (ev.readable || ev.hup) && pair.life.wants_read(side) {
        if let Err(e) = read_side(pair, core, side) {
            debug!("proxy {side:?}: {e}");
            pair.life.on_error();
            return;
        }
    }
    for s in Side::BOTH {
        if let Err(e) = flush(pair, core, s) {
            debug!("proxy {s:?}: {e}");
            pair.life.on_error();
            return;
        }
    }
}

fn read_side<P: Poller>(pair: &mut Pair, core: &mut Core<P>, side: Side) -> io::Result<()> {
    if pair.pipes.is_some() && pair.life.is_relaying() {
        return splice_side(pair, core, side);
    }
    let hup = pair.hup[idx(side)];
    for _ in 0..core.cfg.read_budget {
        if !pair.life.wants_read(side) {
            return Ok(());
        }
        let s = match side {
            Side::Client => &pair.client,
            Side::Upstream => match &pair.upstream {
                Some(s) => s,
                None => return Ok(()),
            },
        };
        let now = core.clock.now();
        match socket::recv(s, &mut core.scratch)? {
            None => {
                pair.drained[idx(side)] = true;
                return Ok(());
            }
            Some(0) => {
                pair.life.received_eof(side, now);
                pair.drained[idx(side)] = true;
                return Ok(());
            }
            Some(n) => {
                pair.life.received(side, &core.scratch[..n], now, &mut core.stats.conn);
                // Forward at once: one write per read keeps the buffer (and latency) small.
                flush(pair, core, side.other())?;
                if n < core.scratch.len() && !hup {
                    pair.drained[idx(side)] = true;
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// The zero-copy read: splice from `side` into its pipe, then on into the other socket.
/// (Only with the one-shot epoll backend: re-arming re-reports a socket left readable, so a
/// short splice needs no "drained" bookkeeping.)
fn splice_side<P: Poller>(pair: &mut Pair, core: &mut Core<P>, side: Side) -> io::Result<()> {
    for _ in 0..core.cfg.read_budget {
        if !pair.life.wants_read(side) {
            return Ok(());
        }
        let s = match side {
            Side::Client => &pair.client,
            Side::Upstream => match &pair.upstream {
                Some(s) => s,
                None => return Ok(()),
            },
        };
        let Some(pipes) = pair.pipes.as_ref() else { return Ok(()) };
        let pipe = &pipes[idx(side)];
        let room = pipe.capacity().saturating_sub(pair.life.relay().outgoing_len(side.other()));
        if room == 0 {
            pair.life.relay_mut().pipe_blocked(side);
            return Ok(());
        }
        let now = core.clock.now();
        match pipe.fill_from(s.as_raw_fd(), room)? {
            // The socket is empty, or the pipe ran out of slots before bytes.
            None => {
                pair.life.relay_mut().pipe_blocked(side);
                return Ok(());
            }
            Some(0) => {
                pair.life.received_eof(side, now);
                return Ok(());
            }
            Some(n) => {
                pair.life.received_counted(side, n, now, &mut core.stats.conn);
                flush(pair, core, side.other())?;
                if n < room {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Write what is pending for `to` until done or the socket is full: first the relay's own
/// buffer (bytes that came before any piped ones: a PROXY header, what arrived with the
/// client's), then the pipe.
fn flush<P: Poller>(pair: &mut Pair, core: &mut Core<P>, to: Side) -> io::Result<()> {
    if !pair.life.is_relaying() {
        return Ok(());
    }
    let s = match to {
        Side::Client => &pair.client,
        Side::Upstream => match &pair.upstream {
            Some(s) => s,
            None => return Ok(()),
        },
    };
    while pair.life.relay().wants_write(to) && !pair.life.relay().outgoing(to).is_empty() {
        let want = pair.life.relay().outgoing(to).len();
        match socket::send(s, pair.life.relay().outgoing(to))? {
            Some(n) => {
                pair.life.sent(to, n, core.clock.now(), &mut core.stats.conn);
                if n < want {
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    }
    if let Some(pipes) = pair.pipes.as_ref() {
        let pipe = &pipes[idx(to.other())];
        while pair.life.relay().outgoing_piped(to) > 0 && !pair.life.relay().is_reset() {
            let want = pair.life.relay().outgoing_piped(to);
            match pipe.drain_into(s.as_raw_fd(), want)? {
                Some(n) if n > 0 => {
                    pair.life.sent_counted(to, n, core.clock.now(), &mut core.stats.conn);
                    if n < want {
                        break;
                    }
                }
                _ => break,
            }
        }
    }
    Ok(())
}

/// Two pipes for a spliced pair; on failure (e.g. out of descriptors) the pair copies.
fn make_pipes<P: Poller>(core: &mut Core<P>) -> Option<Box<[Pipe; 2]>> {
    match (Pipe::new(), Pipe::new()) {
        (Ok(a), Ok(b)) => Some(Box::new([a, b])),
        (Err(e), _) | (_, Err(e)) => {
            if core.log_limit.allow(core.clock.now()) {
                warn!("creating splice pipes: {e}; this pair copies instead");
            }
            None
        }
    }
}

impl<P: Poller> Handler<P> for Proxies {
    fn accept(&mut self, core: &mut Core<P>, client: TcpStream, listener: usize) {
        let fail = |core: &mut Core<P>, client: TcpStream| {
            core.stats.conn.count_close(CloseReason::Error);
            core.close(client);
        };
        if let Err(e) = socket::set_nodelay(&client) {
            debug!("TCP_NODELAY on an accepted socket: {e}");
            return fail(core, client);
        }
        let (peer, local) = match socket::addresses(&client) {
            Ok(a) => a,
            Err(e) => {
                debug!("addresses of an accepted socket: {e}");
                return fail(core, client);
            }
        };
        let key = self.pairs.vacant_key();
        if let Err(e) = core.poller.add(client.as_raw_fd(), token(Kind::Proxy, key, false), Interest::NONE) {
            if is_fd_out_of_range(&e) {
                core.stats.rejected_fd_setsize += 1;
                if core.log_limit.allow(core.clock.now()) {
                    warn!("{}: {e}; closing the connection", P::NAME);
                }
            } else {
                warn!("registering a proxy socket: {e}");
            }
            return fail(core, client);
        }
        let now = core.clock.now();
        let lcfg = &core.cfg.listeners[listener];
        let mut cfg = lcfg.pair;
        let pipes = if lcfg.splice { make_pipes(core) } else { None };
        // Spliced bytes live in the pipes: their capacity is the watermark.
        if let Some(p) = &pipes {
            cfg.watermarks = Watermarks { high: p[0].capacity(), low: p[0].capacity() / 2 };
        }
        let life = ProxyPair::new(now, &cfg, peer, local);
        let inserted = self.pairs.insert(Pair {
            client,
            upstream: None,
            life,
            listener,
            armed: [Some(Interest::NONE), None],
            drained: [false, false],
            hup: [false, false],
            pipes,
            timer: None,
        });
        debug_assert_eq!(inserted, key);
        core.stats.open_pairs += 1;
        self.settle(core, key);
    }

    fn event(&mut self, core: &mut Core<P>, ev: Event) {
        let (_, key, upstream_side) = split(ev.token);
        let side = if upstream_side { Side::Upstream } else { Side::Client };
        let Some(pair) = self.pairs.get_mut(key) else { return };
        pair.armed[idx(side)] = None;
        if ev.readable || ev.hup {
            pair.drained[idx(side)] = false;
        }
        pair.hup[idx(side)] |= ev.hup;
        let connecting = side == Side::Upstream && pair.life.is_connecting();
        if connecting {
            if ev.writable || ev.error || ev.hup {
                let listener = pair.listener;
                let upstream = pair.life.upstream();
                let result = pair.upstream.as_ref().map(socket::take_error);
                match result {
                    Some(Ok(None)) if !ev.error => {
                        if let Some(bal) = self.upstreams.balancer(&core.cfg, listener) {
                            pair.life.on_connected(core.clock.now(), pair_cfg(core, listener), bal);
                        }
                        // Whatever the client sent meanwhile is waiting: read it now.
                        pair.drained = [false, false];
                        let client_ev =
                            Event { token: ev.token, readable: true, writable: true, hup: false, error: false };
                        pump(pair, core, Side::Upstream, Event { readable: false, ..client_ev });
                        pump(pair, core, Side::Client, client_ev);
                    }
                    other => {
                        let e = match other {
                            Some(Ok(Some(e)) | Err(e)) => e,
                            _ => io::Error::other("connect failed"),
                        };
                        let addr = upstream.and_then(|i| upstreams::addr(&core.cfg, listener, i));
                        self.upstreams.connect_failed(&core.stats, core.clock.now(), addr, &e);
                        self.connect_failed(core, key);
                    }
                }
            }
        } else if ev.error {
            if let Some(Ok(Some(e))) = pair.stream(side).map(socket::take_error) {
                debug!("proxy {side:?} socket error: {e}");
            }
            pair.life.on_error();
        } else {
            pump(pair, core, side, ev);
        }
        self.settle(core, key);
    }

    fn drain(&mut self, _core: &mut Core<P>) {
        // An L4 proxy cannot tell an idle pair from one waiting for its upstream's answer:
        // pairs run until both sides finish or the shutdown deadline closes them (as nginx's
        // stream module does with worker_shutdown_timeout).
    }

    fn timers(&mut self, core: &mut Core<P>) {
        self.wheel.expire(core.clock.now(), &mut self.due);
        let mut due = std::mem::take(&mut self.due);
        for (key, tick) in due.drain(..) {
            let Some(pair) = self.pairs.get_mut(key) else { continue };
            if pair.timer != Some(tick) {
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

    fn close_all(&mut self, core: &mut Core<P>) {
        for key in self.pairs.keys() {
            if let Some(pair) = self.pairs.get_mut(key) {
                pair.life.abort(CloseReason::Shutdown);
            }
            self.settle(core, key);
        }
    }

    fn publish(&mut self, core: &mut Core<P>) {
        self.upstreams.publish(&mut core.stats);
    }
}
