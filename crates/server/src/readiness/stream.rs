//! Echo and HTTP over the readiness loop: one socket per connection, one protocol object.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use ringpoll_proto::{Ctx, OutBuf, Protocol};
use tracing::{debug, warn};

use super::poller::{is_fd_out_of_range, Event, Interest, Mode, Poller};
use super::{Core, Handler};
use crate::slab::{Key, Slab};
use crate::sys::socket;
use crate::CloseReason;

/// After the last response of a connection we close, keep reading (and discarding) for at
/// most this long so that unread request bytes do not turn our FIN into a RST that destroys
/// the response in flight (nginx's lingering close).
pub(crate) const LINGER: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// The protocol asked to close: flush, then shut down the write side.
    Closing,
    /// Write side shut; discarding input until the peer's FIN or the deadline.
    Lingering {
        until: Instant,
    },
}

struct Conn<Pr> {
    stream: TcpStream,
    proto: Pr,
    out: OutBuf,
    phase: Phase,
    /// Reading is paused by the output high watermark.
    paused: bool,
    /// The peer has not sent FIN yet.
    read_open: bool,
    /// Edge mode: the last read found the socket empty.
    drained: bool,
    /// The peer's FIN is known to be queued (RDHUP/HUP seen, maybe while paused): a short
    /// read is then not the end, read on to the EOF.
    hup: bool,
    last_active: Instant,
}

enum Next {
    Rearm(Interest),
    Close(CloseReason),
}

pub(crate) struct Streams<Pr> {
    conns: Slab<Conn<Pr>>,
}

impl<Pr: Protocol> Streams<Pr> {
    pub fn new() -> Self {
        Self { conns: Slab::new() }
    }

    fn close<P: Poller>(&mut self, core: &mut Core<P>, key: Key, reason: CloseReason) {
        let Some(conn) = self.conns.remove(key) else { return };
        if let Err(e) = core.poller.delete(conn.stream.as_raw_fd()) {
            debug!("deregistering fd {}: {e}", conn.stream.as_raw_fd());
        }
        reason.count(&mut core.stats);
        // Dropping the stream closes the descriptor.
    }

    fn finish<P: Poller>(&mut self, core: &mut Core<P>, key: Key, next: Next) {
        match next {
            Next::Close(reason) => self.close(core, key, reason),
            Next::Rearm(interest) => {
                let Some(conn) = self.conns.get_mut(key) else { return };
                if core.draining && conn.is_idle() {
                    self.close(core, key, CloseReason::Normal);
                    return;
                }
                if let Err(e) = core.poller.rearm(conn.stream.as_raw_fd(), key.to_u64(), interest) {
                    warn!("re-arming fd {}: {e}", conn.stream.as_raw_fd());
                    self.close(core, key, CloseReason::Error);
                    return;
                }
                if interest.read && !conn.drained {
                    core.revisit_if_edge(key.to_u64());
                }
            }
        }
    }
}

impl<Pr: Protocol> Conn<Pr> {
    fn is_idle(&self) -> bool {
        self.phase == Phase::Open && self.out.is_empty() && self.proto.is_idle()
    }

    fn handle<P: Poller>(&mut self, core: &mut Core<P>, ev: Event) -> Next {
        if ev.error {
            match socket::take_error(&self.stream) {
                Ok(Some(e)) => debug!("fd {}: socket error: {e}", self.stream.as_raw_fd()),
                Ok(None) => debug!("fd {}: error event without SO_ERROR", self.stream.as_raw_fd()),
                Err(e) => debug!("fd {}: reading SO_ERROR: {e}", self.stream.as_raw_fd()),
            }
            return Next::Close(CloseReason::Error);
        }
        self.last_active = core.clock.now();
        if ev.readable || ev.hup {
            self.drained = false;
        }
        self.hup |= ev.hup;
        if let Phase::Lingering { .. } = self.phase {
            return self.discard(core);
        }

        if self.phase == Phase::Open && self.read_open && (ev.readable || ev.hup) {
            if let Err(reason) = self.read(core) {
                return Next::Close(reason);
            }
        }
        if !self.out.is_empty() {
            if let Err(reason) = self.flush(core) {
                return Next::Close(reason);
            }
        }
        let was_paused = self.paused;
        self.paused = !core.cfg.watermarks.may_read(self.out.len(), self.paused);
        if self.paused && !was_paused {
            core.stats.backpressure_pauses += 1;
        }

        if self.phase == Phase::Closing && self.out.is_empty() {
            if !self.read_open {
                return Next::Close(CloseReason::Normal);
            }
            if let Err(e) = socket::shutdown_write(&self.stream) {
                debug!("shutdown: {e}");
                return Next::Close(CloseReason::Error);
            }
            self.phase = Phase::Lingering { until: core.clock.now() + LINGER };
            return Next::Rearm(Interest::READ);
        }
        let interest =
            Interest { read: self.phase == Phase::Open && self.read_open && !self.paused, write: !self.out.is_empty() };
        if interest.is_none() {
            // Peer finished and nothing is left to send.
            return Next::Close(CloseReason::Normal);
        }
        Next::Rearm(interest)
    }

