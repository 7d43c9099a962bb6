//! What a worker thread is given, and how it is asked to stop. A leaf: the loops and the
//! spawning code both import it, it imports neither.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use ringpoll_proto::upstream::HealthBoard;
use ringpoll_sys::eventfd::EventFd;
use tracing::warn;

use crate::accesslog::AccessLog;
use crate::config::Config;
use crate::stats::{SharedCounters, SharedUpstreams};
use crate::ServeError;

/// Asks every worker to stop: the flag, then a wake-up on each worker's eventfd.
#[derive(Debug)]
pub struct Shutdown {
    flag: AtomicBool,
    wakers: Vec<Arc<EventFd>>,
}

impl Shutdown {
    #[must_use]
    pub fn new(wakers: Vec<Arc<EventFd>>) -> Self {
        Self { flag: AtomicBool::new(false), wakers }
    }

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

/// One listening socket of a worker and the listener (index into `Config::listeners`) it
/// serves.
#[derive(Debug)]
pub(crate) struct ListenSocket {
    pub socket: TcpListener,
    pub listener: usize,
}

/// What a worker thread is given.
pub(crate) struct WorkerCtx {
    pub index: usize,
    pub cfg: Arc<Config>,
    pub sockets: Vec<ListenSocket>,
    pub waker: Arc<EventFd>,
    pub shutdown: Arc<Shutdown>,
    pub counters: Arc<SharedCounters>,
    pub upstreams: Arc<SharedUpstreams>,
    /// Active health of each upstream group.
    pub boards: Vec<Arc<HealthBoard>>,
    pub access_log: Option<AccessLog>,
    /// Start-up report: a duplicate of each listening socket (for a later hand-over), or why
    /// the worker could not start.
    pub ready: Option<mpsc::Sender<Result<Vec<TcpListener>, ServeError>>>,
}

impl WorkerCtx {
    /// The backend is set up: report to `Server::start` (with a duplicate of each listening
    /// socket, in order).
    pub fn ready(&mut self) {
        if let Some(tx) = self.ready.take() {
            let dups = self
                .sockets
                .iter()
                .map(|s| s.socket.try_clone())
                .collect::<io::Result<Vec<_>>>()
                .map_err(|e| ServeError::Worker { worker: self.index, source: e });
            let _ = tx.send(dups);
        }
    }
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
