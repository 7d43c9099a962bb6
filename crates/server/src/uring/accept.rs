//! The multishot accepts of a worker's listening sockets: armed while the worker is below
//! `--max-conns`, cancelled at it, paused after descriptor exhaustion, stopped on shutdown.
//!
//! With `--uring-fixed-files` a listener's connections go straight into the ring's fixed file
//! table (direct descriptors). A multishot accept that finds the table full has already taken
//! the connection off the accept queue and can only drop it, so the table is never let fill
//! up: the worker stops accepting while fewer slots are free than the completion queue has
//! entries (the accepts of one wake-up cannot complete more). Proxy listeners whose pairs need
//! the client's address keep regular descriptors (see [`wants_fixed`]).

use std::collections::VecDeque;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use ringpoll_sys::uring::{is_canceled, Completion, OpId};
use tracing::{debug, warn};

use super::core::Core;
use super::fd::Fd;
use super::mux::Mux;
use super::ops::Op;
use crate::config::{Config, Listener, Mode};
use crate::ctx::ListenSocket;
use crate::{CloseReason, RateLimit};

/// Whether a listener's connections can live in the fixed file table: not a proxy's whose
/// pairs need the client's address (PROXY protocol either way, hash balancing, the access
/// log), which only a regular descriptor can tell.
#[must_use]
pub(crate) fn wants_fixed(cfg: &Config, l: &Listener) -> bool {
    if l.mode != Mode::Proxy {
        return true;
    }
    let hash =
        l.group.and_then(|g| cfg.groups.get(g)).is_some_and(|g| g.strategy == ringpoll_proto::upstream::Strategy::Hash);
    !(l.pair.send_proxy.is_some() || l.pair.accept_proxy || hash || cfg.access_log.is_some())
}

/// One listening socket and its multishot accept.
struct Accepting {
    socket: Option<TcpListener>,
    listener: usize,
    /// Accept into the fixed file table.
    direct: bool,
    op: Option<OpId>,
    /// A cancel was queued for `op` (max_conns or shutdown).
    cancelling: bool,
}

/// The multishot accepts of the worker's listening sockets.
pub(crate) struct Acceptor {
    sockets: Vec<Accepting>,
    /// Paused after EMFILE/ENFILE until this instant.
    pub resume_at: Option<Instant>,
    /// Connections the worker may hold: `--max-conns`, or less when direct accepts need the
    /// rest of the fixed file table free.
    cap: usize,
    log_limit: RateLimit,
    /// Connections the multishot accepts completed after the worker reached `max_conns` (one
    /// wake-up can accept a whole backlog before the cancel takes effect). They wait here, as
    /// they would have in the backlog, and are admitted in order as slots free up; the kernel
    /// backlog bounds how many there can be.
    parked: VecDeque<(Fd, usize)>,
}

impl Acceptor {
    /// Arm a multishot accept on every socket (the worker's first submit sends them in).
    /// `fixed_cap`: how many connections direct accepts allow (`None`: none are direct).
    pub fn start(core: &mut Core, sockets: &[ListenSocket], fixed_cap: Option<usize>) -> Self {
        let mut a = Self {
            sockets: Vec::new(),
            resume_at: None,
            cap: core.cfg.max_conns.min(fixed_cap.unwrap_or(usize::MAX)),
            log_limit: RateLimit::new(Duration::from_secs(1)),
            parked: VecDeque::new(),
        };
        for s in sockets {
            let direct = fixed_cap.is_some() && wants_fixed(&core.cfg, &core.cfg.listeners[s.listener]);
            a.sockets.push(Accepting { socket: None, listener: s.listener, direct, op: None, cancelling: false });
        }
        for (n, s) in sockets.iter().enumerate() {
            a.arm_one(core, n, &s.socket);
        }
        a
    }

    /// Take ownership of the listening sockets once the accepts are in the kernel.
    pub fn own(&mut self, sockets: Vec<ListenSocket>) {
        for (a, s) in self.sockets.iter_mut().zip(sockets) {
            a.socket = Some(s.socket);
        }
    }

    fn arm_one(&mut self, core: &mut Core, n: usize, s: &TcpListener) {
        let a = &mut self.sockets[n];
        a.op = Some(if a.direct {
            core.ring.accept_multi_direct(s, Op::Accept(n))
        } else {
            core.ring.accept_multi(s, Op::Accept(n))
        });
        a.cancelling = false;
    }

