//! Passing listening sockets between processes (`serve --takeover`): descriptors over a Unix
//! socket with SCM_RIGHTS, the peer's credentials (SO_PEERCRED), and turning a received
//! descriptor back into a listener once it is known to be one.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{getsockopt, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::count_syscall;

/// Most descriptors one message carries (the kernel's SCM_MAX_FD is 253).
pub const MAX_FDS: usize = 250;

/// Send `data` with `fds` attached (at most [`MAX_FDS`]). The receiver gets its own
/// descriptors for the same open sockets.
pub fn send_fds(sock: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS || data.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a message needs 1 to 250 descriptors and some bytes"));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let mut sent = 0;
    while sent < data.len() {
        // The descriptors go with the first byte; the rest of the bytes follow plainly.
        let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() { &rights } else { &[] };
        let iov = [IoSlice::new(&data[sent..])];
        count_syscall();
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Receive one message into `buf`, with up to `max` descriptors (close-on-exec). Returns the
/// bytes read (0: the peer hung up) and the descriptors.
pub fn recv_fds(sock: &UnixStream, buf: &mut [u8], max: usize) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        count_syscall();
        let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel just installed `fd` in this process for this message;
                    // nothing else refers to it, so it is ours to own (and close).
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if msg.flags.contains(MsgFlags::MSG_CTRUNC) || fds.len() > max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "more descriptors than expected"));
        }
        return Ok((msg.bytes, fds));
    }
}

/// The user id of the process at the other end of `sock`.
pub fn peer_uid(sock: &UnixStream) -> io::Result<u32> {
    count_syscall();
    getsockopt(sock, sockopt::PeerCredentials).map(|c| c.uid()).map_err(io::Error::from)
}

/// This process's effective user id.
#[must_use]
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A received descriptor as a non-blocking listener, after checking that it is a listening
/// TCP socket (a peer cannot make us accept on something else).
pub fn listener_from_fd(fd: OwnedFd) -> io::Result<TcpListener> {
    count_syscall();
    let listening = getsockopt(&fd, sockopt::AcceptConn).map_err(io::Error::from)?;
    count_syscall();
    let ty = getsockopt(&fd, sockopt::SockType).map_err(io::Error::from)?;
    if !listening || ty != nix::sys::socket::SockType::Stream {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a handed-over descriptor is not a listening TCP socket",
        ));
    }
    let l = TcpListener::from(fd);
    count_syscall();
    l.set_nonblocking(true)?;
    l.local_addr()?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::os::fd::AsFd;

    #[test]
    fn listeners_cross_a_unix_socket_and_still_accept() {
        let (a, b) = UnixStream::pair().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        send_fds(&a, b"one", &[l.as_fd()]).unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv_fds(&b, &mut buf, 4).unwrap();
        assert_eq!(&buf[..n], b"one");
        assert_eq!(fds.len(), 1);
        let got = listener_from_fd(fds.into_iter().next().unwrap()).unwrap();
        assert_eq!(got.local_addr().unwrap(), addr);
        drop(l); // the socket lives on in the received descriptor
        let _c = TcpStream::connect(addr).unwrap();
        got.set_nonblocking(false).unwrap();
        assert!(got.accept().is_ok());
        assert_eq!(peer_uid(&a).unwrap(), effective_uid());
    }

    #[test]
    fn a_non_listening_descriptor_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        send_fds(&a, b"x", &[c.as_fd()]).unwrap();
        let mut buf = [0u8; 4];
        let (_, fds) = recv_fds(&b, &mut buf, 4).unwrap();
        let e = listener_from_fd(fds.into_iter().next().unwrap()).unwrap_err();
        assert!(e.to_string().contains("not a listening"), "{e}");
    }
}
