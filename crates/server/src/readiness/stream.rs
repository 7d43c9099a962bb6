//! Echo and HTTP over the readiness loop: one socket per connection, its lifecycle
//! ([`StreamConn`]) deciding everything; this file only moves bytes and translates.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Instant;

use ringpoll_proto::lifecycle::stream::{Action, Env, StreamConn};
use ringpoll_proto::lifecycle::wheel::{Tick, Wheel};
use ringpoll_proto::{CloseReason, Protocol};
use ringpoll_sys::poller::{is_fd_out_of_range, Event, Interest, Mode, Poller};
use ringpoll_sys::slab::{Key, Slab};
use ringpoll_sys::socket;
use tracing::{debug, warn};

use super::core::{split, token, Core, Handler, Kind};

struct Conn<Pr> {
    stream: TcpStream,
    life: StreamConn<Pr>,
    /// Index of its listener in the configuration.
    listener: usize,
    /// The wheel tick this connection is armed for.
    armed: Option<Tick>,
    /// Edge mode: the last read found the socket empty.
    drained: bool,
    /// The peer's FIN is known to be queued (RDHUP/HUP seen, maybe while paused): a short read
    /// is then not the end, read on to the EOF.
    hup: bool,
}

pub(crate) struct Streams<Pr> {
    kind: Kind,
    conns: Slab<Conn<Pr>>,
    wheel: Wheel<Key>,
    due: Vec<(Key, Tick)>,
}

/// The lifecycle's environment for a connection of `listener`, from the loop's state.
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
        Self { kind, conns: Slab::new(), wheel: Wheel::new(now), due: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Bring a connection in line with its lifecycle after anything happened to it: flush,
    /// carry out its actions, re-arm the poller and the timer.
    fn settle<P: Poller>(&mut self, core: &mut Core<P>, key: Key) {
        loop {
            let Some(c) = self.conns.get_mut(key) else { return };
            if !c.life.output().is_empty() {
                flush(c, core);
            }
            let closed = loop {
                let env = env!(core, c.listener);
                match c.life.next_action(&env, &mut core.stats.conn) {
                    Action::Continue => break false,
                    Action::ShutdownWrite => match socket::shutdown_write(&c.stream) {
                        Ok(()) => c.life.on_shutdown_done(&env),
                        Err(e) => {
                            debug!("shutdown: {e}");
                            c.life.on_error();
                        }
                    },
                    Action::Close(_) => break true,
                }
            };
            if closed {
                if let Some(c) = self.conns.remove(key) {
                    core.stats.open_connections -= 1;
                    core.forget(c.stream);
                }
                return;
            }
            let interest = Interest { read: c.life.wants_read(), write: !c.life.output().is_empty() };
            let tok = token(self.kind, key, false);
            if let Err(e) = core.poller.rearm(c.stream.as_raw_fd(), tok, interest) {
                warn!("re-arming fd {}: {e}", c.stream.as_raw_fd());
                c.life.on_error();
                continue;
            }
            if interest.read && !c.drained {
                core.revisit_if_edge(tok);
            }
            let env = env!(core, c.listener);
            if let Some(at) = c.life.deadline(&env) {
                let tick = self.wheel.tick_of(at);
                if c.armed.is_none_or(|a| tick < a) {
                    c.armed = Some(self.wheel.insert(key, at));
                }
            }
            return;
        }
    }
}

/// Read up to the budget, feeding the lifecycle. When the peer's FIN is known to be queued, a
/// short read is not the end: read on to see the EOF now (edge mode would never report it
/// again).
fn read<Pr: Protocol, P: Poller>(c: &mut Conn<Pr>, core: &mut Core<P>) {
    for _ in 0..core.cfg.read_budget {
        if !c.life.wants_read() {
            return;
        }
        match socket::recv(&c.stream, &mut core.scratch) {
            Ok(None) => {
                c.drained = true;
                return;
            }
            Ok(Some(0)) => {
                c.drained = true;
                let env = env!(core, c.listener);
                c.life.on_eof(&env, &mut core.stats.conn);
                return;
            }
            Ok(Some(n)) => {
                let env = env!(core, c.listener);
                c.life.on_data(&core.scratch[..n], &env, &mut core.stats.conn);
                if n < core.scratch.len() && !c.hup {
                    // A short read means the socket is drained: no recv just to see EAGAIN.
                    c.drained = true;
                    return;
                }
            }
            Err(e) => {
                debug!("recv: {e}");
                c.life.on_error();
                return;
            }
        }
    }
}

