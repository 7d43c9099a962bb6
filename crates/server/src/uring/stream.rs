//! Echo and HTTP over the completion loop: one socket and one lifecycle ([`StreamConn`]) per
//! connection, with at most one multishot receive and one send in flight.
//!
//! The lifecycle decides, as on the readiness backends; here its answers become ring
//! operations: reading is a multishot receive kept armed while the lifecycle wants input
//! (limited to the watermark headroom, cancelled when it stops wanting), output goes out in one
//! send per batch of completions, and a close cancels the connection's requests and closes the
//! socket through the ring once their completions are in, so that the kernel drops its last
//! reference and the peer sees the FIN at once.
//!
//! Received bytes reach the lifecycle buffer by buffer (several per completion with recv
//! bundles). Echo with `--uring-echo-zero-copy`, when nothing is pending ahead of them (the
//! lifecycle says so: [`StreamConn::may_pass_through`]), sends them back straight out of the
//! receive buffer(s) they arrived in, held out of the ring until that send completes; later
//! bytes queue in the output buffer behind them.

use std::collections::VecDeque;
use std::time::Instant;

use ringpoll_proto::lifecycle::stream::{Action, Env, StreamConn};
use ringpoll_proto::lifecycle::wheel::{Tick, Wheel};
use ringpoll_proto::{CloseReason, Protocol};
use ringpoll_sys::slab::{Key, Slab};
use ringpoll_sys::uring::{is_canceled, is_no_buffers, Completion, HeldBuf, OpId};
use tracing::{debug, warn};

use super::core::{out_buf, send_buf, Core, Handler};
use super::fd::{Done, Fd};
use super::ops::{Kind, Op};

/// Smallest byte limit of a receive arm (a tiny headroom would mean tiny receives).
const MIN_RECV_LIMIT: usize = 4096;

struct Conn<Pr> {
    fd: Fd,
    life: StreamConn<Pr>,
    listener: usize,
    armed: Option<Tick>,
    send: Option<OpId>,
    recv: Option<OpId>,
    /// A shutdown queued on the ring (a fixed descriptor's).
    ctl: Option<OpId>,
    /// Received bytes to send back as they are, next (echo from the receive buffer).
    held: Option<HeldBuf>,
    /// A cancel was queued for `recv` (backpressure, closing).
    recv_cancelled: bool,
    /// The kernel ended the multishot receive (ENOBUFS, byte limit): re-arming it counts.
    recv_ended: bool,
    /// The buffer ring ran dry for this connection: it waits in `Streams::starved`.
    starved: bool,
    /// In `Streams::to_send`.
    queued: bool,
    /// The lifecycle closed it; the socket closes once no request uses it any more.
    closed: bool,
}

impl<Pr> Conn<Pr> {
    fn idle(&self) -> bool {
        self.recv.is_none() && self.send.is_none() && self.ctl.is_none()
    }
}

pub(crate) struct Streams<Pr> {
    kind: Kind,
    conns: Slab<Conn<Pr>>,
    wheel: Wheel<Key>,
    due: Vec<(Key, Tick)>,
    /// Connections with output to send once the batch of completions is handled, so that
    /// everything one iteration produced for a connection goes out in one send.
    to_send: Vec<Key>,
    /// Connections whose receive ended with ENOBUFS, re-armed in order, at most as many per
    /// iteration as there are buffers: re-arming them all at once would mostly earn another
    /// ENOBUFS each while the few buffers go to a handful of them.
    starved: VecDeque<Key>,
}

macro_rules! env {
    ($core:expr, $listener:expr) => {
        Env {
            now: $core.clock.now(),
            date: $core.clock.date(),
            draining: $core.draining,
            cfg: &$core.cfg.listeners[$listener].stream,
        }
    };
}

impl<Pr: Protocol> Streams<Pr> {
    pub fn new(kind: Kind, now: Instant) -> Self {
        Self {
            kind,
            conns: Slab::new(),
            wheel: Wheel::new(now),
            due: Vec::new(),
            to_send: Vec::new(),
            starved: VecDeque::new(),
        }
    }

