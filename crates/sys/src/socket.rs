//! Listeners, accept, and byte transfer on TCP sockets.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::{count_syscall, retry_eintr, syscall, would_block};

/// Listener settings, in one place.
#[derive(Clone, Copy, Debug)]
pub struct ListenerConfig {
    pub backlog: i32,
    pub reuse_port: bool,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ListenerConfig {
    #[must_use]
    pub const fn new() -> Self {
        Self { backlog: 4096, reuse_port: true }
    }

    #[must_use]
    pub const fn backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    #[must_use]
    pub const fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Create a non-blocking, close-on-exec listener bound to `addr`.
    pub fn bind(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        if self.reuse_port {
            sock.set_reuse_port(true)?;
        }
        sock.bind(&addr.into())?;
        sock.listen(self.backlog)?;
        Ok(sock.into())
    }
}

/// Whether a socket already listens on `addr` (in any process): a probe bound without
/// SO_REUSEPORT (with SO_REUSEADDR, so that connections in TIME_WAIT do not count) conflicts
/// with a listening socket on that port, whoever owns it. Check before joining a
/// SO_REUSEPORT group, which would otherwise silently share the port with another process of
/// the same user.
pub fn someone_listens(addr: SocketAddr) -> io::Result<bool> {
    count_syscall();
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    count_syscall();
    probe.set_reuse_address(true)?;
    count_syscall();
    let r = match probe.bind(&addr.into()) {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(true),
        Err(e) => Err(e),
    };
    close(probe)?;
    r
}

/// A claim on a TCP address among the ringpoll processes of one network namespace, held for
/// as long as the value lives: a Unix datagram socket bound in the abstract namespace under a
/// name made from the address.
///
/// [`someone_listens`] sees a listener only once it is bound, so two ringpolls started on one
/// address at the same moment could both find it free and then both join one SO_REUSEPORT
/// group, silently sharing the port. Binding a name is atomic: of two processes claiming one
/// address, only one gets it. The name is released when the socket closes (at the latest when
/// the process exits, however it exits), with no TIME_WAIT.
#[derive(Debug)]
pub struct PortClaim {
    _socket: std::os::unix::net::UnixDatagram,
}

/// The abstract socket name of the claim on `addr`.
#[must_use]
pub fn claim_name(addr: SocketAddr) -> String {
    format!("ringpoll-port/{addr}")
}

/// Claim `addr` (see [`PortClaim`]); `Ok(None)` when another process holds the claim.
pub fn claim_port(addr: SocketAddr) -> io::Result<Option<PortClaim>> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let name = UnixAddr::from_abstract_name(claim_name(addr).as_bytes())?;
    count_syscall();
    match UnixDatagram::bind_addr(&name) {
        Ok(socket) => Ok(Some(PortClaim { _socket: socket })),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Ok(None),
        Err(e) => Err(e),
    }
}

/// The lock on starting to listen on one TCP port, among the ringpoll processes of one network
/// namespace: an abstract Unix datagram socket named after the port, held from before a
/// server checks its addresses on that port until it has bound them.
///
/// A [`PortClaim`] is per address, and [`someone_listens`] sees only what is bound: two
/// ringpolls started at one moment on overlapping addresses of one port (`0.0.0.0:P` and
/// `127.0.0.1:P`) would each claim its own address, each find the port free, and both join
/// a SO_REUSEPORT group. Under this lock the second one to start checks only once the first
/// is bound, and then sees it.
#[derive(Debug)]
pub struct StartLock {
    _socket: std::os::unix::net::UnixDatagram,
}

/// The abstract socket name of the start lock of `port`.
#[must_use]
pub fn start_lock_name(port: u16) -> String {
    format!("ringpoll-port-start/{port}")
}

/// Take the start lock of `port`, waiting while another process holds it (a start-up takes
/// milliseconds); `Ok(None)` if it is still held after `limit`.
pub fn lock_port_start(port: u16, limit: std::time::Duration) -> io::Result<Option<StartLock>> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let name = UnixAddr::from_abstract_name(start_lock_name(port).as_bytes())?;
    let until = std::time::Instant::now() + limit;
    loop {
        count_syscall();
        match UnixDatagram::bind_addr(&name) {
            Ok(socket) => return Ok(Some(StartLock { _socket: socket })),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if std::time::Instant::now() >= until {
                    return Ok(None);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Accept one connection as a non-blocking, close-on-exec stream; `Ok(None)` when the
/// backlog is empty.
pub fn accept(listener: &TcpListener) -> io::Result<Option<TcpStream>> {
    let fd = listener.as_raw_fd();
    let r = retry_eintr(|| {
        syscall!(accept4(
            // SAFETY: `fd` is a valid listening socket borrowed from `listener`; null address
            // pointers ask the kernel not to report the peer address.
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
        ))
    });
    Ok(would_block(r)?.map(|fd| {
        // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
        TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) })
    }))
}