/// Send until everything is out or the socket is full (a short send means full).
fn flush<Pr: Protocol, P: Poller>(c: &mut Conn<Pr>, core: &mut Core<P>) {
    while !c.life.output().is_empty() {
        let want = c.life.output().len();
        match socket::send(&c.stream, c.life.output()) {
            Ok(Some(n)) => {
                let env = env!(core, c.listener);
                c.life.on_written(n, &env, &mut core.stats.conn);
                if n < want {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                debug!("send: {e}");
                c.life.on_error();
                return;
            }
        }
    }
}

impl<P: Poller, Pr: Protocol> Handler<P> for Streams<Pr> {
    fn accept(&mut self, core: &mut Core<P>, stream: TcpStream, listener: usize) {
        if let Err(e) = socket::set_nodelay(&stream) {
            debug!("TCP_NODELAY on an accepted socket: {e}");
            core.stats.conn.count_close(CloseReason::Error);
            return core.close(stream);
        }
        let key = self.conns.vacant_key();
        if let Err(e) = core.poller.add(stream.as_raw_fd(), token(self.kind, key, false), Interest::READ) {
            if is_fd_out_of_range(&e) {
                core.stats.rejected_fd_setsize += 1;
                if core.log_limit.allow(core.clock.now()) {
                    warn!(
                        "{}: {e}; closing the connection ({} refused so far)",
                        P::NAME,
                        core.stats.rejected_fd_setsize
                    );
                }
            } else {
                warn!("registering an accepted socket: {e}");
            }
            core.stats.conn.count_close(CloseReason::Error);
            return core.close(stream);
        }
        let cfg = &core.cfg.listeners[listener].stream;
        let life = StreamConn::new(core.clock.now(), cfg);
        let inserted =
            self.conns.insert(Conn { stream, life, listener, armed: None, drained: P::MODE != Mode::Edge, hup: false });
        debug_assert_eq!(inserted, key);
        core.stats.open_connections += 1;
        // The head / idle deadline starts at the accept.
        self.settle(core, key);
        if P::MODE == Mode::Edge {
            // Data may already be queued before the registration saw an edge.
            core.revisit_if_edge(token(self.kind, key, false));
        }
    }

    fn event(&mut self, core: &mut Core<P>, ev: Event) {
        let key = split(ev.token).1;
        let Some(c) = self.conns.get_mut(key) else {
            return; // stale: the slot was closed or reused since the event was queued
        };
        if ev.error {
            match socket::take_error(&c.stream) {
                Ok(Some(e)) => debug!("fd {}: socket error: {e}", c.stream.as_raw_fd()),
                Ok(None) => debug!("fd {}: error event without SO_ERROR", c.stream.as_raw_fd()),
                Err(e) => debug!("fd {}: reading SO_ERROR: {e}", c.stream.as_raw_fd()),
            }
            c.life.on_error();
        } else {
            if ev.readable || ev.hup {
                c.drained = false;
            }
            c.hup |= ev.hup;
            if ev.readable || ev.hup {
                read(c, core);
            }
        }
        self.settle(core, key);
    }

    fn drain(&mut self, core: &mut Core<P>) {
        // Pick up what is already in receive buffers (requests sent before the signal), then
        // let each lifecycle's deadlines (now with the drain grace) decide.
        for key in self.conns.keys() {
            let ev =
                Event { token: token(self.kind, key, false), readable: true, writable: true, hup: false, error: false };
            self.event(core, ev);
            if let Some(c) = self.conns.get_mut(key) {
                let env = env!(core, c.listener);
                c.life.on_timer(&env, &mut core.stats.conn);
                self.settle(core, key);
            }
        }
    }

    fn timers(&mut self, core: &mut Core<P>) {
        self.wheel.expire(core.clock.now(), &mut self.due);
        let mut due = std::mem::take(&mut self.due);
        for (key, tick) in due.drain(..) {
            let Some(c) = self.conns.get_mut(key) else { continue };
            if c.armed != Some(tick) {
                continue; // an older entry: the connection was armed again, earlier
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

    fn close_all(&mut self, core: &mut Core<P>) {
        for key in self.conns.keys() {
            if let Some(c) = self.conns.get_mut(key) {
                c.life.abort(CloseReason::Shutdown);
            }
            self.settle(core, key);
        }
    }
}
