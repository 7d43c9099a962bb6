//! The io_uring worker: a completion loop, sibling of the readiness loop.
//!
//! Readiness says "you may read now" and the worker then reads into its scratch buffer;
//! completions say "this read happened, here are the bytes". So instead of registering
//! interest, this loop keeps requests in flight in the kernel:
//! - one multishot accept per listening socket;
//! - one multishot receive per connection that draws from the worker's provided-buffer ring
//!   (an idle connection holds no receive buffer; buffers go back to the ring as soon as the
//!   lifecycle has consumed them);
//! - at most one send per connection (per proxy socket), whose buffer the request owns until
//!   its completion while new output collects in a second buffer.
//!
//! What to do with a connection is its lifecycle's decision (`ringpoll_proto::lifecycle`), as
//! on the readiness backends; the handlers here translate it into ring operations. Each
//! iteration is one `io_uring_enter`: submit everything queued, wait for completions or the
//! next deadline, handle the completions as a batch and queue the sends they produced.
//! Requests and their buffers live in the ring's op table (`ringpoll_sys::uring`), keyed by
//! user_data; all `unsafe` is there.

mod proxy;
mod stream;

use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringpoll_proto::relay::Side;
use ringpoll_proto::{echo::Echo, http::Http1, OutBuf};
use ringpoll_sys::slab::Key;
use ringpoll_sys::uring::{
    is_canceled, set_nodelay_inherited, Completion, OpId, Ring, RingConfig, SendBuf, SetupError,
};
use tracing::{debug, warn};

use crate::clock::Clock;
use crate::config::{Config, Mode};
use crate::ctx::{BackendError, ListenSocket, WorkerCtx};
use crate::stats::Counters;
use crate::{CloseReason, RateLimit, ServeError};

/// After the shutdown deadline closed everything, how long cancelled requests may take.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of the completions an enter waits to gather.
const MAX_BATCH: u32 = 32;
/// Completion queue entries per submission queue entry: multishot requests (one receive per
/// connection) post many completions per submission.
const CQ_PER_SQ: u32 = 4;
/// Longest sleep with nothing scheduled (the waker ends it at once on shutdown).
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// Which stream handler a request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Echo,
    Http,
}

/// What a request is for: the tag kept with it in the ring's op table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// The multishot accept on listening socket `n`.
    Accept(usize),
    /// The poll on the wake-up eventfd (shutdown).
    Waker,
    /// A connection's multishot receive.
    Recv(Kind, Key),
    /// A connection's send (the request owns the buffer).
    Send(Kind, Key),
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
    pub cfg: Arc<Config>,
    pub stats: Counters,
    pub clock: Clock,
    /// Shutdown has started.
    pub draining: bool,
}

/// Per-connection logic plugged into the completion loop.
pub(crate) trait Handler {
    /// A new connection accepted on listener `listener` of the configuration.
    fn accept(&mut self, core: &mut Core, stream: TcpStream, listener: usize);
    /// A completion for one of the handler's requests.
    fn complete(&mut self, core: &mut Core, c: Completion<Op>);
    /// Every completion of this iteration was handled: queue the sends they produced.
    fn end_of_batch(&mut self, core: &mut Core);
    /// Live connections, including those waiting for their requests to end.
    fn live(&self) -> usize;
    /// Shutdown started: let the lifecycles decide with the drain in force.
    fn drain(&mut self, core: &mut Core);
    /// Run the deadlines that are due.
    fn timers(&mut self, core: &mut Core);
    /// When the next deadline is due.
    fn next_deadline(&self) -> Option<Instant>;
    /// The shutdown deadline passed: close everything now.
    fn close_all(&mut self, core: &mut Core);
    /// Once per loop iteration: publish what the handler counts beside `Core::stats`.
    fn publish(&mut self, _core: &mut Core) {}
}

/// The three handlers of a worker.
struct Mux {
    echo: stream::Streams<Echo>,
    http: stream::Streams<Http1>,
    proxy: proxy::Proxies,
}

impl Mux {
    fn each(&mut self, mut f: impl FnMut(&mut dyn Handler)) {
        f(&mut self.echo);
        f(&mut self.http);
        f(&mut self.proxy);
    }

