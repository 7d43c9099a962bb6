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
//!
//! The optional techniques (`--uring-*`, probed at start, see [`techniques`]) change only how
//! the same answers are carried out: connections in the fixed file table ([`fd::Fd`]), one
//! receive completion for several buffers (read with `Ring::chunks`), incremental buffers,
//! echo and relay straight out of the receive buffer, a polling thread for submissions, and
//! registered wait arguments.

mod accept;
mod core;
mod fd;
mod mux;
mod ops;
mod proxy;
mod sock;
mod stream;

use std::io;

use std::time::{Duration, Instant};

use ringpoll_sys::uring::{set_nodelay_inherited, RingConfig, SetupError, Techniques};
use tracing::{debug, warn};

use self::core::Core;
use crate::clock::Clock;
use crate::config::{Config, SQPOLL_IDLE};
use crate::ctx::{BackendError, WorkerCtx};
use crate::stats::Counters;
use crate::ServeError;
use accept::Acceptor;
use mux::Mux;
use ops::{Kind, Op, Ring};

/// After the shutdown deadline closed everything, how long cancelled requests may take.
const REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of the completions an enter waits to gather.
const MAX_BATCH: u32 = 32;
/// Longest sleep with nothing scheduled (the waker ends it at once on shutdown).
const IDLE_WAIT: Duration = Duration::from_secs(3600);

fn ring_config(cfg: &Config) -> RingConfig {
    let sq = cfg.uring.sq_entries.clamp(1, 32768);
    RingConfig {
        sq_entries: sq,
        cq_entries: cfg.uring.cq_entries(),
        buf_count: cfg.uring.buf_count,
        buf_size: cfg.uring.buf_size,
        send_zc_min: cfg.uring.send_zc_min,
        huge_pages: cfg.uring.huge_pages,
    }
}

/// The techniques the configuration asks for (the ring grants what the kernel has). The
/// fixed file table is registered only if a listener will use it.
fn techniques(cfg: &Config) -> Techniques {
    let u = &cfg.uring;
    let fixed = cfg.listeners.iter().any(|l| accept::wants_fixed(cfg, l));
    Techniques {
        fixed_files: if fixed { u32::try_from(u.fixed_slots(cfg.max_conns)).unwrap_or(u32::MAX) } else { 0 },
        bundle: u.bundle,
        buf_inc: u.buf_inc,
        sqpoll_idle: u.sqpoll.then_some(SQPOLL_IDLE),
        reg_wait: u.reg_wait,
    }
}

/// How many connections the worker may hold with direct accepts (`None`: no direct accepts):
/// one completion queue's worth of the fixed file table must stay free, since a multishot
/// accept that finds the table full drops the connection it has taken off the accept queue.
fn fixed_cap(ring: &Ring, cfg: &Config) -> Option<usize> {
    let slots = ring.techniques().fixed_files as usize;
    if slots == 0 {
        return None;
    }
    let cq = ring.cq_entries() as usize;
    let cap = slots.checked_sub(cq).filter(|&c| c > 0);
    match cap {
        None => tracing::info!(
            "io_uring: fixed files off: the table got {slots} slots (RLIMIT_NOFILE), not more than the {cq} that must \
             stay free for the accepts of one wake-up"
        ),
        Some(c) if c < cfg.max_conns => tracing::info!(
            "io_uring: fixed file table of {slots} slots (RLIMIT_NOFILE): at most {c} connections on this worker \
             (--max-conns {}), {cq} slots kept free for the accepts of one wake-up",
            cfg.max_conns
        ),
        Some(_) => {}
    }
    cap
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
    let ring = Ring::with_techniques(ring_config(&cfg), techniques(&cfg)).map_err(setup_error)?;
    debug!("worker {}: {}", ctx.index, ring.describe());
    for s in &ctx.sockets {
        if let Err(e) = set_nodelay_inherited(&s.socket) {
            warn!("TCP_NODELAY on a listener (inherited by accepted sockets): {e}");
        }
    }
    let syscalls_before = ringpoll_sys::syscalls();
    let now = Instant::now();
    let fixed_cap = fixed_cap(&ring, &cfg);
    let held_max = usize::from(cfg.uring.buf_count) / 2;
    let mut core = Core {
        ring,
        cfg: cfg.clone(),
        stats: Counters::default(),
        clock: Clock::new(),
        draining: false,
        held: 0,
        held_max,
    };
    let mut mux = Mux {
        echo: stream::Streams::new(Kind::Echo, now),
        http: stream::Streams::new(Kind::Http, now),
        proxy: proxy::Proxies::new(&ctx, now),
    };
    let waker = ctx.waker.clone();
    let shutdown = ctx.shutdown.clone();
    let mut acceptor = Acceptor::start(&mut core, &ctx.sockets, fixed_cap);
    let mut waker_op = Some(core.ring.poll_readable(&*waker, Op::Waker));
    // Submit now so that the accepts are in the kernel before `listening on` is printed.
    core.ring.enter(Duration::ZERO, 1).map_err(|e| io::Error::new(e.kind(), format!("io_uring first submit: {e}")))?;
    ctx.ready();
    acceptor.own(std::mem::take(&mut ctx.sockets));

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
