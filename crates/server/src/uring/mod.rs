//! The io_uring worker: a completion loop, sibling of the readiness loop in
//! [`crate::readiness`].
//!
//! Readiness says "you may read now" and the worker then reads into its scratch buffer;
//! completions say "this read happened, here are the bytes". So instead of registering
//! interest, this loop keeps requests in flight in the kernel:
//! - one multishot accept on the worker's listener;
//! - one multishot receive per connection that draws from the worker's provided-buffer ring
//!   (an idle connection holds no receive buffer; buffers go back to the ring as soon as the
//!   protocol has consumed them);
//! - at most one send per connection, whose buffer the request owns until its completion while
//!   new output collects in a second buffer.
//!
//! Each iteration is one `io_uring_enter`: submit everything queued, wait for a completion (a
//! batch of them on a busy worker, for at most a few microseconds) or the next timer (sweep,
//! accept back-off, shutdown deadline), then handle the completions as a batch and queue the
//! sends they produced. Requests and their buffers live in the ring's op
//! table (`ringpoll_sys::uring`), keyed by user_data; every raw pointer is handled there,
//! this module is safe code.

mod proxy;
mod stream;

use std::collections::VecDeque;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ringpoll_proto::relay::Side;
use ringpoll_proto::{echo::Echo, http::Http1};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::config::{Config, Mode};
use crate::stats::Counters;
use crate::worker::{BackendError, WorkerCtx};
use crate::{CloseReason, RateLimit, ServeError};
use ringpoll_proto::OutBuf;
use ringpoll_sys as sys;
use ringpoll_sys::slab::Key;
use ringpoll_sys::uring::{
    is_canceled, set_nodelay_inherited, Completion, OpId, Ring, RingConfig, SendBuf, SetupError,
};
use stream::Streams;

/// Timeouts (idle, linger, shutdown) are checked at this granularity.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// After the shutdown deadline closed everything, how long cancelled requests may take.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of the completions an enter waits to gather.
const MAX_BATCH: u32 = 32;
/// Completion queue entries per submission queue entry: multishot requests (one receive per
/// connection) post many completions per submission.
const CQ_PER_SQ: u32 = 4;

/// What a request is for: the tag kept with it in the ring's op table, whose key is the
/// request's user_data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// The multishot accept on the listener.
    Accept,
    /// The poll on the wake-up eventfd (shutdown).
    Waker,
    /// A connection's multishot receive.
    Recv(Key),
    /// A connection's send (the request owns the buffer).
    Send(Key),
    /// A proxy pair's connect to its upstream.
    Connect(Key),
    /// The multishot receive on one side of a proxy pair.
    RelayRecv(Key, Side),
    /// A send to one side of a proxy pair.
    RelaySend(Key, Side),
}

/// What the loop lends to a handler on every call.
pub(crate) struct Core {
    pub ring: Ring<Op>,
    pub cfg: Config,
    pub stats: Counters,
    pub clock: Clock,
    /// Shutdown has started: close connections as soon as they are idle.
    pub draining: bool,
}

/// Per-connection logic plugged into the completion loop.
pub(crate) trait Handler {
    /// A new connection was accepted.
    fn accept(&mut self, core: &mut Core, stream: TcpStream);
    /// A completion for one of the handler's requests.
    fn complete(&mut self, core: &mut Core, c: Completion<Op>);
    /// Every completion of this iteration was handled: queue the sends they produced.
    fn end_of_batch(&mut self, core: &mut Core);
    /// Live connections, including those waiting for their requests to end.
    fn live(&self) -> usize;
    /// Shutdown started: finish what is pending and close everything that is idle.
    fn drain(&mut self, core: &mut Core);
    /// Periodic: idle timeouts and lingering closes.
    fn sweep(&mut self, core: &mut Core);
    /// The shutdown deadline passed: close everything now.
    fn close_all(&mut self, core: &mut Core);
}

/// Run one io_uring worker until shutdown completes.
pub(crate) fn run(ctx: WorkerCtx) -> Result<Counters, BackendError> {
    match ctx.cfg.mode {
        Mode::Echo => run_with(ctx, Streams::<Echo>::new()),
        Mode::Http => run_with(ctx, Streams::<Http1>::new()),
        Mode::Proxy => run_with(ctx, proxy::Proxies::new()),
    }
}

fn ring_config(cfg: &Config) -> RingConfig {
    let sq = cfg.uring.sq_entries.clamp(1, 32768);
    RingConfig {
        sq_entries: sq,
        cq_entries: sq.next_power_of_two().saturating_mul(CQ_PER_SQ).min(65536),
        buf_count: cfg.uring.buf_count,
        buf_size: cfg.uring.buf_size,
        send_zc_min: cfg.uring.send_zc_min,
    }
}

