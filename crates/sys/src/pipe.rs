//! splice(2) through a pipe: the zero-copy relay of the epoll proxy (`--splice`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::{retry_eintr, syscall, would_block};

/// A non-blocking pipe; bytes spliced in from one socket wait here until spliced out to the
/// other.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Self> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array we pass.
        syscall!(pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC))?;
        // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_GETPIPE_SZ takes no pointer.
        let capacity = syscall!(fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ))?;
        Ok(Self { read, write, capacity: usize::try_from(capacity).unwrap_or(65536) })
    }

    /// Bytes the pipe holds at most.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// Move up to `len` bytes from socket `from` into the pipe. `Ok(Some(0))`: EOF on `from`.
    /// `Ok(None)`: nothing to read now, or the pipe is full.
    pub fn fill_from(&self, from: RawFd, len: usize) -> io::Result<Option<usize>> {
        splice(from, self.write.as_raw_fd(), len)
    }

    /// Move up to `len` bytes out of the pipe into socket `to`. `Ok(None)`: `to` is full.
    pub fn drain_into(&self, to: RawFd, len: usize) -> io::Result<Option<usize>> {
        splice(self.read.as_raw_fd(), to, len)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // The two descriptors close as the fields drop, right after this: count those closes.
        crate::count_syscall();
        crate::count_syscall();
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
    let r = retry_eintr(|| {
        // SAFETY: both descriptors are borrowed from live owners; null offsets mean "current
        // position", as sockets and pipes require.
        syscall!(splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags))
    });
    Ok(would_block(r)?.map(|n| n as usize))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn bytes_move_socket_to_socket_through_the_pipe() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l2.local_addr().unwrap()).unwrap();
        let (mut d, _) = l2.accept().unwrap();
        let pipe = Pipe::new().unwrap();
        assert!(pipe.capacity() >= 4096);
        a.write_all(b"spliced bytes").unwrap();
        b.set_nonblocking(true).unwrap();
        let mut n = None;
        for _ in 0..100 {
            n = pipe.fill_from(b.as_raw_fd(), 1 << 16).unwrap();
            if n.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(n, Some(13));
        assert_eq!(pipe.drain_into(c.as_raw_fd(), 13).unwrap(), Some(13));
        let mut got = [0u8; 13];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"spliced bytes");
        // Empty pipe, nothing to move: EAGAIN becomes None.
        assert_eq!(pipe.drain_into(c.as_raw_fd(), 13).unwrap(), None);
    }
}
