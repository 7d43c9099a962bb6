//! The one generic readiness event loop shared by select, poll and the epoll variants.
//!
//! `run::<P>` owns the listening sockets, the wake-up eventfd and the poller; three handlers
//! own the connections: echo and HTTP streams ([`stream::Streams`]) and proxy pairs
//! ([`proxy::Proxies`]). What happens to a connection is decided by its lifecycle object in
//! `ringpoll-proto`; the handlers translate its answers into system calls. Dispatch is static:
//! one monomorphised loop per backend, a two-bit tag in each token picks the handler, no `dyn`
//! on the hot path. Deadlines live in each handler's timer wheel; the loop sleeps until the
//! earliest one (or forever when there is none).

mod core;
pub(crate) mod proxy;
pub(crate) mod stream;

use std::io;
use std::time::{Duration, Instant};

use ringpoll_proto::{echo::Echo, http::Http1};
use ringpoll_sys::poller::{Event, Interest, Poller, Token};
use ringpoll_sys::socket;
use tracing::{debug, error, warn};

use self::core::{split, Core, Handler, Kind, LISTENER0, MAX_SOCKETS, WAKER};
use crate::clock::Clock;
use crate::config::Mode as ServeMode;
use crate::ctx::{ListenSocket, WorkerCtx};
use crate::stats::Counters;
use crate::RateLimit;

/// The three handlers of a worker.
struct Mux {
    echo: stream::Streams<Echo>,
    http: stream::Streams<Http1>,
    proxy: proxy::Proxies,
}

impl Mux {
    fn each<P: Poller>(&mut self, mut f: impl FnMut(&mut dyn Handler<P>)) {
        f(&mut self.echo);
        f(&mut self.http);
        f(&mut self.proxy);
    }

    fn live(&self) -> usize {
        self.echo.len() + self.http.len() + self.proxy.len()
    }

