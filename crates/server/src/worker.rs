//! Starting, pinning and joining the per-core workers, and where their listening sockets come
//! from: bound by each worker in its own thread (SO_REUSEPORT, after checking that no other
//! process listens on the address), or taken over from the server this one replaces.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ringpoll_proto::upstream::HealthBoard;
use ringpoll_sys::eventfd::EventFd;
use ringpoll_sys::poller::epoll::{Epoll, EpollEt, EpollLt};
use ringpoll_sys::poller::poll::Poll;
use ringpoll_sys::poller::select::Select;
use ringpoll_sys::socket::{self, ListenerConfig};
use tracing::warn;

use crate::accesslog::{self, AccessLog};
use crate::config::{Backend, Config, Mode};
use crate::ctx::{BackendError, ListenSocket, Shutdown, WorkerCtx};
use crate::health::{self, CheckedGroup, Checker};
use crate::metrics;
use crate::stats::{Counters, SharedCounters, SharedUpstreams};
use crate::takeover::Inherited;

/// How long a server waits for another ringpoll's start-up on one of its ports (which takes
/// milliseconds) before it gives up.
const START_LOCK_WAIT: Duration = Duration::from_secs(10);
use crate::ServeError;

/// Where one listening socket of a worker comes from.
enum Source {
    Inherited(TcpListener),
    Bind(SocketAddr),
}

/// A running server.
pub struct Server {
    cfg: Arc<Config>,
    /// The address each configured listener really listens on (port 0 resolved).
    addrs: Vec<SocketAddr>,
    pinned: bool,
    shutdown: Arc<Shutdown>,
    counters: Vec<Arc<SharedCounters>>,
    upstreams: Vec<Arc<SharedUpstreams>>,
    handles: Vec<JoinHandle<Result<Counters, ServeError>>>,
    /// A duplicate of every listening socket, to hand over to a successor.
    offer: Vec<TcpListener>,
    access_log: Option<(AccessLog, JoinHandle<()>)>,
    /// Active health of each upstream group.
    boards: Vec<Arc<HealthBoard>>,
    _checker: Option<Checker>,
    /// This process's claim on each address it listens on by number ([`socket::PortClaim`]).
    _claims: Vec<socket::PortClaim>,
}

impl Server {
    /// Check the configuration, start the workers; returns once every worker listens (or the
    /// first failure). `inherited`: the sockets of the server this one takes over from.
    pub fn start(cfg: Config, mut inherited: Option<&mut Inherited>) -> Result<Self, ServeError> {
        cfg.validate().map_err(ServeError::Config)?;
        let cfg = Arc::new(cfg);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let pinned = cfg.will_pin(cores.len());
        if cfg.pin && !pinned {
            warn!(
                "{} workers but only {} usable core(s): not pinning (use --workers {} or --no-pin)",
                cfg.workers,
                cores.len(),
                cores.len()
            );
        }

        // Port ownership: only this process's workers share a port, unless it was handed over.
        // Each port's start lock first (held until every listener is bound, that is until this
        // function returns; ports in ascending order, so that two servers never wait for each
        // other), then the claim (held until this server is dropped), so that of two ringpolls
        // starting on one port at once only one goes on to the check and the bind, and the
        // other checks once the first is bound.
        let handed =
            |l: &crate::config::Listener| inherited.as_ref().is_some_and(|i| i.listeners.contains_key(&l.listen));
        let mut ports: Vec<SocketAddr> =
            cfg.listeners.iter().filter(|l| l.listen.port() != 0 && !handed(l)).map(|l| l.listen).collect();
        ports.sort_by_key(SocketAddr::port);
        ports.dedup_by_key(|a| a.port());
        let mut _start_locks = Vec::with_capacity(ports.len());
        for addr in ports {
            match socket::lock_port_start(addr.port(), START_LOCK_WAIT) {
                Ok(Some(lock)) => _start_locks.push(lock),
                Ok(None) => return Err(ServeError::PortClaimed { addr }),
                Err(source) => return Err(ServeError::Bind { addr, source }),
            }
        }
        let mut claims = Vec::new();
        for l in &cfg.listeners {
            if l.listen.port() != 0 && !handed(l) {
                let bind_err = |source| ServeError::Bind { addr: l.listen, source };
                let claim = socket::claim_port(l.listen).map_err(bind_err)?;
                match socket::someone_listens(l.listen) {
                    Ok(true) => return Err(ServeError::PortTaken { addr: l.listen }),
                    Ok(false) => {}
                    Err(source) => return Err(bind_err(source)),
                }
                claims.push(claim.ok_or(ServeError::PortClaimed { addr: l.listen })?);
            }
        }

        let access_log = match &cfg.access_log {
            Some(a) => {
                Some(accesslog::start(&a.path, a.format).map_err(|e| ServeError::Setup(format!("--access-log: {e}")))?)
            }
            None => None,
        };
        let boards: Vec<Arc<HealthBoard>> =
            cfg.groups.iter().map(|g| Arc::new(HealthBoard::new(g.upstreams.len()))).collect();
        let checker = start_health(&cfg, &boards)?;

        let wakers = (0..cfg.workers)
            .map(|_| EventFd::new().map(Arc::new))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| ServeError::Setup(format!("creating wake-up eventfds: {e}")))?;
        let shutdown = Arc::new(Shutdown::new(wakers.clone()));
        let counters: Vec<_> = (0..cfg.workers).map(|_| Arc::new(SharedCounters::default())).collect();
        let sizes: Vec<usize> = cfg.groups.iter().map(|g| g.upstreams.len()).collect();
        let upstreams: Vec<_> = (0..cfg.workers).map(|_| Arc::new(SharedUpstreams::new(&sizes))).collect();
        let mut server = Server {
            cfg: cfg.clone(),
            addrs: cfg.listeners.iter().map(|l| l.listen).collect(),
            pinned,
            shutdown: shutdown.clone(),
            counters: counters.clone(),
            upstreams: upstreams.clone(),
            handles: Vec::new(),
            offer: Vec::new(),
            access_log,
            boards: boards.clone(),
            _checker: checker,
            _claims: claims,
        };