/// Close a socket no request uses through the counted layer (dropping it would close it
/// uncounted).
fn close(stream: TcpStream) {
    if let Err(e) = ringpoll_sys::socket::close(stream) {
        debug!("close: {e}");
    }
}

/// An output buffer as the owned bytes of a ring send.
fn send_buf(buf: OutBuf) -> SendBuf {
    let (bytes, sent) = buf.into_parts();
    SendBuf::new(bytes, sent)
}

/// A send's bytes back from the ring, as they were given (advance them by the result).
fn out_buf(buf: SendBuf) -> OutBuf {
    let (bytes, sent) = buf.into_parts();
    OutBuf::from_parts(bytes, sent)
}

fn setup_error(e: SetupError) -> BackendError {
    match e {
        SetupError::Unavailable(msg) => BackendError::Serve(ServeError::UringUnavailable(msg)),
        SetupError::Invalid(msg) => BackendError::Serve(ServeError::Config(msg)),
        SetupError::Io(e) => BackendError::Io(io::Error::new(e.kind(), format!("setting up io_uring: {e}"))),
    }
}

fn run_with<H: Handler>(mut ctx: WorkerCtx, mut handler: H) -> Result<Counters, BackendError> {
    let cfg = ctx.cfg;
    let ring = Ring::new(ring_config(&cfg)).map_err(setup_error)?;
    debug!("worker {}: {}", ctx.index, ring.describe());
    if let Err(e) = set_nodelay_inherited(&ctx.listener) {
        warn!("TCP_NODELAY on the listener (inherited by accepted sockets): {e}");
    }
    let syscalls_before = sys::syscalls();
    let mut core = Core { ring, cfg, stats: Counters::default(), clock: Clock::new(), draining: false };
    let waker = ctx.waker.clone();
    let shutdown = ctx.shutdown.clone();
    let mut acceptor = Acceptor {
        op: Some(core.ring.accept_multi(&ctx.listener, Op::Accept)),
        listener: None,
        cancelling: false,
        resume_at: None,
        log_limit: RateLimit::new(Duration::from_secs(1)),
        parked: VecDeque::new(),
    };
    let mut waker_op = Some(core.ring.poll_readable(&*waker, Op::Waker));
    // Submit now so that the accept is in the kernel before `listening on` is printed.
    core.ring.enter(Duration::ZERO, 1).map_err(|e| io::Error::new(e.kind(), format!("io_uring first submit: {e}")))?;
    ctx.ready();
    acceptor.listener = Some(ctx.listener);

    let mut deadline: Option<Instant> = None;
    let mut reap_until: Option<Instant> = None;
    let mut next_sweep = core.clock.now() + SWEEP_EVERY;
    // Completions to gather per enter (beyond those of the sends just submitted): a quarter
    // of the live connections, at most MAX_BATCH. A busy worker then handles its requests in
    // a few large batches instead of waking up for each (the system call and the wake-up are
    // paid per batch). A request that finds the worker short of a batch waits at most the
    // ring's BATCH_WAIT (25 us) for company; below 8 connections nothing ever waits.
    let mut batch = 1u32;
    loop {
        let now = core.clock.now();
        let wake_at = [Some(next_sweep), acceptor.resume_at, deadline, reap_until].into_iter().flatten().min();
        let wait = wake_at.map_or(SWEEP_EVERY, |t| t.saturating_duration_since(now));
        core.ring.enter(wait, batch).map_err(|e| io::Error::new(e.kind(), format!("io_uring enter: {e}")))?;
        core.clock.update();
        core.stats.wakeups += 1;

        while let Some(c) = core.ring.next_completion() {
            match c.op {
                Op::Accept => acceptor.complete(&mut core, &mut handler, c),
                Op::Waker => {
                    waker_op = None;
                    if let Err(e) = waker.drain() {
                        warn!("reading the wake-up eventfd: {e}");
                    }
                    if shutdown.requested() {
                        if !core.draining {
                            core.draining = true;
                            deadline = Some(core.clock.now() + cfg.shutdown_timeout);
                            acceptor.stop(&mut core);
                            handler.drain(&mut core);
                        }
                    } else {
                        waker_op = Some(core.ring.poll_readable(&*waker, Op::Waker));
                    }
                }
                Op::Recv(_) | Op::Send(_) | Op::Connect(_) | Op::RelayRecv(..) | Op::RelaySend(..) => {
                    handler.complete(&mut core, c);
                }
            }
        }
        handler.end_of_batch(&mut core);
        batch = (handler.live() / 4).clamp(1, MAX_BATCH as usize) as u32;

        let now = core.clock.now();
        acceptor.arm(&mut core, &mut handler);
        if now >= next_sweep {
            next_sweep = now + SWEEP_EVERY;
            handler.sweep(&mut core);
            handler.end_of_batch(&mut core);
        }
        if core.draining {
            if handler.live() == 0 && core.ring.in_flight() == usize::from(waker_op.is_some()) {
                break;
            }
            if deadline.is_some_and(|d| now >= d) {
                deadline = None;
                if handler.live() > 0 {
                    warn!("shutdown deadline reached with {} connection(s) still busy: closing them", handler.live());
                    handler.close_all(&mut core);
                }
                reap_until = Some(now + REAP_TIMEOUT);
            }
            if reap_until.is_some_and(|t| now >= t) {
                warn!("{} io_uring request(s) did not finish after shutdown", core.ring.in_flight());
                break;
            }
        }
        core.stats.syscalls = sys::syscalls() - syscalls_before;
        core.stats.uring_zc_sends = core.ring.zero_copy_sends();
        ctx.counters.publish(&core.stats);
    }
    core.stats.syscalls = sys::syscalls() - syscalls_before;
    core.stats.uring_zc_sends = core.ring.zero_copy_sends();
    ctx.counters.publish(&core.stats);
    Ok(core.stats)
}