    /// Read up to the budget, feeding the protocol; stop early above the high watermark.
    /// When the peer's FIN is known to be queued, a short read is not the end: read on to see
    /// the EOF now (edge mode would never report it again).
    fn read<P: Poller>(&mut self, core: &mut Core<P>) -> Result<(), CloseReason> {
        let ctx = Ctx::new(core.clock.date());
        for _ in 0..core.cfg.read_budget {
            if !core.cfg.watermarks.may_read(self.out.len(), self.paused) {
                return Ok(());
            }
            match socket::recv(&self.stream, &mut core.scratch) {
                Ok(None) => {
                    self.drained = true;
                    return Ok(());
                }
                Ok(Some(0)) => {
                    self.read_open = false;
                    self.drained = true;
                    if self.proto.on_eof(self.out.writer(), &ctx).close {
                        self.phase = Phase::Closing;
                    }
                    return Ok(());
                }
                Ok(Some(n)) => {
                    core.stats.bytes_in += n as u64;
                    let p = self.proto.on_data(&core.scratch[..n], self.out.writer(), &ctx);
                    core.stats.requests += u64::from(p.requests);
                    if p.close {
                        self.phase = Phase::Closing;
                        return Ok(());
                    }
                    if n < core.scratch.len() && !self.hup {
                        // A short read means the socket is drained: no recv just to see EAGAIN.
                        self.drained = true;
                        return Ok(());
                    }
                }
                Err(e) => return Err(classify(&e)),
            }
        }
        Ok(())
    }

    /// Send until everything is out or the socket is full (a short send means full).
    fn flush<P: Poller>(&mut self, core: &mut Core<P>) -> Result<(), CloseReason> {
        while !self.out.is_empty() {
            let want = self.out.len();
            match socket::send(&self.stream, self.out.pending()) {
                Ok(Some(n)) => {
                    core.stats.bytes_out += n as u64;
                    self.out.advance(n);
                    if n < want {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(classify(&e)),
            }
        }
        Ok(())
    }

    /// Lingering close: read and drop until FIN, error, budget or nothing left.
    fn discard<P: Poller>(&mut self, core: &mut Core<P>) -> Next {
        for _ in 0..core.cfg.read_budget {
            match socket::recv(&self.stream, &mut core.scratch) {
                Ok(None) => {
                    self.drained = true;
                    return Next::Rearm(Interest::READ);
                }
                Ok(Some(0)) | Err(_) => return Next::Close(CloseReason::Normal),
                Ok(Some(_)) => {}
            }
        }
        Next::Rearm(Interest::READ)
    }
}

/// Errors on an established connection: all close it; the distinction is for the counters.
fn classify(e: &io::Error) -> CloseReason {
    debug!("connection error: {e}");
    CloseReason::Error
}

impl<P: Poller, Pr: Protocol> Handler<P> for Streams<Pr> {
    fn accept(&mut self, core: &mut Core<P>, stream: TcpStream) {
        if let Err(e) = socket::set_nodelay(&stream) {
            debug!("TCP_NODELAY on an accepted socket: {e}");
            core.stats.closed += 1;
            core.stats.closed_error += 1;
            return;
        }
        let key = self.conns.vacant_key();
        if let Err(e) = core.poller.add(stream.as_raw_fd(), key.to_u64(), Interest::READ) {
            core.stats.closed += 1;
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
                core.stats.closed_error += 1;
                warn!("registering an accepted socket: {e}");
            }
            return;
        }
        let inserted = self.conns.insert(Conn {
            stream,
            proto: Pr::new(&ringpoll_proto::Limits::NONE),
            out: OutBuf::new(),
            phase: Phase::Open,
            paused: false,
            read_open: true,
            drained: P::MODE != Mode::Edge,
            hup: false,
            last_active: core.clock.now(),
        });
        debug_assert_eq!(inserted, key);
        if P::MODE == Mode::Edge {
            // Data may already be queued before the registration saw an edge.
            core.revisit_if_edge(key.to_u64());
        }
    }

    fn event(&mut self, core: &mut Core<P>, ev: Event) {
        let key = Key::from_u64(ev.token);
        let Some(conn) = self.conns.get_mut(key) else {
            return; // stale: the slot was closed or reused since the event was queued
        };
        let next = conn.handle(core, ev);
        self.finish(core, key, next);
    }

    fn live(&self) -> usize {
        self.conns.len()
    }

    fn drain(&mut self, core: &mut Core<P>) {
        // Pick up what is already in receive buffers (in-flight requests), then close the
        // connections that are idle; the rest close as soon as they become idle.
        for key in self.conns.keys() {
            let ev = Event { token: key.to_u64(), readable: true, writable: true, hup: false, error: false };
            if let Some(conn) = self.conns.get_mut(key) {
                let next = conn.handle(core, ev);
                self.finish(core, key, next);
            }
        }
    }

    fn sweep(&mut self, core: &mut Core<P>) {
        let now = core.clock.now();
        let idle = core.cfg.idle_timeout;
        let mut expired = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            let linger = match c.phase {
                Phase::Lingering { until } => Some(until),
                _ => None,
            };
            let open = matches!(c.phase, Phase::Open | Phase::Closing);
            if let Some(reason) = crate::sweep_verdict(linger, open, c.last_active, now, idle) {
                expired.push((key, reason));
            }
        }
        for (key, reason) in expired {
            self.close(core, key, reason);
        }
    }

    fn close_all(&mut self, core: &mut Core<P>) {
        for key in self.conns.keys() {
            self.close(core, key, CloseReason::Shutdown);
        }
    }
}
