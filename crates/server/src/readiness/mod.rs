//! The one generic readiness event loop shared by select, poll and the epoll variants.
//!
//! `run::<P, H>` owns the listener, the wake-up eventfd and the poller; the handler `H` owns
//! the connections (a stream protocol, or proxy pairs). Dispatch is static: one
//! monomorphised loop per (backend, protocol) pair, no `dyn` on the hot path.

pub(crate) mod proxy;
pub(crate) mod stream;

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tracing::{debug, error, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::stats::Counters;
use crate::worker::WorkerCtx;
use crate::RateLimit;
use ringpoll_sys::poller::{Event, Interest, Mode, Poller, Token};
use ringpoll_sys::{self as sys, socket};

/// Reserved token: the worker's listener.
pub const LISTENER: Token = u64::MAX;
/// Reserved token: the worker's wake-up eventfd (shutdown).
pub const WAKER: Token = u64::MAX - 1;

/// Timeouts (idle, linger, connect, shutdown) are checked at this granularity.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// What the loop lends to a handler on every call.
pub(crate) struct Core<P> {
    pub poller: P,
    pub cfg: Config,
    pub stats: Counters,
    /// Per-worker receive buffer: connections hold no receive buffer of their own.
    pub scratch: Vec<u8>,
    pub clock: Clock,
    /// Shutdown has started: close connections as soon as they are idle.
    pub draining: bool,
    /// Edge mode: tokens left readable (budget exhausted) to revisit without an event.
    pub requeue: Vec<Token>,
    pub log_limit: RateLimit,
}

impl<P: Poller> Core<P> {
    /// In edge mode nothing re-reports a descriptor the loop left ready: remember it.
    pub fn revisit_if_edge(&mut self, token: Token) {
        if P::MODE == Mode::Edge {
            self.requeue.push(token);
        }
    }
}

/// Per-connection logic plugged into the loop.
pub(crate) trait Handler<P: Poller> {
    /// A new connection was accepted (already non-blocking).
    fn accept(&mut self, core: &mut Core<P>, stream: TcpStream);
    /// A readiness event (or an edge-mode revisit) for one of the handler's tokens.
    fn event(&mut self, core: &mut Core<P>, ev: Event);
    /// Live connections (proxy pairs count once).
    fn live(&self) -> usize;
    /// Shutdown started: finish what is pending and close everything that is idle.
    fn drain(&mut self, core: &mut Core<P>);
    /// Periodic: idle timeouts, lingering closes, connect timeouts.
    fn sweep(&mut self, core: &mut Core<P>);
    /// The shutdown deadline passed: close everything now.
    fn close_all(&mut self, core: &mut Core<P>);
}

struct Acceptor {
    listener: Option<TcpListener>,
    /// Paused after EMFILE/ENFILE until this instant.
    resume_at: Option<Instant>,
    /// Paused because the worker is at `max_conns`.
    full: bool,
}

/// Run one worker's readiness loop until shutdown completes.
pub(crate) fn run<P: Poller, H: Handler<P>>(mut ctx: WorkerCtx, mut handler: H) -> io::Result<Counters> {
    let cfg = ctx.cfg;
    let mut core = Core {
        poller: P::new().map_err(|e| io::Error::new(e.kind(), format!("creating the {} poller: {e}", P::NAME)))?,
        cfg,
        stats: Counters::default(),
        scratch: vec![0; cfg.read_buf.max(4096)],
        clock: Clock::new(),
        draining: false,
        requeue: Vec::new(),
        log_limit: RateLimit::new(Duration::from_secs(1)),
    };
    let syscalls_before = sys::syscalls();
    core.poller.add(ctx.listener.as_raw_fd(), LISTENER, Interest::READ)?;
    core.poller.add(ctx.waker.as_raw_fd(), WAKER, Interest::READ)?;
    ctx.ready();
    let mut acceptor = Acceptor { listener: Some(ctx.listener), resume_at: None, full: false };
    let mut events = Vec::with_capacity(1024);
    let mut revisit = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut next_sweep = core.clock.now() + SWEEP_EVERY;

    loop {
        let now = core.clock.now();
        let mut wake_at = next_sweep;
        if let Some(t) = acceptor.resume_at {
            wake_at = wake_at.min(t);
        }
        if let Some(t) = deadline {
            wake_at = wake_at.min(t);
        }
        let timeout = if core.requeue.is_empty() { wake_at.saturating_duration_since(now) } else { Duration::ZERO };
        core.poller
            .wait(&mut events, Some(timeout))
            .map_err(|e| io::Error::new(e.kind(), format!("{} wait: {e}", P::NAME)))?;
        core.clock.update();
        core.stats.wakeups += 1;

        for &ev in &events {
            match ev.token {
                LISTENER => accept_batch(&mut core, &mut acceptor, &mut handler),
                WAKER => {
                    if let Err(e) = ctx.waker.drain() {
                        warn!("reading the wake-up eventfd: {e}");
                    }
                    core.poller.rearm(ctx.waker.as_raw_fd(), WAKER, Interest::READ)?;
                    if ctx.shutdown.requested() && !core.draining {
                        begin_drain(&mut core, &mut acceptor, &mut handler);
                        deadline = Some(core.clock.now() + cfg.shutdown_timeout);
                    }
                }
                _ => handler.event(&mut core, ev),
            }
        }

        // Edge mode: revisit what was left readable. Swap buffers so revisits can requeue.
        if !core.requeue.is_empty() {
            std::mem::swap(&mut core.requeue, &mut revisit);
            for token in revisit.drain(..) {
                let ev = Event { token, readable: true, writable: true, hup: false, error: false };
                match token {
                    LISTENER => accept_batch(&mut core, &mut acceptor, &mut handler),
                    WAKER => {}
                    _ => handler.event(&mut core, ev),
                }
            }
        }

        let now = core.clock.now();
        if acceptor.resume_at.is_some_and(|t| now >= t) {
            acceptor.resume_at = None;
            accept_batch(&mut core, &mut acceptor, &mut handler);
        }
        if acceptor.full && handler.live() < cfg.max_conns {
            acceptor.full = false;
            accept_batch(&mut core, &mut acceptor, &mut handler);
        }
        if now >= next_sweep {
            next_sweep = now + SWEEP_EVERY;
            handler.sweep(&mut core);
        }
        if core.draining {
            if handler.live() == 0 {
                break;
            }
            if deadline.is_some_and(|d| now >= d) {
                warn!("shutdown deadline reached with {} connection(s) still busy: closing them", handler.live());
                handler.close_all(&mut core);
                break;
            }
        }
        core.stats.syscalls = sys::syscalls() - syscalls_before;
        ctx.counters.publish(&core.stats);
    }
    core.stats.syscalls = sys::syscalls() - syscalls_before;
    ctx.counters.publish(&core.stats);
    Ok(core.stats)
}

/// Close a socket through the counted layer (dropping it would close it uncounted).
pub(crate) fn close(stream: TcpStream) {
    if let Err(e) = socket::close(stream) {
        debug!("close: {e}");
    }
}

fn begin_drain<P: Poller, H: Handler<P>>(core: &mut Core<P>, acceptor: &mut Acceptor, handler: &mut H) {
    core.draining = true;
    if let Some(l) = acceptor.listener.take() {
        if let Err(e) = core.poller.delete(l.as_raw_fd()) {
            debug!("removing the listener from the poller: {e}");
        }
    }
    acceptor.resume_at = None;
    acceptor.full = false;
    handler.drain(core);
}

/// Accept up to the budget, then re-arm (or pause on exhaustion / max_conns).
fn accept_batch<P: Poller, H: Handler<P>>(core: &mut Core<P>, acceptor: &mut Acceptor, handler: &mut H) {
    let Some(listener) = acceptor.listener.as_ref() else { return };
    let fd = listener.as_raw_fd();
    if acceptor.resume_at.is_some() || acceptor.full {
        return;
    }
    for _ in 0..core.cfg.accept_budget {
        if handler.live() >= core.cfg.max_conns {
            acceptor.full = true;
            if core.log_limit.allow(core.clock.now()) {
                warn!("at --max-conns {} on this worker: not accepting until a connection closes", core.cfg.max_conns);
            }
            pause_listener(core, fd);
            return;
        }
        match socket::accept(listener) {
            Ok(Some(stream)) => {
                core.stats.accepted += 1;
                handler.accept(core, stream);
            }
            Ok(None) => {
                rearm_listener(core, fd);
                return;
            }
            Err(e) => {
                let Some(resume_at) = crate::accept_failed(&e, &mut core.stats, &mut core.log_limit, core.clock.now())
                else {
                    continue;
                };
                acceptor.resume_at = Some(resume_at);
                pause_listener(core, fd);
                return;
            }
        }
    }
    // Budget spent with connections possibly still queued: one-shot and level re-report,
    // edge needs a revisit.
    rearm_listener(core, fd);
    core.revisit_if_edge(LISTENER);
}

fn rearm_listener<P: Poller>(core: &mut Core<P>, fd: i32) {
    if let Err(e) = core.poller.rearm(fd, LISTENER, Interest::READ) {
        error!("re-arming the listener: {e}");
    }
}

fn pause_listener<P: Poller>(core: &mut Core<P>, fd: i32) {
    if let Err(e) = core.poller.rearm(fd, LISTENER, Interest::NONE) {
        error!("pausing the listener: {e}");
    }
}
