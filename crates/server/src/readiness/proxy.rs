//! The L4 proxy over the readiness loop: each accepted client is paired with a non-blocking
//! connection to an upstream (round-robin per worker); both sockets live in one slab entry
//! and their tokens differ by a side bit. What to read, write, shut down or close is decided
//! by the sans-IO [`Relay`]; this file only moves bytes and translates events.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use ringpoll_proto::buf::Watermarks;
use ringpoll_proto::relay::{Relay, Side};
use tracing::{debug, warn};

use super::{close, Core, Handler};
use crate::CloseReason;
use ringpoll_sys::pipe::Pipe;
use ringpoll_sys::poller::{is_fd_out_of_range, Event, Interest, Poller, Token};
use ringpoll_sys::slab::{Key, Slab};
use ringpoll_sys::socket;

/// Bit of the token's slot index that says which side an event is for.
const SIDE_BIT: u64 = 1 << 31;

fn token(key: Key, side: Side) -> Token {
    key.to_u64() | if side == Side::Upstream { SIDE_BIT } else { 0 }
}

fn split(token: Token) -> (Key, Side) {
    let side = if token & SIDE_BIT != 0 { Side::Upstream } else { Side::Client };
    (Key::from_u64(token & !SIDE_BIT), side)
}

const fn idx(side: Side) -> usize {
    side as usize
}

struct Connecting {
    deadline: Instant,
    upstream: usize,
    retried: bool,
}

struct Pair {
    client: TcpStream,
    upstream: TcpStream,
    relay: Relay,
    connecting: Option<Connecting>,
    /// What each side is armed for; `None` once an event consumed the one-shot arming.
    armed: [Option<Interest>; 2],
    /// Edge mode: the last read of each side found it empty.
    drained: [bool; 2],
    /// The side's FIN is known to be queued (RDHUP/HUP seen), possibly while it was not
    /// being read: a short read is then not the end of it.
    hup: [bool; 2],
    /// `--splice`: one pipe per direction, indexed by the source side; bytes move socket ->
    /// pipe -> socket without entering user space.
    pipes: Option<Box<[Pipe; 2]>>,
    last_active: Instant,
}

impl Pair {
    fn stream(&self, side: Side) -> &TcpStream {
        match side {
            Side::Client => &self.client,
            Side::Upstream => &self.upstream,
        }
    }

    fn want(&self, side: Side) -> Interest {
        if self.connecting.is_some() {
            // Only the upstream's connect completion matters until then.
            return if side == Side::Upstream { Interest::WRITE } else { Interest::NONE };
        }
        let w = self.relay.want(side);
        Interest { read: w.read, write: w.write }
    }
}

pub(crate) struct Proxies {
    pairs: Slab<Pair>,
    next_upstream: usize,
}

enum Outcome {
    Keep,
    Close(CloseReason),
}

impl Proxies {
    pub fn new() -> Self {
        Self { pairs: Slab::new(), next_upstream: 0 }
    }

    fn pick_upstream<P: Poller>(&mut self, core: &Core<P>) -> (usize, SocketAddr) {
        let ups = core.cfg.upstreams;
        let i = self.next_upstream % ups.len();
        self.next_upstream = self.next_upstream.wrapping_add(1);
        (i, ups[i])
    }

    fn upstream_failed<P: Poller>(core: &mut Core<P>, addr: SocketAddr, e: &io::Error) {
        core.stats.upstream_failures += 1;
        if core.log_limit.allow(core.clock.now()) {
            warn!("upstream {addr}: {e} ({} upstream failures so far)", core.stats.upstream_failures);
        }
    }

    fn close<P: Poller>(&mut self, core: &mut Core<P>, key: Key, reason: CloseReason) {
        let Some(pair) = self.pairs.remove(key) else { return };
        for side in Side::BOTH {
            let s = pair.stream(side);
            if let Err(e) = core.poller.delete(s.as_raw_fd()) {
                debug!("deregistering fd {}: {e}", s.as_raw_fd());
            }
            if reason == CloseReason::Error {
                // Propagate the abort: the surviving peer gets a reset, not a clean FIN.
                let _ = socket::set_linger_zero(s);
            }
        }
        reason.count(&mut core.stats);
        close(pair.client);
        close(pair.upstream);
    }

