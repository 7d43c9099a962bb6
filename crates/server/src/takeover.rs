//! Zero-downtime hand-over of the listening sockets to a new process (`serve --takeover`).
//!
//! The running server answers on a control socket: a Unix socket in the abstract namespace
//! named after its first listening address (nothing on disk to clean up). A new process started
//! with `--takeover` connects, receives every listening socket (each worker's SO_REUSEPORT
//! listener, and the metrics listener) over SCM_RIGHTS, starts its workers on them, prints
//! `listening on`, and only then says READY. The old process then stops accepting and drains
//! within its `--shutdown-timeout`.
//!
//! Why descriptor passing (HAProxy `-x`, Envoy hot restart) rather than a second SO_REUSEPORT
//! group member plus `net.ipv4.tcp_migrate_req`: the new process accepts from the very same
//! sockets, so nothing sitting in an accept queue is ever dropped or reset, whatever the kernel
//! settings and without privileges; the sockets are never closed while either process runs.
//! The cost is one round trip over a local socket at start, and the new process must accept the
//! old one's socket count (it takes all of them; a worker may serve several).
//!
//! Only a process of the same user (or root) may take the sockets (SO_PEERCRED).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ringpoll_sys::{handover, socket};
use tracing::{info, warn};

/// How long the old process waits for the new one to say READY.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the new process waits for the old one's answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The control socket's name for a server whose first listener is `addr`.
#[must_use]
pub fn control_name(addr: SocketAddr) -> String {
    format!("ringpoll/{addr}")
}

fn control_addr(addr: SocketAddr) -> io::Result<UnixAddr> {
    UnixAddr::from_abstract_name(control_name(addr).as_bytes())
}

/// What a new process received from the old one.
#[derive(Debug, Default)]
pub struct Inherited {
    /// Listening sockets by their address.
    pub listeners: HashMap<SocketAddr, Vec<TcpListener>>,
    pub metrics: Option<TcpListener>,
    /// The conversation with the old process, to say READY on.
    conn: Option<UnixStream>,
}

impl Inherited {
    /// Take one inherited socket listening on `addr`.
    pub fn take(&mut self, addr: SocketAddr) -> Option<TcpListener> {
        self.listeners.get_mut(&addr).and_then(Vec::pop)
    }

    /// Take all that are left for `addr` (more than this process has workers).
    pub fn take_all(&mut self, addr: SocketAddr) -> Vec<TcpListener> {
        self.listeners.remove(&addr).unwrap_or_default()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.conn.is_none()
    }
}

/// New process: ask the server running on `first` for its sockets. `Ok(None)`: nothing runs
/// there (start fresh).
pub fn request(first: SocketAddr) -> io::Result<Option<Inherited>> {
    let conn = match UnixStream::connect_addr(&control_addr(first)?) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound) => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(e.kind(), format!("connecting to the running server's control socket: {e}")))
        }
    };
    conn.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    (&conn).write_all(b"TAKEOVER 1\n")?;
    let mut inherited = Inherited::default();
    loop {
        let mut buf = [0u8; 4096];
        let (n, fds) = handover::recv_fds(&conn, &mut buf, 250)
            .map_err(|e| io::Error::new(e.kind(), format!("receiving the listening sockets: {e}")))?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the running server hung up (another takeover?)"));
        }
        let text = std::str::from_utf8(&buf[..n]).map_err(|_| invalid("a garbled answer"))?;
        let mut lines = text.lines();
        match lines.next() {
            Some("DONE") => break,
            Some("REFUSED") => {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the running server refused"))
            }
            Some("FDS") => {}
            _ => return Err(invalid("an unexpected answer")),
        }
        let kinds: Vec<&str> = lines.collect();
        if kinds.len() != fds.len() {
            return Err(invalid("descriptor count and description differ"));
        }
        for (kind, fd) in kinds.into_iter().zip(fds) {
            let l = handover::listener_from_fd(fd)?;
            if kind == "metrics" {
                inherited.metrics = Some(l);
            } else {
                let addr = l.local_addr()?;
                inherited.listeners.entry(addr).or_default().push(l);
            }
        }
    }
    inherited.conn = Some(conn);
    Ok(Some(inherited))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("takeover: {what}"))
}

/// New process, once it listens: tell the old one to stop, and wait until it has released the
/// control socket name (so that this process can answer the next takeover).
pub fn ready(inherited: &mut Inherited) -> io::Result<()> {
    let Some(conn) = inherited.conn.take() else { return Ok(()) };
    (&conn).write_all(b"READY\n")?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    if line.trim() != "RELEASED" {
        return Err(invalid("the running server did not confirm"));
    }
    Ok(())
}

