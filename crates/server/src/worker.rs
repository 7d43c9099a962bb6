//! Spawning, pinning and joining the per-core workers.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use ringpoll_proto::{echo::Echo, http::Http1};
use tracing::warn;

use crate::config::{Backend, Config, Mode};
use crate::readiness::{self, proxy::Proxies, stream::Streams};
use crate::stats::{Counters, SharedCounters};
use crate::ServeError;
use ringpoll_sys::eventfd::EventFd;
use ringpoll_sys::poller::epoll::{Epoll, EpollEt, EpollLt};
use ringpoll_sys::poller::poll::Poll;
use ringpoll_sys::poller::select::Select;
use ringpoll_sys::poller::Poller;
use ringpoll_sys::socket::ListenerConfig;

/// Asks every worker to stop: the flag, then a wake-up on each worker's eventfd.
#[derive(Debug)]
pub struct Shutdown {
    flag: AtomicBool,
    wakers: Vec<Arc<EventFd>>,
}

impl Shutdown {
    #[must_use]
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Start a graceful shutdown of every worker (idempotent).
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::Release);
        for w in &self.wakers {
            if let Err(e) = w.notify() {
                warn!("waking a worker for shutdown: {e}");
            }
        }
    }
}

/// What a worker thread is given.
pub(crate) struct WorkerCtx {
    pub index: usize,
    pub cfg: Config,
    pub listener: TcpListener,
    pub waker: Arc<EventFd>,
    pub shutdown: Arc<Shutdown>,
    pub counters: Arc<SharedCounters>,
    ready: Option<mpsc::Sender<Result<SocketAddr, ServeError>>>,
}

impl WorkerCtx {
    /// The backend is set up: report the listening address to `Server::start`.
    pub fn ready(&mut self) {
        if let Some(tx) = self.ready.take() {
            let addr = self.listener.local_addr().map_err(|e| ServeError::Worker { worker: self.index, source: e });
            let _ = tx.send(addr);
        }
    }
}

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    cfg: Config,
    shutdown: Arc<Shutdown>,
    counters: Vec<Arc<SharedCounters>>,
    handles: Vec<JoinHandle<Result<Counters, ServeError>>>,
}

impl Server {
    /// Spawn the workers; returns once every worker listens (or the first failure).
    pub fn start(cfg: Config) -> Result<Self, ServeError> {
        let mut cfg = cfg;
        if cfg.workers == 0 {
            return Err(ServeError::Config("--workers must be at least 1".into()));
        }
        if cfg.mode == Mode::Proxy && cfg.upstreams.is_empty() {
            return Err(ServeError::Config("--mode proxy needs at least one --upstream HOST:PORT".into()));
        }
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if cfg.pin && cores.len() < cfg.workers {
            warn!(
                "{} workers but only {} usable core(s): not pinning (use --workers {} or --no-pin)",
                cfg.workers,
                cores.len(),
                cores.len()
            );
            cfg.pin = false;
        }
        let wakers = (0..cfg.workers)
            .map(|_| EventFd::new().map(Arc::new))
            .collect::<io::Result<Vec<_>>>()
            .map_err(|e| ServeError::Setup(format!("creating wake-up eventfds: {e}")))?;
        let shutdown = Arc::new(Shutdown { flag: AtomicBool::new(false), wakers: wakers.clone() });
        let counters: Vec<_> = (0..cfg.workers).map(|_| Arc::new(SharedCounters::default())).collect();
        let mut server = Server {
            local_addr: cfg.listen,
            cfg,
            shutdown: shutdown.clone(),
            counters: counters.clone(),
            handles: Vec::new(),
        };

        let mut addr = cfg.listen;
        for index in 0..cfg.workers {
            let (tx, rx) = mpsc::channel();
            let core = if cfg.pin { cores.get(index).copied() } else { None };
            let waker = wakers[index].clone();
            let shutdown = shutdown.clone();
            let counters = counters[index].clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ringpoll-w{index}"))
                .spawn(move || worker_main(index, cfg, addr, core, waker, shutdown, counters, tx));
            let handle = match spawned {
                Ok(h) => h,
                Err(e) => {
                    server.stop_after_failed_start();
                    return Err(ServeError::Setup(format!("spawning worker {index}: {e}")));
                }
            };
            server.handles.push(handle);
            match rx.recv() {
                Ok(Ok(bound)) => addr = bound,
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
        server.local_addr = addr;
        Ok(server)
    }

    fn stop_after_failed_start(&mut self) {
        self.shutdown.trigger();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }

    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A handle that can start a graceful shutdown from another thread (signal handler).
    #[must_use]
    pub fn shutdown_handle(&self) -> Arc<Shutdown> {
        self.shutdown.clone()
    }

    /// Live counters of every worker (for the metrics endpoint).
    #[must_use]
    pub fn counters(&self) -> Vec<Arc<SharedCounters>> {
        self.counters.clone()
    }

    /// Wait for every worker to finish; returns their final counters.
    pub fn join(self) -> Result<Vec<Counters>, ServeError> {
        let mut out = Vec::new();
        let mut first_err = None;
        for (i, h) in self.handles.into_iter().enumerate() {
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
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn worker_main(
    index: usize,
    cfg: Config,
    addr: SocketAddr,
    core: Option<core_affinity::CoreId>,
    waker: Arc<EventFd>,
    shutdown: Arc<Shutdown>,
    counters: Arc<SharedCounters>,
    tx: mpsc::Sender<Result<SocketAddr, ServeError>>,
) -> Result<Counters, ServeError> {
    if let Some(core) = core {
        if !core_affinity::set_for_current(core) {
            warn!("worker {index}: could not pin to core {}", core.id);
        }
    }
    let listener =
        ListenerConfig::new().backlog(cfg.backlog).bind(addr).map_err(|source| ServeError::Bind { addr, source })?;
    let ctx = WorkerCtx { index, cfg, listener, waker, shutdown, counters, ready: Some(tx.clone()) };
    let result = run_backend(ctx).map_err(|e| match e {
        BackendError::Io(source) => ServeError::Worker { worker: index, source },
        BackendError::Serve(e) => e,
    });
    if let Err(e) = &result {
        // Only read when start-up has not been reported yet.
        let _ = tx.send(Err(ServeError::Setup(e.to_string())));
    }
    result
}

/// Errors a backend can end with.
pub(crate) enum BackendError {
    Io(io::Error),
    Serve(ServeError),
}

impl From<io::Error> for BackendError {
    fn from(e: io::Error) -> Self {
        BackendError::Io(e)
    }
}

/// The one place where the backend and protocol are chosen: everything below is static.
fn run_backend(ctx: WorkerCtx) -> Result<Counters, BackendError> {
    match ctx.cfg.backend {
        Backend::Epoll => run_readiness::<Epoll>(ctx),
        Backend::EpollLt => run_readiness::<EpollLt>(ctx),
        Backend::EpollEt => run_readiness::<EpollEt>(ctx),
        Backend::Poll => run_readiness::<Poll>(ctx),
        Backend::Select => run_readiness::<Select>(ctx),
        Backend::Uring => crate::uring::run(ctx),
    }
}

fn run_readiness<P: Poller>(ctx: WorkerCtx) -> Result<Counters, BackendError> {
    let r = match ctx.cfg.mode {
        Mode::Echo => readiness::run::<P, _>(ctx, Streams::<Echo>::new()),
        Mode::Http => readiness::run::<P, _>(ctx, Streams::<Http1>::new()),
        Mode::Proxy => readiness::run::<P, _>(ctx, Proxies::new()),
    };
    Ok(r?)
}