    /// Bring a connection's requests in line with its lifecycle after anything happened to it.
    fn settle(&mut self, core: &mut Core, key: Key) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.closed {
            return self.release_if_done(core, key);
        }
        loop {
            let env = env!(core, c.listener);
            match c.life.next_action(&env, &mut core.stats.conn) {
                Action::Continue => break,
                Action::ShutdownWrite => match c.fd.shutdown_write(&mut core.ring, Op::Ctl(self.kind, key)) {
                    Done::Now(Ok(())) => c.life.on_shutdown_done(&env),
                    // The shutdown is on its way (after the sends before it): a failure shows
                    // in its completion.
                    Done::Queued(id) => {
                        c.ctl = Some(id);
                        c.life.on_shutdown_done(&env);
                    }
                    Done::Now(Err(e)) => {
                        debug!("shutdown: {e}");
                        c.life.on_error();
                    }
                },
                Action::Close(_) => {
                    c.closed = true;
                    core.stats.open_connections -= 1;
                    if let (Some(id), false) = (c.recv, c.recv_cancelled) {
                        core.ring.cancel(id);
                        c.recv_cancelled = true;
                    }
                    if let Some(id) = c.send {
                        core.ring.cancel(id);
                    }
                    if let Some(h) = c.held.take() {
                        release(core, h);
                    }
                    return self.release_if_done(core, key);
                }
            }
        }
        let want = c.life.wants_read();
        match c.recv {
            None if want && !c.starved => {
                if std::mem::take(&mut c.recv_ended) {
                    core.stats.uring_rearms += 1;
                }
                // Open: at most the watermark headroom per arm, so that data already on its way
                // cannot overshoot the high watermark. Lingering: discard without limit.
                let cfg = &core.cfg.listeners[c.listener].stream;
                let limit =
                    c.life.read_headroom(cfg).map_or(0, |h| u32::try_from(h.max(MIN_RECV_LIMIT)).unwrap_or(u32::MAX));
                c.recv = Some(core.ring.recv_multi(&c.fd, Op::Recv(self.kind, key), limit));
            }
            Some(id) if !want && !c.recv_cancelled => {
                core.ring.cancel(id);
                c.recv_cancelled = true;
            }
            _ => {}
        }
        if c.send.is_none() && (c.held.is_some() || !c.life.output().is_empty()) && !c.queued {
            c.queued = true;
            self.to_send.push(key);
        }
        let env = env!(core, c.listener);
        if let Some(at) = c.life.deadline(&env) {
            let tick = self.wheel.tick_of(at);
            if c.armed.is_none_or(|a| tick < a) {
                c.armed = Some(self.wheel.insert(key, at));
            }
        }
    }

    fn release_if_done(&mut self, core: &mut Core, key: Key) {
        if self.conns.get(key).is_some_and(|c| c.closed && c.idle()) {
            if let Some(c) = self.conns.remove(key) {
                c.fd.close(&mut core.ring);
            }
        }
    }

    fn on_recv(&mut self, core: &mut Core, key: Key, c: &Completion<Op>) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if !c.more {
            conn.recv = None;
            conn.recv_ended = !conn.recv_cancelled;
            conn.recv_cancelled = false;
        }
        if !conn.closed {
            let env = env!(core, conn.listener);
            let st = &mut core.stats.conn;
            match &c.result {
                Ok(0) => {
                    conn.recv_ended = false;
                    conn.life.on_eof(&env, st);
                }
                Ok(_) => {
                    core.stats.uring_bundles += u64::from(c.buffers > 1);
                    // Echo straight from the receive buffer when nothing is pending ahead.
                    let pass = core.cfg.uring.echo_zero_copy
                        && core.held < core.held_max
                        && conn.held.is_none()
                        && conn.life.may_pass_through();
                    match pass.then(|| core.ring.hold(c)).flatten() {
                        Some(h) => {
                            core.held += 1;
                            conn.life.on_data_passed(h.len(), &env, st);
                            conn.held = Some(h);
                        }
                        None => {
                            for chunk in core.ring.chunks(c) {
                                conn.life.on_data(chunk, &env, st);
                            }
                        }
                    }
                }
                Err(e) if is_no_buffers(e) => {
                    core.stats.uring_enobufs += 1;
                    if !conn.starved {
                        conn.starved = true;
                        self.starved.push_back(key);
                    }
                }
                Err(e) if is_canceled(e) => conn.recv_ended = false,
                Err(e) => {
                    debug!("recv: {e}");
                    conn.recv_ended = false;
                    conn.life.on_error();
                }
            }
        }
        self.settle(core, key);
    }

    fn on_send(&mut self, core: &mut Core, key: Key, c: Completion<Op>) {
        let Completion { result, sent, held, .. } = c;
        let Some(conn) = self.conns.get_mut(key) else {
            // Cannot happen (a connection lives until its requests end); still give it back.
            if let Some(h) = held {
                release(core, h);
            }
            return;
        };
        conn.send = None;
        let env = env!(core, conn.listener);
        let st = &mut core.stats.conn;
        if let Some(mut h) = held {
            let n = match &result {
                Ok(n) => *n as usize,
                Err(e) => {
                    if !is_canceled(e) {
                        debug!("send: {e}");
                    }
                    conn.life.on_send_failed();
                    release(core, h);
                    return self.settle(core, key);
                }
            };
            h.advance(n);
            if conn.life.on_passed_sent(n, h.len(), &env, st) && !conn.closed {
                // Short send: the rest goes before anything produced since.
                match core.ring.send_held(&conn.fd, h, Op::Send(self.kind, key)) {
                    Ok(id) => conn.send = Some(id),
                    Err(foreign) => {
                        warn!("{foreign}");
                        conn.life.on_error();
                    }
                }
            } else {
                release(core, h);
            }
            return self.settle(core, key);
        }
        let buf = sent.map(out_buf).unwrap_or_default();
        match result {
            Ok(n) => {
                if let Some(rest) = conn.life.on_send_done(buf, n as usize, &env, st) {
                    // Short send: the rest goes before anything produced since.
                    conn.send = Some(core.ring.send(&conn.fd, send_buf(rest), Op::Send(self.kind, key)));
                }
            }
            Err(e) => {
                if !is_canceled(&e) {
                    debug!("send: {e}");
                }
                conn.life.on_send_failed();
            }
        }
        self.settle(core, key);
    }

    fn on_ctl(&mut self, core: &mut Core, key: Key, c: &Completion<Op>) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.ctl = None;
        if let Err(e) = &c.result {
            debug!("shutdown: {e}");
            if !conn.closed {
                conn.life.on_error();
            }
        }
        self.settle(core, key);
    }
}