/// Old process: the sockets to hand over (duplicates kept for the purpose).
pub struct Offer {
    pub listeners: Vec<TcpListener>,
    pub metrics: Option<TcpListener>,
}

impl Offer {
    fn try_clone(&self) -> io::Result<Offer> {
        Ok(Offer {
            listeners: self.listeners.iter().map(TcpListener::try_clone).collect::<io::Result<_>>()?,
            metrics: self.metrics.as_ref().map(TcpListener::try_clone).transpose()?,
        })
    }
}

/// The offer, shared between the control thread and the signal handler. Its duplicates keep
/// the listening sockets open, so a shutdown that is not a hand-over must drop them
/// ([`withdraw`]): otherwise the kernel would go on completing connections into accept queues
/// that nobody serves any more, to be reset at exit.
pub type SharedOffer = Arc<Mutex<Option<Offer>>>;

/// Drop the offer (a shutdown that is not a hand-over); later takeover requests are refused.
pub fn withdraw(offer: &SharedOffer) {
    let taken = offer.lock().unwrap_or_else(PoisonError::into_inner).take();
    drop(taken);
}

/// Answer takeover requests on `listener` (from [`bind_control`]) until one succeeds; then
/// call `stop` (start draining). Runs on its own thread.
pub fn serve(listener: UnixListener, offer: SharedOffer, stop: Arc<dyn Fn() + Send + Sync>) -> io::Result<()> {
    // Waited for in poll(2), never in a blocking accept(2) (see `socket::wait_acceptable`).
    listener.set_nonblocking(true)?;
    std::thread::Builder::new().name("ringpoll-takeover".into()).spawn(move || {
        loop {
            let accepted = socket::wait_acceptable(listener.as_fd()).and_then(|()| listener.accept());
            // The conversation blocks, bounded by its read timeouts.
            let conn = match accepted.and_then(|(c, _)| c.set_nonblocking(false).map(|()| c)) {
                Ok(c) => c,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => continue,
                Err(e) => {
                    warn!("takeover control socket: {e}");
                    std::thread::sleep(crate::ACCEPT_BACKOFF);
                    continue;
                }
            };
            // A copy for this attempt, so that a shutdown never waits for the conversation.
            let current = offer.lock().unwrap_or_else(PoisonError::into_inner).as_ref().map(Offer::try_clone);
            let current = match current {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    warn!("takeover: duplicating the listening sockets: {e}");
                    let _ = (&conn).write_all(b"REFUSED\n");
                    continue;
                }
                None => {
                    let _ = (&conn).write_all(b"REFUSED\n"); // shutting down
                    continue;
                }
            };
            match answer(&conn, &current) {
                Ok(true) => {
                    drop(current);
                    withdraw(&offer);
                    drop(listener);
                    if let Err(e) = (&conn).write_all(b"RELEASED\n") {
                        warn!("takeover: {e}");
                    }
                    info!("a new process took over the listening sockets: draining");
                    stop();
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!("takeover attempt failed: {e}; still serving"),
            }
        }
    })?;
    Ok(())
}

/// Bind the control socket, retrying briefly while a previous owner is releasing the name.
pub fn bind_control(first: SocketAddr) -> io::Result<UnixListener> {
    let addr = control_addr(first)?;
    let mut last = None;
    for _ in 0..100 {
        match UnixListener::bind_addr(&addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                last = Some(e);
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

/// One request: `Ok(true)` once the new process said READY.
fn answer(conn: &UnixStream, offer: &Offer) -> io::Result<bool> {
    conn.set_read_timeout(Some(READY_TIMEOUT))?;
    let peer = handover::peer_uid(conn)?;
    let me = handover::effective_uid();
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.trim() != "TAKEOVER 1" {
        return Err(invalid("unknown request"));
    }
    if peer != me && peer != 0 {
        let _ = (&*conn).write_all(b"REFUSED\n");
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("uid {peer} may not take over (we run as {me})"),
        ));
    }
    let mut all: Vec<(&str, std::os::fd::BorrowedFd<'_>)> =
        offer.listeners.iter().map(|l| ("listener", l.as_fd())).collect();
    if let Some(m) = &offer.metrics {
        all.push(("metrics", m.as_fd()));
    }
    for chunk in all.chunks(200) {
        let mut text = String::from("FDS\n");
        for (kind, _) in chunk {
            text.push_str(kind);
            text.push('\n');
        }
        let fds: Vec<_> = chunk.iter().map(|(_, fd)| *fd).collect();
        handover::send_fds(conn, text.as_bytes(), &fds)?;
        // One message per chunk: wait for nothing, the receiver reads them in order.
    }
    handover::send_fds(conn, b"DONE\n", &[])?;
    line.clear();
    let n = reader.read_line(&mut line)?;
    Ok(n > 0 && line.trim() == "READY")
}