    /// Connect failed or timed out: try the next upstream once, else close the client.
    fn retry_or_close<P: Poller>(&mut self, core: &mut Core<P>, key: Key, e: &io::Error) {
        let Some((failed, retried)) =
            self.pairs.get(key).and_then(|p| p.connecting.as_ref()).map(|c| (c.upstream, c.retried))
        else {
            return;
        };
        let ups = core.cfg.upstreams;
        Self::upstream_failed(core, ups[failed], e);
        if retried || ups.len() < 2 {
            self.close(core, key, CloseReason::Error);
            return;
        }
        let i = (failed + 1) % ups.len();
        let addr = ups[i];
        let stream = match socket::connect_nonblocking(addr) {
            Ok(s) => s,
            Err(e) => {
                Self::upstream_failed(core, addr, &e);
                self.close(core, key, CloseReason::Error);
                return;
            }
        };
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let _ = core.poller.delete(pair.upstream.as_raw_fd());
        close(std::mem::replace(&mut pair.upstream, stream));
        pair.connecting =
            Some(Connecting { deadline: core.clock.now() + core.cfg.connect_timeout, upstream: i, retried: true });
        pair.armed[idx(Side::Upstream)] = Some(Interest::WRITE);
        if let Err(e) = core.poller.add(pair.upstream.as_raw_fd(), token(key, Side::Upstream), Interest::WRITE) {
            warn!("registering an upstream socket: {e}");
            self.close(core, key, CloseReason::Error);
        }
    }

    /// Re-arm each side whose wanted interest differs from what it is armed for.
    fn rearm<P: Poller>(&mut self, core: &mut Core<P>, key: Key) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let mut failed = false;
        for side in Side::BOTH {
            let want = pair.want(side);
            if pair.armed[idx(side)] != Some(want) {
                if let Err(e) = core.poller.rearm(pair.stream(side).as_raw_fd(), token(key, side), want) {
                    warn!("re-arming a proxy socket: {e}");
                    failed = true;
                }
                pair.armed[idx(side)] = Some(want);
            }
            if want.read && !pair.drained[idx(side)] {
                core.revisit_if_edge(token(key, side));
            }
        }
        if failed {
            self.close(core, key, CloseReason::Error);
        }
    }
}

/// Move bytes: read the side that fired, write whatever is pending both ways, forward
/// half-closes. Errors reset the pair.
fn pump<P: Poller>(pair: &mut Pair, core: &mut Core<P>, side: Side, ev: Event) -> Outcome {
    if ev.error {
        if let Ok(Some(e)) = socket::take_error(pair.stream(side)) {
            debug!("proxy {side:?} socket error: {e}");
        }
        pair.relay.reset();
        return Outcome::Close(CloseReason::Error);
    }
    if (ev.readable || ev.hup) && pair.relay.wants_read(side) {
        if let Err(e) = read_side(pair, core, side) {
            debug!("proxy {side:?}: {e}");
            pair.relay.reset();
            return Outcome::Close(CloseReason::Error);
        }
    }
    for s in Side::BOTH {
        if let Err(e) = flush(pair, core, s) {
            debug!("proxy {s:?}: {e}");
            pair.relay.reset();
            return Outcome::Close(CloseReason::Error);
        }
    }
    if pair.relay.is_done() {
        return Outcome::Close(CloseReason::Normal);
    }
    Outcome::Keep
}