/// Wait in poll(2) until the non-blocking listener `fd` has a connection to accept, for the
/// server's helper threads (metrics endpoint, takeover control socket), which then accept
/// without blocking.
///
/// Such a thread must never wait in a blocking accept(2): the kernel reserves the descriptor
/// number for the connection before it waits, and that reservation counts against
/// RLIMIT_NOFILE while appearing nowhere in /proc/PID/fd. Each waiting thread would make the
/// server run out of descriptors one early, invisibly.
pub fn wait_acceptable(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    count_syscall();
    match poll(&mut fds, PollTimeout::NONE) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether an accept error means the process or system ran out of descriptors (or memory
/// for sockets): back off and retry later rather than spin.
#[must_use]
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Whether an accept error concerns only the connection being accepted (it was reset or
/// aborted before we got to it): skip it and keep accepting.
#[must_use]
pub fn is_per_connection_accept_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionAborted
        || matches!(
            e.raw_os_error(),
            Some(
                libc::ECONNABORTED
                    | libc::EPROTO
                    | libc::EPERM
                    | libc::ENETDOWN
                    | libc::ENOPROTOOPT
                    | libc::EHOSTDOWN
                    | libc::ENONET
                    | libc::EHOSTUNREACH
                    | libc::EOPNOTSUPP
                    | libc::ENETUNREACH
            )
        )
}

/// Receive into `buf`. `Ok(None)`: nothing to read now. `Ok(Some(0))`: the peer sent FIN.
pub fn recv(stream: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    count_syscall();
    // std's TcpStream::read is recv(2) on a socket; `&TcpStream` implements Read.
    would_block(retry_eintr(|| (&mut &*stream).read(buf)))
}

/// Send from `buf` (MSG_NOSIGNAL: a closed peer is an EPIPE error, not a signal).
/// `Ok(None)`: the socket buffer is full.
pub fn send(stream: &TcpStream, buf: &[u8]) -> io::Result<Option<usize>> {
    count_syscall();
    // std's TcpStream::write is send(2) with MSG_NOSIGNAL on Linux.
    would_block(retry_eintr(|| (&mut &*stream).write(buf)))
}

/// Shut down the write side (sends FIN once queued data is out).
pub fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    count_syscall();
    match stream.shutdown(Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        r => r,
    }
}

/// Disable Nagle on an accepted or connected socket.
pub fn set_nodelay(stream: &TcpStream) -> io::Result<()> {
    count_syscall();
    stream.set_nodelay(true)
}

/// The peer's and our own address of a connected socket (getpeername + getsockname).
pub fn addresses(stream: &TcpStream) -> io::Result<(SocketAddr, SocketAddr)> {
    count_syscall();
    let peer = stream.peer_addr()?;
    count_syscall();
    Ok((peer, stream.local_addr()?))
}

/// Read and clear the socket's pending error (SO_ERROR).
pub fn take_error(stream: &TcpStream) -> io::Result<Option<io::Error>> {
    count_syscall();
    SockRef::from(stream).take_error()
}

/// Close a socket (or any descriptor) through the counted layer. Dropping a `TcpStream`
/// closes it too, but uncounted: the worker loops close through here so that their syscall
/// counts include every `close(2)`. An error is returned for the caller to log; the
/// descriptor is released either way (Linux frees it even when close reports an error, so
/// it is never closed twice).
pub fn close(fd: impl Into<OwnedFd>) -> io::Result<()> {
    let raw = fd.into().into_raw_fd();
    // SAFETY: `raw` came out of an `OwnedFd` that nothing else owns, and it is not used again.
    syscall!(close(raw)).map(drop)
}

/// Make the next close() send RST instead of FIN (SO_LINGER 0): used when a peer must learn
/// at once that its connection is gone (proxy resets).
pub fn set_linger_zero(stream: &TcpStream) -> io::Result<()> {
    count_syscall();
    SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO))
}

/// A blocking, close-on-exec TCP socket for `addr`'s family with TCP_NODELAY set, for a
/// connect through io_uring (whose requests never block the thread, whatever the flag).
pub fn stream_socket(addr: SocketAddr) -> io::Result<TcpStream> {
    count_syscall();
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    count_syscall();
    sock.set_tcp_nodelay(true)?;
    Ok(sock.into())
}

/// Start a non-blocking connect; completion is reported as writability, then `take_error`.
pub fn connect_nonblocking(addr: SocketAddr) -> io::Result<TcpStream> {
    count_syscall();
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    count_syscall();
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_classified() {
        let err = io::Error::from_raw_os_error;
        assert!(is_resource_exhaustion(&err(libc::EMFILE)));
        assert!(is_resource_exhaustion(&err(libc::ENFILE)));
        assert!(!is_per_connection_accept_error(&err(libc::EMFILE)));
        assert!(is_per_connection_accept_error(&err(libc::ECONNABORTED)));
        assert!(is_per_connection_accept_error(&io::Error::from(io::ErrorKind::ConnectionAborted)));
        assert!(!is_resource_exhaustion(&err(libc::ECONNABORTED)));
        assert!(!is_per_connection_accept_error(&err(libc::EBADF)));
    }

    #[test]
    fn close_is_counted_and_releases_the_descriptor() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (peer, _) = l.accept().unwrap();
        let before = crate::syscalls();
        close(s).unwrap();
        assert_eq!(crate::syscalls(), before + 1, "close(2) is counted");
        // The peer sees the FIN: the descriptor really was closed.
        let mut buf = [0u8; 1];
        peer.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        assert_eq!((&peer).read(&mut buf).unwrap(), 0);
    }
}