/// Give a held receive buffer back to the ring.
fn release(core: &mut Core, h: HeldBuf) {
    core.held -= 1;
    if let Err(foreign) = core.ring.release(h) {
        warn!("{foreign}");
    }
}

impl<Pr: Protocol> Handler for Streams<Pr> {
    fn accept(&mut self, core: &mut Core, fd: Fd, listener: usize) {
        // TCP_NODELAY is inherited from the listener.
        let life = StreamConn::new(core.clock.now(), &core.cfg.listeners[listener].stream);
        let key = self.conns.insert(Conn {
            fd,
            life,
            listener,
            armed: None,
            send: None,
            recv: None,
            ctl: None,
            held: None,
            recv_cancelled: false,
            recv_ended: false,
            starved: false,
            queued: false,
            closed: false,
        });
        core.stats.open_connections += 1;
        self.settle(core, key);
    }

    fn complete(&mut self, core: &mut Core, c: Completion<Op>) {
        match c.op {
            Op::Recv(_, key) => self.on_recv(core, key, &c),
            Op::Send(_, key) => self.on_send(core, key, c),
            Op::Ctl(_, key) => self.on_ctl(core, key, &c),
            _ => {}
        }
    }

    fn end_of_batch(&mut self, core: &mut Core) {
        for _ in 0..usize::from(core.cfg.uring.buf_count).min(self.starved.len()) {
            let Some(key) = self.starved.pop_front() else { break };
            if let Some(conn) = self.conns.get_mut(key) {
                conn.starved = false;
                self.settle(core, key);
            }
        }
        let mut keys = std::mem::take(&mut self.to_send);
        for key in keys.drain(..) {
            let Some(conn) = self.conns.get_mut(key) else { continue };
            conn.queued = false;
            if conn.closed || conn.send.is_some() {
                continue;
            }
            let op = Op::Send(self.kind, key);
            if let Some(h) = conn.held.take() {
                core.stats.uring_held_sends += 1;
                match core.ring.send_held(&conn.fd, h, op) {
                    Ok(id) => conn.send = Some(id),
                    Err(foreign) => {
                        warn!("{foreign}");
                        conn.life.on_error();
                        self.settle(core, key);
                    }
                }
            } else if let Some(buf) = conn.life.take_output() {
                conn.send = Some(core.ring.send(&conn.fd, send_buf(buf), op));
            }
        }
        self.to_send = keys;
    }

    fn live(&self) -> usize {
        self.conns.len()
    }

    fn drain(&mut self, core: &mut Core) {
        for key in self.conns.keys() {
            if let Some(c) = self.conns.get_mut(key) {
                if !c.closed {
                    let env = env!(core, c.listener);
                    c.life.on_timer(&env, &mut core.stats.conn);
                }
            }
            self.settle(core, key);
        }
    }

    fn timers(&mut self, core: &mut Core) {
        self.wheel.expire(core.clock.now(), &mut self.due);
        let mut due = std::mem::take(&mut self.due);
        for (key, tick) in due.drain(..) {
            let Some(c) = self.conns.get_mut(key) else { continue };
            if c.armed != Some(tick) || c.closed {
                continue;
            }
            c.armed = None;
            let env = env!(core, c.listener);
            c.life.on_timer(&env, &mut core.stats.conn);
            self.settle(core, key);
        }
        self.due = due;
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.wheel.next_deadline()
    }

    fn close_all(&mut self, core: &mut Core) {
        for key in self.conns.keys() {
            if let Some(c) = self.conns.get_mut(key) {
                c.life.abort(CloseReason::Shutdown);
            }
            self.settle(core, key);
        }
    }
}
