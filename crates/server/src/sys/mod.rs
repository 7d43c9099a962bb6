//! The only place in the server where `unsafe` and `libc::` appear.
//!
//! Every raw call goes through [`syscall!`], which turns `-1` into `io::Error`; EINTR is
//! retried in exactly one helper ([`retry_eintr`]) and EAGAIN is turned into `None` in
//! exactly one helper ([`would_block`]). Each wrapper also bumps a per-thread syscall counter
//! so that workers can report syscalls per request without `perf`.

use std::cell::Cell;
use std::io;

pub mod epoll;
pub mod eventfd;
pub mod poll;
pub mod seccomp;
pub mod select;
pub mod socket;
pub mod splice;
pub mod uring;

/// Call a libc function and turn the C convention (`-1` + errno) into `io::Result`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        $crate::sys::count_syscall();
        #[allow(unused_unsafe)]
        // SAFETY: every use site documents why its arguments satisfy the call's contract.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}
pub(crate) use syscall;

thread_local! {
    static SYSCALLS: Cell<u64> = const { Cell::new(0) };
}

/// Count one system call made by this thread.
#[inline]
pub fn count_syscall() {
    SYSCALLS.with(|c| c.set(c.get() + 1));
}

/// System calls made so far by the calling thread through this layer.
#[must_use]
pub fn syscalls() -> u64 {
    SYSCALLS.with(Cell::get)
}

/// Retry a call interrupted by a signal. The only place EINTR is handled.
#[inline]
pub fn retry_eintr<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Map EAGAIN/EWOULDBLOCK to `Ok(None)`. The only place EAGAIN is handled.
#[inline]
pub fn would_block<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Raise the soft RLIMIT_NOFILE to the hard limit (best effort); returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// Number of descriptors this process has open (reads /proc/self/fd).
pub fn open_fds() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1))
}
