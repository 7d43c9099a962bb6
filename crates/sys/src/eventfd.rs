//! eventfd: how the signal thread wakes each worker's poller.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::{retry_eintr, syscall, would_block};

/// A non-blocking eventfd counter.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers.
        let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Add one to the counter, waking any poller watching it.
    pub fn notify(&self) -> io::Result<()> {
        let one: u64 = 1;
        let r = retry_eintr(|| {
            // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
            syscall!(write(self.fd.as_raw_fd(), std::ptr::from_ref(&one).cast(), 8))
        });
        // EAGAIN means the counter is saturated: the waiter is woken anyway.
        would_block(r).map(|_| ())
    }

    /// Reset the counter; returns the value it had (0 when nothing was pending).
    pub fn drain(&self) -> io::Result<u64> {
        let mut v: u64 = 0;
        let r = retry_eintr(|| {
            // SAFETY: reads 8 bytes into a live u64 from an eventfd we own.
            syscall!(read(self.fd.as_raw_fd(), std::ptr::from_mut(&mut v).cast(), 8))
        });
        Ok(would_block(r)?.map_or(0, |_| v))
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