/// The multishot accept and its listener.
struct Acceptor {
    listener: Option<TcpListener>,
    op: Option<OpId>,
    /// A cancel was queued for `op` (max_conns or shutdown).
    cancelling: bool,
    /// Paused after EMFILE/ENFILE until this instant.
    resume_at: Option<Instant>,
    log_limit: RateLimit,
    /// Connections the multishot accept completed after the worker reached `max_conns` (one
    /// wake-up can accept a whole backlog before the cancel takes effect). They wait here, as
    /// they would have in the backlog, and are admitted in order as slots free up; the kernel
    /// backlog bounds how many there can be.
    parked: VecDeque<TcpStream>,
}

impl Acceptor {
    /// Admit parked connections while there is room, then arm the accept unless it is armed,
    /// backing off, shut down or the worker is full.
    fn arm<H: Handler>(&mut self, core: &mut Core, handler: &mut H) {
        while !core.draining && handler.live() < core.cfg.max_conns {
            let Some(stream) = self.parked.pop_front() else { break };
            core.stats.accepted += 1;
            handler.accept(core, stream);
        }
        let live = handler.live() + self.parked.len();
        if core.draining || self.op.is_some() {
            return;
        }
        let Some(listener) = &self.listener else { return };
        if let Some(t) = self.resume_at {
            if core.clock.now() < t {
                return;
            }
            self.resume_at = None;
        }
        if live >= core.cfg.max_conns {
            return;
        }
        self.op = Some(core.ring.accept_multi(listener, Op::Accept));
        self.cancelling = false;
    }

    fn cancel(&mut self, core: &mut Core) {
        if let Some(id) = self.op {
            if !self.cancelling {
                core.ring.cancel(id);
                self.cancelling = true;
            }
        }
    }

    /// Shutdown: stop accepting; the listener closes once the accept has ended.
    fn stop(&mut self, core: &mut Core) {
        self.resume_at = None;
        for stream in self.parked.drain(..) {
            core.stats.accepted += 1;
            CloseReason::Shutdown.count(&mut core.stats);
            close(stream);
        }
        if self.op.is_some() {
            self.cancel(core);
        } else {
            self.listener = None;
        }
    }

    fn complete<H: Handler>(&mut self, core: &mut Core, handler: &mut H, c: Completion<Op>) {
        if !c.more {
            self.op = None;
            if core.draining {
                self.listener = None;
            } else if !self.cancelling {
                core.stats.uring_rearms += 1;
            }
        }
        match c.result {
            Ok(_) => {
                if let Some(stream) = c.accepted {
                    if core.draining {
                        core.stats.accepted += 1;
                        CloseReason::Shutdown.count(&mut core.stats);
                        close(stream);
                    } else if handler.live() >= core.cfg.max_conns || !self.parked.is_empty() {
                        self.parked.push_back(stream);
                    } else {
                        core.stats.accepted += 1;
                        handler.accept(core, stream);
                    }
                }
            }
            Err(e) if is_canceled(&e) => {}
            Err(e) => {
                if let Some(resume_at) =
                    crate::accept_failed(&e, &mut core.stats, &mut self.log_limit, core.clock.now())
                {
                    self.resume_at = Some(resume_at);
                    if c.more {
                        self.cancel(core);
                    }
                }
            }
        }
        if handler.live() >= core.cfg.max_conns && self.op.is_some() && !self.cancelling {
            if self.log_limit.allow(core.clock.now()) {
                warn!("at --max-conns {} on this worker: not accepting until a connection closes", core.cfg.max_conns);
            }
            self.cancel(core);
        }
    }
}