    fn next_deadline<P: Poller>(&self) -> Option<Instant> {
        [
            Handler::<P>::next_deadline(&self.echo),
            Handler::<P>::next_deadline(&self.http),
            Handler::<P>::next_deadline(&self.proxy),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn event<P: Poller>(&mut self, core: &mut Core<P>, ev: Event) {
        match split(ev.token).0 {
            Some(Kind::Echo) => self.echo.event(core, ev),
            Some(Kind::Http) => self.http.event(core, ev),
            Some(Kind::Proxy) => self.proxy.event(core, ev),
            None => {}
        }
    }

    fn accept<P: Poller>(&mut self, core: &mut Core<P>, s: std::net::TcpStream, listener: usize) {
        match core.cfg.listeners[listener].mode {
            ServeMode::Echo => self.echo.accept(core, s, listener),
            ServeMode::Http => self.http.accept(core, s, listener),
            ServeMode::Proxy => self.proxy.accept(core, s, listener),
        }
    }
}

struct Acceptor {
    sockets: Vec<Option<ListenSocket>>,
    /// Paused after EMFILE/ENFILE until this instant.
    resume_at: Option<Instant>,
    /// Paused because the worker is at `max_conns`.
    full: bool,
}

/// Run one worker's readiness loop until shutdown completes.
pub(crate) fn run<P: Poller>(mut ctx: WorkerCtx) -> io::Result<Counters> {
    let cfg = ctx.cfg.clone();
    let now = Instant::now();
    let mut core = Core {
        poller: P::new().map_err(|e| io::Error::new(e.kind(), format!("creating the {} poller: {e}", P::NAME)))?,
        cfg: cfg.clone(),
        stats: Counters::default(),
        scratch: vec![0; cfg.read_buf.max(4096)],
        clock: Clock::new(),
        draining: false,
        requeue: Vec::new(),
        log_limit: RateLimit::new(Duration::from_secs(1)),
    };
    let mut mux = Mux {
        echo: stream::Streams::new(Kind::Echo, now),
        http: stream::Streams::new(Kind::Http, now),
        proxy: proxy::Proxies::new(&ctx, now),
    };
    let syscalls_before = ringpoll_sys::syscalls();
    if ctx.sockets.len() as u64 > MAX_SOCKETS {
        return Err(io::Error::other("too many listening sockets for one worker"));
    }
    for (j, s) in ctx.sockets.iter().enumerate() {
        use std::os::fd::AsRawFd;
        core.poller.add(s.socket.as_raw_fd(), LISTENER0 - j as u64, Interest::READ)?;
    }
    {
        use std::os::fd::AsRawFd;
        core.poller.add(ctx.waker.as_raw_fd(), WAKER, Interest::READ)?;
    }
    ctx.ready();
    let mut acceptor = Acceptor {
        sockets: std::mem::take(&mut ctx.sockets).into_iter().map(Some).collect(),
        resume_at: None,
        full: false,
    };
    let mut events = Vec::with_capacity(1024);
    let mut revisit = Vec::new();
    let mut deadline: Option<Instant> = None;

    loop {
        let now = core.clock.now();
        let wake_at = [mux.next_deadline::<P>(), acceptor.resume_at, deadline].into_iter().flatten().min();
        let timeout = if core.requeue.is_empty() {
            wake_at.map(|t| t.saturating_duration_since(now))
        } else {
            Some(Duration::ZERO)
        };
        core.poller
            .wait(&mut events, timeout)
            .map_err(|e| io::Error::new(e.kind(), format!("{} wait: {e}", P::NAME)))?;
        core.clock.update();
        core.stats.wakeups += 1;

        for &ev in &events {
            match ev.token {
                WAKER => {
                    use std::os::fd::AsRawFd;
                    if let Err(e) = ctx.waker.drain() {
                        warn!("reading the wake-up eventfd: {e}");
                    }
                    core.poller.rearm(ctx.waker.as_raw_fd(), WAKER, Interest::READ)?;
                    if ctx.shutdown.requested() && !core.draining {
                        begin_drain(&mut core, &mut acceptor, &mut mux);
                        deadline = Some(core.clock.now() + cfg.shutdown_timeout);
                    }
                }
                t if t > LISTENER0 - MAX_SOCKETS => {
                    accept_batch(&mut core, &mut acceptor, &mut mux, (LISTENER0 - t) as usize)
                }
                _ => mux.event(&mut core, ev),
            }
        }

        // Edge mode: revisit what was left readable. Swap buffers so revisits can requeue.
        if !core.requeue.is_empty() {
            std::mem::swap(&mut core.requeue, &mut revisit);
            for token in revisit.drain(..) {
                let ev = Event { token, readable: true, writable: true, hup: false, error: false };
                match token {
                    WAKER => {}
                    t if t > LISTENER0 - MAX_SOCKETS => {
                        accept_batch(&mut core, &mut acceptor, &mut mux, (LISTENER0 - t) as usize);
                    }
                    _ => mux.event(&mut core, ev),
                }
            }
        }

        let now = core.clock.now();
        if acceptor.resume_at.is_some_and(|t| now >= t) {
            acceptor.resume_at = None;
            resume_all(&mut core, &mut acceptor, &mut mux);
        }
        if acceptor.full && mux.live() < cfg.max_conns {
            acceptor.full = false;
            resume_all(&mut core, &mut acceptor, &mut mux);
        }
        mux.each::<P>(|h| h.timers(&mut core));
        if core.draining {
            if mux.live() == 0 {
                break;
            }
            if deadline.is_some_and(|d| now >= d) {
                warn!("shutdown deadline reached with {} connection(s) still busy: closing them", mux.live());
                mux.each::<P>(|h| h.close_all(&mut core));
                break;
            }
        }
        mux.each::<P>(|h| h.publish(&mut core));
        core.stats.syscalls = ringpoll_sys::syscalls() - syscalls_before;
        ctx.counters.publish(&core.stats);
    }
    mux.each::<P>(|h| h.publish(&mut core));
    core.stats.syscalls = ringpoll_sys::syscalls() - syscalls_before;
    ctx.counters.publish(&core.stats);
    Ok(core.stats)
}

fn begin_drain<P: Poller>(core: &mut Core<P>, acceptor: &mut Acceptor, mux: &mut Mux) {
    core.draining = true;
    for slot in &mut acceptor.sockets {
        if let Some(s) = slot.take() {
            use std::os::fd::AsRawFd;
            if let Err(e) = core.poller.delete(s.socket.as_raw_fd()) {
                debug!("removing a listener from the poller: {e}");
            }
            accept_queued(core, mux, &s);
            // With --takeover the socket lives on in the new process: closing ours loses
            // nothing in its accept queue.
            if let Err(e) = socket::close(s.socket) {
                debug!("closing a listener: {e}");
            }
        }
    }
    acceptor.resume_at = None;
    acceptor.full = false;
    mux.each::<P>(|h| h.drain(core));
}

/// Before a listening socket closes: take in the connections already in its accept queue.
/// Their handshake is complete and their request may be on its way; closing the socket would
/// reset them. (Bounded by the backlog and `max_conns`.)
fn accept_queued<P: Poller>(core: &mut Core<P>, mux: &mut Mux, s: &ListenSocket) {
    while mux.live() < core.cfg.max_conns {
        match socket::accept(&s.socket) {
            Ok(Some(stream)) => {
                core.stats.accepted += 1;
                mux.accept(core, stream, s.listener);
            }
            Ok(None) => return,
            Err(e) => {
                if crate::accept_failed(&e, &mut core.stats, &mut core.log_limit, core.clock.now()).is_some() {
                    return;
                }
            }
        }
    }
}

fn resume_all<P: Poller>(core: &mut Core<P>, acceptor: &mut Acceptor, mux: &mut Mux) {
    for j in 0..acceptor.sockets.len() {
        accept_batch(core, acceptor, mux, j);
    }
}

/// Accept up to the budget from listening socket `j`, then re-arm it (or pause every socket
/// on exhaustion / max_conns).
fn accept_batch<P: Poller>(core: &mut Core<P>, acceptor: &mut Acceptor, mux: &mut Mux, j: usize) {
    use std::os::fd::AsRawFd;
    if acceptor.resume_at.is_some() || acceptor.full {
        return;
    }
    let Some(Some(ls)) = acceptor.sockets.get(j) else { return };
    let (fd, listener) = (ls.socket.as_raw_fd(), ls.listener);
    let token = LISTENER0 - j as u64;
    for _ in 0..core.cfg.accept_budget {
        if mux.live() >= core.cfg.max_conns {
            acceptor.full = true;
            if core.log_limit.allow(core.clock.now()) {
                warn!("at --max-conns {} on this worker: not accepting until a connection closes", core.cfg.max_conns);
            }
            pause_all(core, acceptor);
            return;
        }
        let Some(Some(ls)) = acceptor.sockets.get(j) else { return };
        match socket::accept(&ls.socket) {
            Ok(Some(stream)) => {
                core.stats.accepted += 1;
                mux.accept(core, stream, listener);
            }
            Ok(None) => {
                rearm(core, fd, token, Interest::READ);
                return;
            }
            Err(e) => {
                let Some(resume_at) = crate::accept_failed(&e, &mut core.stats, &mut core.log_limit, core.clock.now())
                else {
                    continue;
                };
                acceptor.resume_at = Some(resume_at);
                pause_all(core, acceptor);
                return;
            }
        }
    }
    // Budget spent with connections possibly still queued: one-shot and level re-report,
    // edge needs a revisit.
    rearm(core, fd, token, Interest::READ);
    core.revisit_if_edge(token);
}

fn pause_all<P: Poller>(core: &mut Core<P>, acceptor: &Acceptor) {
    use std::os::fd::AsRawFd;
    for (j, s) in acceptor.sockets.iter().enumerate() {
        if let Some(s) = s {
            rearm(core, s.socket.as_raw_fd(), LISTENER0 - j as u64, Interest::NONE);
        }
    }
}

fn rearm<P: Poller>(core: &mut Core<P>, fd: i32, token: Token, interest: Interest) {
    if let Err(e) = core.poller.rearm(fd, token, interest) {
        error!("re-arming a listener: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::core::token;
    use super::*;
    use ringpoll_sys::slab::Key;

    #[test]
    fn tokens_carry_kind_key_and_side() {
        let key = Key { index: (1 << 28) + 5, generation: u32::MAX };
        for kind in [Kind::Echo, Kind::Http, Kind::Proxy] {
            for side in [false, true] {
                let t = token(kind, key, side);
                assert_eq!(split(t), (Some(kind), key, side));
                assert!(t <= LISTENER0 - MAX_SOCKETS, "never mistaken for a listener or the waker");
            }
        }
        // Reserved tokens decode to no handler.
        assert_eq!(split(WAKER).0, None);
        assert_eq!(split(LISTENER0 - 7).0, None);
    }
}