fn read_side<P: Poller>(pair: &mut Pair, core: &mut Core<P>, side: Side) -> io::Result<()> {
    if pair.pipes.is_some() {
        return splice_side(pair, core, side);
    }
    let hup = pair.hup[idx(side)];
    for _ in 0..core.cfg.read_budget {
        if !pair.relay.wants_read(side) {
            return Ok(());
        }
        match socket::recv(pair.stream(side), &mut core.scratch)? {
            None => {
                pair.drained[idx(side)] = true;
                return Ok(());
            }
            Some(0) => {
                pair.relay.received_eof(side);
                pair.drained[idx(side)] = true;
                return Ok(());
            }
            Some(n) => {
                core.stats.bytes_in += n as u64;
                core.stats.requests += 1;
                pair.relay.received(side, &core.scratch[..n]);
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
        if !pair.relay.wants_read(side) {
            return Ok(());
        }
        let Some(pipes) = pair.pipes.as_ref() else { return Ok(()) };
        let pipe = &pipes[idx(side)];
        let room = pipe.capacity().saturating_sub(pair.relay.outgoing_len(side.other()));
        if room == 0 {
            pair.relay.pipe_blocked(side);
            return Ok(());
        }
        match pipe.fill_from(pair.stream(side).as_raw_fd(), room)? {
            // The socket is empty, or the pipe ran out of slots before bytes.
            None => {
                pair.relay.pipe_blocked(side);
                return Ok(());
            }
            Some(0) => {
                pair.relay.received_eof(side);
                return Ok(());
            }
            Some(n) => {
                core.stats.bytes_in += n as u64;
                core.stats.requests += 1;
                pair.relay.received_piped(side, n);
                flush(pair, core, side.other())?;
                if n < room {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Write what is pending for `to` until done or the socket is full; then forward a
/// half-close if it is due.
fn flush<P: Poller>(pair: &mut Pair, core: &mut Core<P>, to: Side) -> io::Result<()> {
    if let Some(pipes) = pair.pipes.as_ref() {
        let pipe = &pipes[idx(to.other())];
        while pair.relay.outgoing_piped(to) > 0 && !pair.relay.is_reset() {
            let want = pair.relay.outgoing_piped(to);
            match pipe.drain_into(pair.stream(to).as_raw_fd(), want)? {
                Some(n) if n > 0 => {
                    core.stats.bytes_out += n as u64;
                    pair.relay.sent_piped(to, n);
                    if n < want {
                        break;
                    }
                }
                _ => break,
            }
        }
    }
    while pair.relay.wants_write(to) && !pair.relay.outgoing(to).is_empty() {
        let want = pair.relay.outgoing_len(to);
        match socket::send(pair.stream(to), pair.relay.outgoing(to))? {
            Some(n) => {
                core.stats.bytes_out += n as u64;
                pair.relay.sent(to, n);
                if n < want {
                    break;
                }
            }
            None => break,
        }
    }
    if pair.relay.should_shutdown(to) {
        socket::shutdown_write(pair.stream(to))?;
        pair.relay.shut_down(to);
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
    fn accept(&mut self, core: &mut Core<P>, client: TcpStream) {
        let fail = |core: &mut Core<P>| {
            core.stats.closed += 1;
            core.stats.closed_error += 1;
        };
        if let Err(e) = socket::set_nodelay(&client) {
            debug!("TCP_NODELAY on an accepted socket: {e}");
            close(client);
            return fail(core);
        }
        let (i, addr) = self.pick_upstream(core);
        let upstream = match socket::connect_nonblocking(addr) {
            Ok(s) => s,
            Err(e) => {
                Self::upstream_failed(core, addr, &e);
                close(client);
                return fail(core);
            }
        };
        let key = self.pairs.vacant_key();
        let refused = 'register: {
            for (stream, side, interest) in
                [(&client, Side::Client, Interest::NONE), (&upstream, Side::Upstream, Interest::WRITE)]
            {
                if let Err(e) = core.poller.add(stream.as_raw_fd(), token(key, side), interest) {
                    if side == Side::Upstream {
                        let _ = core.poller.delete(client.as_raw_fd());
                    }
                    if is_fd_out_of_range(&e) {
                        core.stats.rejected_fd_setsize += 1;
                        if core.log_limit.allow(core.clock.now()) {
                            warn!("{}: {e}; closing the connection", P::NAME);
                        }
                    } else {
                        warn!("registering a proxy socket: {e}");
                    }
                    break 'register true;
                }
            }
            false
        };
        if refused {
            close(client);
            close(upstream);
            return fail(core);
        }
        let now = core.clock.now();
        let pipes = if core.cfg.splice { make_pipes(core) } else { None };
        // Spliced bytes live in the pipes: their capacity is the watermark.
        let wm = match &pipes {
            Some(p) => Watermarks { high: p[0].capacity(), low: p[0].capacity() / 2 },
            None => core.cfg.watermarks,
        };
        let inserted = self.pairs.insert(Pair {
            client,
            upstream,
            relay: Relay::new(wm),
            connecting: Some(Connecting { deadline: now + core.cfg.connect_timeout, upstream: i, retried: false }),
            armed: [Some(Interest::NONE), Some(Interest::WRITE)],
            drained: [false, false],
            hup: [false, false],
            pipes,
            last_active: now,
        });
        debug_assert_eq!(inserted, key);
    }

    fn event(&mut self, core: &mut Core<P>, ev: Event) {
        let (key, side) = split(ev.token);
        let Some(pair) = self.pairs.get_mut(key) else { return };
        pair.armed[idx(side)] = None;
        pair.last_active = core.clock.now();
        if ev.readable || ev.hup {
            pair.drained[idx(side)] = false;
        }
        pair.hup[idx(side)] |= ev.hup;
        if pair.connecting.is_some() {
            if side == Side::Client {
                if ev.error {
                    self.close(core, key, CloseReason::Error);
                } else {
                    self.rearm(core, key);
                }
                return;
            }
            if !(ev.writable || ev.error || ev.hup) {
                self.rearm(core, key);
                return;
            }
            match socket::take_error(&pair.upstream) {
                Ok(None) if !ev.error => {
                    pair.connecting = None;
                    pair.relay.connected();
                    // Whatever the client sent meanwhile is waiting: read it now.
                    pair.drained = [false, false];
                    let ev = Event { token: ev.token, readable: false, writable: true, hup: false, error: false };
                    if let Outcome::Close(r) = pump(pair, core, side, ev) {
                        return self.close(core, key, r);
                    }
                    let client_ev = Event { token: token(key, Side::Client), readable: true, ..ev };
                    if let Outcome::Close(r) = pump(pair, core, Side::Client, client_ev) {
                        return self.close(core, key, r);
                    }
                }
                Ok(Some(e)) | Err(e) => return self.retry_or_close(core, key, &e),
                Ok(None) => {
                    let e = io::Error::other("connect failed");
                    return self.retry_or_close(core, key, &e);
                }
            }
            self.rearm(core, key);
            return;
        }
        match pump(pair, core, side, ev) {
            Outcome::Close(r) => self.close(core, key, r),
            Outcome::Keep => self.rearm(core, key),
        }
    }

    fn live(&self) -> usize {
        self.pairs.len()
    }

    fn drain(&mut self, _core: &mut Core<P>) {
        // An L4 proxy cannot tell an idle pair from one waiting for its upstream's answer:
        // pairs run until both sides finish or the shutdown deadline closes them (as nginx's
        // stream module does with worker_shutdown_timeout).
    }

    fn sweep(&mut self, core: &mut Core<P>) {
        let now = core.clock.now();
        let idle = core.cfg.idle_timeout;
        let mut timed_out = Vec::new();
        let mut idle_out = Vec::new();
        for (key, p) in self.pairs.iter_mut() {
            match &p.connecting {
                Some(c) if now >= c.deadline => timed_out.push(key),
                _ if idle.is_some_and(|t| now.saturating_duration_since(p.last_active) >= t) => idle_out.push(key),
                _ => {}
            }
        }
        for key in timed_out {
            let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
            self.retry_or_close(core, key, &e);
        }
        for key in idle_out {
            self.close(core, key, CloseReason::Idle);
        }
    }

    fn close_all(&mut self, core: &mut Core<P>) {
        for key in self.pairs.keys() {
            self.close(core, key, CloseReason::Shutdown);
        }
    }
}