    fn live(&self) -> usize {
        self.echo.live() + self.http.live() + self.proxy.live()
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.echo.next_deadline(), self.http.next_deadline(), self.proxy.next_deadline()].into_iter().flatten().min()
    }

    fn accept(&mut self, core: &mut Core, s: TcpStream, listener: usize) {
        match core.cfg.listeners[listener].mode {
            Mode::Echo => self.echo.accept(core, s, listener),
            Mode::Http => self.http.accept(core, s, listener),
            Mode::Proxy => self.proxy.accept(core, s, listener),
        }
    }

    fn complete(&mut self, core: &mut Core, c: Completion<Op>) {
        match c.op {
            Op::Recv(Kind::Echo, _) | Op::Send(Kind::Echo, _) => self.echo.complete(core, c),
            Op::Recv(Kind::Http, _) | Op::Send(Kind::Http, _) => self.http.complete(core, c),
            Op::Connect(_) | Op::RelayRecv(..) | Op::RelaySend(..) => self.proxy.complete(core, c),
            Op::Accept(_) | Op::Waker => {}
        }
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

/// Run one io_uring worker until shutdown completes.
pub(crate) fn run(mut ctx: WorkerCtx) -> Result<Counters, BackendError> {
    let cfg = ctx.cfg.clone();
    let ring = Ring::new(ring_config(&cfg)).map_err(setup_error)?;
    debug!("worker {}: {}", ctx.index, ring.describe());
    for s in &ctx.sockets {
        if let Err(e) = set_nodelay_inherited(&s.socket) {
            warn!("TCP_NODELAY on a listener (inherited by accepted sockets): {e}");
        }
    }
    let syscalls_before = ringpoll_sys::syscalls();
    let now = Instant::now();
    let mut core = Core { ring, cfg: cfg.clone(), stats: Counters::default(), clock: Clock::new(), draining: false };
    let mut mux = Mux {
        echo: stream::Streams::new(Kind::Echo, now),
        http: stream::Streams::new(Kind::Http, now),
        proxy: proxy::Proxies::new(&ctx, now),
    };
    let waker = ctx.waker.clone();
    let shutdown = ctx.shutdown.clone();
    let mut acceptor = Acceptor {
        sockets: Vec::new(),
        resume_at: None,
        log_limit: RateLimit::new(Duration::from_secs(1)),
        parked: VecDeque::new(),
    };
    for (n, s) in ctx.sockets.iter().enumerate() {
        let op = core.ring.accept_multi(&s.socket, Op::Accept(n));
        acceptor.sockets.push(Accepting { socket: None, listener: s.listener, op: Some(op), cancelling: false });
    }
    let mut waker_op = Some(core.ring.poll_readable(&*waker, Op::Waker));
    // Submit now so that the accepts are in the kernel before `listening on` is printed.
    core.ring.enter(Duration::ZERO, 1).map_err(|e| io::Error::new(e.kind(), format!("io_uring first submit: {e}")))?;
    ctx.ready();
    for (a, ListenSocket { socket, .. }) in acceptor.sockets.iter_mut().zip(std::mem::take(&mut ctx.sockets)) {
        a.socket = Some(socket);
    }

    let mut deadline: Option<Instant> = None;
    let mut reap_until: Option<Instant> = None;
    // Completions to gather per enter: half of what the last iteration handled, at most
    // MAX_BATCH. A busy worker then handles its completions in large batches (the system
    // call and the wake-up are paid per batch), waiting at most the ring's short batch wait
    // for company; a worker with one active connection (however many idle ones) never waits
    // for completions that are not coming.
    let mut batch = 1u32;
    loop {
        let now = core.clock.now();
        let wake_at = [mux.next_deadline(), acceptor.resume_at, deadline, reap_until].into_iter().flatten().min();
        let wait = wake_at.map_or(IDLE_WAIT, |t| t.saturating_duration_since(now));
        core.ring.enter(wait, batch).map_err(|e| io::Error::new(e.kind(), format!("io_uring enter: {e}")))?;
        core.clock.update();
        core.stats.wakeups += 1;

        let mut handled = 0u32;
        while let Some(c) = core.ring.next_completion() {
            handled += 1;
            match c.op {
                Op::Accept(n) => acceptor.complete(&mut core, &mut mux, n, c),
                Op::Waker => {
                    waker_op = None;
                    if let Err(e) = waker.drain() {
                        warn!("reading the wake-up eventfd: {e}");
                    }
                    if shutdown.requested() {
                        if !core.draining {
                            core.draining = true;
                            deadline = Some(core.clock.now() + cfg.shutdown_timeout);
                            acceptor.stop(&mut core, &mut mux);
                            mux.each(|h| h.drain(&mut core));
                        }
                    } else {
                        waker_op = Some(core.ring.poll_readable(&*waker, Op::Waker));
                    }
                }
                _ => mux.complete(&mut core, c),
            }
        }
        mux.each(|h| h.end_of_batch(&mut core));
        batch = (handled / 2).clamp(1, MAX_BATCH);

        let now = core.clock.now();
        acceptor.arm(&mut core, &mut mux);
        mux.each(|h| {
            h.timers(&mut core);
            h.end_of_batch(&mut core);
        });
        if core.draining {
            if mux.live() == 0 && core.ring.in_flight() == usize::from(waker_op.is_some()) {
                break;
            }
            if deadline.is_some_and(|d| now >= d) {
                deadline = None;
                if mux.live() > 0 {
                    warn!("shutdown deadline reached with {} connection(s) still busy: closing them", mux.live());
                    mux.each(|h| {
                        h.close_all(&mut core);
                        h.end_of_batch(&mut core);
                    });
                }
                reap_until = Some(now + REAP_TIMEOUT);
            }
            if reap_until.is_some_and(|t| now >= t) {
                warn!("{} io_uring request(s) did not finish after shutdown", core.ring.in_flight());
                break;
            }
        }
        mux.each(|h| h.publish(&mut core));
        core.stats.syscalls = ringpoll_sys::syscalls() - syscalls_before;
        core.stats.uring_zc_sends = core.ring.zero_copy_sends();
        ctx.counters.publish(&core.stats);
    }
    mux.each(|h| h.publish(&mut core));
    core.stats.syscalls = ringpoll_sys::syscalls() - syscalls_before;
    core.stats.uring_zc_sends = core.ring.zero_copy_sends();
    ctx.counters.publish(&core.stats);
    Ok(core.stats)
}

/// One listening socket and its multishot accept.
struct Accepting {
    socket: Option<std::net::TcpListener>,
    listener: usize,
    op: Option<OpId>,
    /// A cancel was queued for `op` (max_conns or shutdown).
    cancelling: bool,
}

/// The multishot accepts of the worker's listening sockets.
struct Acceptor {
    sockets: Vec<Accepting>,
    /// Paused after EMFILE/ENFILE until this instant.
    resume_at: Option<Instant>,
    log_limit: RateLimit,
    /// Connections the multishot accepts completed after the worker reached `max_conns` (one
    /// wake-up can accept a whole backlog before the cancel takes effect). They wait here, as
    /// they would have in the backlog, and are admitted in order as slots free up; the kernel
    /// backlog bounds how many there can be.
    parked: VecDeque<(TcpStream, usize)>,
}

impl Acceptor {
    /// Admit parked connections while there is room, then arm the accepts that are not armed,
    /// unless backing off, shut down or full.
    fn arm(&mut self, core: &mut Core, mux: &mut Mux) {
        while !core.draining && mux.live() < core.cfg.max_conns {
            let Some((stream, listener)) = self.parked.pop_front() else { break };
            core.stats.accepted += 1;
            mux.accept(core, stream, listener);
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
        if live >= core.cfg.max_conns {
            return;
        }
        for (n, a) in self.sockets.iter_mut().enumerate() {
            if a.op.is_none() {
                if let Some(s) = &a.socket {
                    a.op = Some(core.ring.accept_multi(s, Op::Accept(n)));
                    a.cancelling = false;
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
    fn stop(&mut self, core: &mut Core, mux: &mut Mux) {
        self.resume_at = None;
        for (stream, _) in self.parked.drain(..) {
            core.stats.accepted += 1;
            core.stats.conn.count_close(CloseReason::Shutdown);
            close(stream);
        }
        self.cancel_all(core);
        for a in &mut self.sockets {
            if a.op.is_none() {
                if let Some(s) = a.socket.take() {
                    close_draining(core, mux, s, a.listener);
                }
            }
        }
    }

    fn complete(&mut self, core: &mut Core, mux: &mut Mux, n: usize, c: Completion<Op>) {
        let Some(a) = self.sockets.get_mut(n) else { return };
        let listener = a.listener;
        if !c.more {
            a.op = None;
            if core.draining {
                if let Some(s) = a.socket.take() {
                    close_draining(core, mux, s, listener);
                }
            } else if !a.cancelling {
                core.stats.uring_rearms += 1;
            }
        }
        match c.result {
            Ok(_) => {
                if let Some(stream) = c.accepted {
                    if core.draining {
                        // Accepted just before the stop: serve it (its request may be on its way).
                        core.stats.accepted += 1;
                        mux.accept(core, stream, listener);
                    } else if mux.live() >= core.cfg.max_conns || !self.parked.is_empty() {
                        self.parked.push_back((stream, listener));
                    } else {
                        core.stats.accepted += 1;
                        mux.accept(core, stream, listener);
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
        if mux.live() >= core.cfg.max_conns && self.sockets.iter().any(|a| a.op.is_some() && !a.cancelling) {
            if self.log_limit.allow(core.clock.now()) {
                warn!("at --max-conns {} on this worker: not accepting until a connection closes", core.cfg.max_conns);
            }
            self.cancel_all(core);
        }
    }
}

/// Shutdown: take in what is already in the socket's accept queue (complete handshakes, maybe
/// with a request on its way, which closing the socket would reset), then close it.
fn close_draining(core: &mut Core, mux: &mut Mux, s: std::net::TcpListener, listener: usize) {
    let mut log = RateLimit::new(Duration::from_secs(1));
    while mux.live() < core.cfg.max_conns {
        match ringpoll_sys::socket::accept(&s) {
            Ok(Some(stream)) => {
                core.stats.accepted += 1;
                mux.accept(core, stream, listener);
            }
            Ok(None) => break,
            Err(e) => {
                if crate::accept_failed(&e, &mut core.stats, &mut log, core.clock.now()).is_some() {
                    break;
                }
            }
        }
    }
    close_listener(s);
}

fn close_listener(s: std::net::TcpListener) {
    // With --takeover the socket lives on in the new process: closing ours loses nothing.
    if let Err(e) = ringpoll_sys::socket::close(s) {
        debug!("closing a listener: {e}");
    }
}