    /// Admit parked connections while there is room, then arm the accepts that are not armed,
    /// unless backing off, shut down or full.
    pub fn arm(&mut self, core: &mut Core, mux: &mut Mux) {
        while !core.draining && mux.live() < self.cap {
            let Some((fd, listener)) = self.parked.pop_front() else { break };
            core.stats.accepted += 1;
            mux.accept(core, fd, listener);
        }
        let live = mux.live() + self.parked.len();
        if core.draining {
            return;
        }
        if let Some(t) = self.resume_at {
            if core.clock.now() < t {
                return;
            }
            self.resume_at = None;
        }
        if live >= self.cap {
            return;
        }
        for n in 0..self.sockets.len() {
            if self.sockets[n].op.is_none() {
                if let Some(s) = self.sockets[n].socket.take() {
                    self.arm_one(core, n, &s);
                    self.sockets[n].socket = Some(s);
                }
            }
        }
    }

    fn cancel_all(&mut self, core: &mut Core) {
        for a in &mut self.sockets {
            if let (Some(id), false) = (a.op, a.cancelling) {
                core.ring.cancel(id);
                a.cancelling = true;
            }
        }
    }

    /// Shutdown: stop accepting; each socket closes once its accept has ended.
    pub fn stop(&mut self, core: &mut Core, mux: &mut Mux) {
        self.resume_at = None;
        for (fd, _) in self.parked.drain(..) {
            core.stats.accepted += 1;
            core.stats.conn.count_close(CloseReason::Shutdown);
            fd.close_now(&mut core.ring);
        }
        self.cancel_all(core);
        for a in &mut self.sockets {
            if a.op.is_none() {
                // Not accepting (paused): what waits in its backlog is served, not reset.
                if let Some(s) = a.socket.take() {
                    sweep(core, mux, &s, a.listener);
                    close_listener(s);
                }
            }
        }
    }

    pub fn complete(&mut self, core: &mut Core, mux: &mut Mux, n: usize, c: Completion<Op>) {
        let Some(a) = self.sockets.get_mut(n) else { return };
        let listener = a.listener;
        if !c.more {
            a.op = None;
            if core.draining {
                if let Some(s) = a.socket.take() {
                    sweep(core, mux, &s, listener);
                    close_listener(s);
                }
            } else if !a.cancelling {
                core.stats.uring_rearms += 1;
            }
        }
        match c.result {
            Ok(_) => {
                let fd = c.accepted.map(Fd::Plain).or(c.accepted_fixed.map(Fd::Fixed));
                if let Some(fd) = fd {
                    if core.draining {
                        // Accepted just before the stop: serve it (its request may be on its way).
                        core.stats.accepted += 1;
                        mux.accept(core, fd, listener);
                    } else if mux.live() >= self.cap || !self.parked.is_empty() {
                        self.parked.push_back((fd, listener));
                    } else {
                        core.stats.accepted += 1;
                        mux.accept(core, fd, listener);
                    }
                }
            }
            Err(e) if is_canceled(&e) => {}
            Err(e) => {
                if let Some(resume_at) =
                    crate::accept_failed(&e, &mut core.stats, &mut self.log_limit, core.clock.now())
                {
                    self.resume_at = Some(resume_at);
                    self.cancel_all(core);
                }
            }
        }
        if mux.live() + self.parked.len() >= self.cap && self.sockets.iter().any(|a| a.op.is_some() && !a.cancelling) {
            if self.log_limit.allow(core.clock.now()) {
                if self.cap < core.cfg.max_conns {
                    warn!(
                        "at {} connections on this worker (its fixed file table is full; --max-conns {}): not \
                         accepting until a connection closes",
                        self.cap, core.cfg.max_conns
                    );
                } else {
                    warn!("at --max-conns {} on this worker: not accepting until a connection closes", self.cap);
                }
            }
            self.cancel_all(core);
        }
    }
}

/// Accept (and serve) what waits in the backlog of a listening socket whose accept just ended
/// for the stop. An io_uring accept waits for connections exclusively: a connection's wake-up
/// goes to one waiting accept only. During a hand-over (`--takeover`) the successor waits on
/// the same socket, and a wake-up taken by this process's accept just before its cancellation
/// would leave the connection queued with nobody woken for it until the next one arrives.
/// Bounded by the backlog: connections arriving from now on wake the successor.
fn sweep(core: &mut Core, mux: &mut Mux, s: &TcpListener, listener: usize) {
    loop {
        match ringpoll_sys::socket::accept(s) {
            Ok(Some(stream)) => {
                core.stats.accepted += 1;
                mux.accept(core, Fd::Plain(stream), listener);
            }
            Ok(None) => break,
            Err(e) if ringpoll_sys::socket::is_per_connection_accept_error(&e) => {}
            Err(e) => {
                debug!("accepting the backlog at the stop: {e}");
                break;
            }
        }
    }
}

fn close_listener(s: TcpListener) {
    // With --takeover the socket lives on in the new process: closing ours loses nothing.
    if let Err(e) = ringpoll_sys::socket::close(s) {
        debug!("closing a listener: {e}");
    }
}