        // Inherited sockets: one per worker and listener; any beyond the worker count go to
        // the workers in turn (a worker may serve several sockets of one listener).
        let mut plans: Vec<Vec<(usize, Option<TcpListener>)>> = (0..cfg.workers).map(|_| Vec::new()).collect();
        for (j, l) in cfg.listeners.iter().enumerate() {
            let mut got = inherited.as_mut().map(|i| i.take_all(l.listen)).unwrap_or_default();
            got.reverse();
            for (i, plan) in plans.iter_mut().enumerate() {
                plan.push((j, got.pop()));
                let _ = i;
            }
            for (k, extra) in got.into_iter().enumerate() {
                plans[k % cfg.workers].push((j, Some(extra)));
            }
        }

        for (index, plan) in plans.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel();
            let sources: Vec<(usize, Source)> = plan
                .into_iter()
                .map(|(j, l)| (j, l.map_or(Source::Bind(server.addrs[j]), Source::Inherited)))
                .collect();
            let ctx = WorkerCtx {
                index,
                cfg: cfg.clone(),
                sockets: Vec::new(),
                waker: wakers[index].clone(),
                shutdown: shutdown.clone(),
                counters: counters[index].clone(),
                upstreams: upstreams[index].clone(),
                boards: boards.clone(),
                access_log: server.access_log.as_ref().map(|(l, _)| l.clone()),
                ready: Some(tx),
            };
            let core = if pinned { cores.get(index).copied() } else { None };
            let spawned = std::thread::Builder::new()
                .name(format!("ringpoll-w{index}"))
                .spawn(move || worker_main(ctx, sources, core));
            let handle = match spawned {
                Ok(h) => h,
                Err(e) => {
                    server.stop_after_failed_start();
                    return Err(ServeError::Setup(format!("spawning worker {index}: {e}")));
                }
            };
            server.handles.push(handle);
            match rx.recv() {
                Ok(Ok(dups)) => {
                    for (k, d) in dups.into_iter().enumerate() {
                        if index == 0 && k < server.addrs.len() {
                            // Worker 0 binds first: with port 0 its port is everyone's.
                            server.addrs[k] =
                                d.local_addr().map_err(|e| ServeError::Worker { worker: 0, source: e })?;
                        }
                        server.offer.push(d);
                    }
                }
                Ok(Err(e)) => {
                    server.stop_after_failed_start();
                    return Err(e);
                }
                Err(_) => {
                    // The worker died before reporting: surface its own error.
                    let h = server.handles.pop().expect("just pushed");
                    let err = match h.join() {
                        Ok(Err(e)) => e,
                        Ok(Ok(_)) => ServeError::Setup(format!("worker {index} exited during start-up")),
                        Err(_) => ServeError::Panic(index),
                    };
                    server.stop_after_failed_start();
                    return Err(err);
                }
            }
        }
        Ok(server)
    }

    fn stop_after_failed_start(&mut self) {
        self.shutdown.trigger();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }

    /// The first listener's address (the real port when port 0 was asked).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every listener's address, in configuration order.
    #[must_use]
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether the workers are pinned to cores.
    #[must_use]
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// A handle that can start a graceful shutdown from another thread (signal handler).
    #[must_use]
    pub fn shutdown_handle(&self) -> Arc<Shutdown> {
        self.shutdown.clone()
    }

    /// Live counters of every worker.
    #[must_use]
    pub fn counters(&self) -> Vec<Arc<SharedCounters>> {
        self.counters.clone()
    }

    /// What the metrics endpoint reports.
    #[must_use]
    pub fn metrics_source(&self) -> metrics::Source {
        metrics::Source {
            workers: self.counters.clone(),
            upstreams: self.upstreams.clone(),
            groups: self
                .cfg
                .groups
                .iter()
                .map(|g| (g.name.clone(), g.upstreams.iter().map(|u| u.addr).collect()))
                .collect(),
            boards: self.boards.clone(),
            access_log: self.access_log.as_ref().map(|(l, _)| l.dropped_counter()),
            accept_backoffs: Arc::default(),
        }
    }

    /// The listening sockets to hand over to a successor (`--takeover`).
    pub fn take_offer(&mut self) -> Vec<TcpListener> {
        std::mem::take(&mut self.offer)
    }

    /// Wait for every worker to finish; returns their final counters.
    pub fn join(mut self) -> Result<Vec<Counters>, ServeError> {
        let mut out = Vec::new();
        let mut first_err = None;
        for (i, h) in std::mem::take(&mut self.handles).into_iter().enumerate() {
            match h.join() {
                Ok(Ok(c)) => out.push(c),
                Ok(Err(e)) => {
                    self.shutdown.trigger();
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    self.shutdown.trigger();
                    first_err.get_or_insert(ServeError::Panic(i));
                }
            }
        }
        if let Some((log, writer)) = self.access_log.take() {
            if log.dropped() > 0 {
                warn!("access log: {} line(s) dropped because the writer was behind", log.dropped());
            }
            drop(log);
            let _ = writer.join();
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// Probe every upstream group once (warn when none of a group's upstreams answers) and start
/// the active checks.
fn start_health(cfg: &Config, boards: &[Arc<HealthBoard>]) -> Result<Option<Checker>, ServeError> {
    let used: Vec<usize> = cfg.listeners.iter().filter(|l| l.mode == Mode::Proxy).filter_map(|l| l.group).collect();
    let probe: Vec<_> = cfg
        .groups
        .iter()
        .enumerate()
        .filter(|(g, _)| used.contains(g))
        .map(|(g, grp)| {
            let board = grp.active.is_some().then(|| boards[g].clone());
            (grp.name.clone(), grp.upstreams.iter().map(|u| u.addr).collect(), board)
        })
        .collect();
    health::startup_probe(&probe, Duration::from_secs(1));
    let checked: Vec<CheckedGroup> = cfg
        .groups
        .iter()
        .enumerate()
        .filter_map(|(g, grp)| {
            grp.active.map(|check| CheckedGroup {
                name: grp.name.clone(),
                upstreams: grp.upstreams.iter().map(|u| u.addr).collect(),
                check,
                board: boards[g].clone(),
            })
        })
        .collect();
    health::spawn(checked).map_err(|e| ServeError::Setup(format!("starting the health checker: {e}")))
}

fn worker_main(
    mut ctx: WorkerCtx,
    sources: Vec<(usize, Source)>,
    core: Option<core_affinity::CoreId>,
) -> Result<Counters, ServeError> {
    let index = ctx.index;
    if let Some(core) = core {
        if !core_affinity::set_for_current(core) {
            warn!("worker {index}: could not pin to core {}", core.id);
        }
    }
    let tx = ctx.ready.clone();
    let fail = |e: ServeError| {
        if let Some(tx) = &tx {
            let _ = tx.send(Err(ServeError::Setup(e.to_string())));
        }
        e
    };
    for (listener, source) in sources {
        let socket = match source {
            Source::Inherited(l) => l,
            Source::Bind(addr) => ListenerConfig::new()
                .backlog(ctx.cfg.backlog)
                .bind(addr)
                .map_err(|source| fail(ServeError::Bind { addr, source }))?,
        };
        ctx.sockets.push(ListenSocket { socket, listener });
    }
    let result = run_backend(ctx).map_err(|e| match e {
        BackendError::Io(source) => ServeError::Worker { worker: index, source },
        BackendError::Serve(e) => e,
    });
    result.map_err(fail)
}

/// The one place where the backend is chosen: everything below is static.
fn run_backend(ctx: WorkerCtx) -> Result<Counters, BackendError> {
    match ctx.cfg.backend {
        Backend::Epoll => Ok(crate::readiness::run::<Epoll>(ctx)?),
        Backend::EpollLt => Ok(crate::readiness::run::<EpollLt>(ctx)?),
        Backend::EpollEt => Ok(crate::readiness::run::<EpollEt>(ctx)?),
        Backend::Poll => Ok(crate::readiness::run::<Poll>(ctx)?),
        Backend::Select => Ok(crate::readiness::run::<Select>(ctx)?),
        Backend::Uring => crate::uring::run(ctx),
    }
}
