//! ringpoll's system layer: the only crate of the workspace with `unsafe` and `libc::`.
//!
//! It holds mechanism, never policy or protocol: sockets ([`socket`]), the wake-up eventfd
//! ([`eventfd`]), splice pipes ([`pipe`]), the signal thread ([`signals`]), descriptor limits
//! ([`rlimit`]), the generational slab ([`slab`]), the readiness [`poller`]s (the `Poller`
//! trait with its one-shot contract, one file per poller) and, with the `uring` feature, the
//! io_uring ring ([`uring`]). Everything above it (`ringpoll-server`, `ringpoll-load`, ...) is
//! `#![forbid(unsafe_code)]`; nothing here imports from those crates.
//!
//! Every raw call goes through the private `syscall!` macro, which turns `-1` into `io::Error`;
//! EINTR is retried in exactly one helper ([`retry_eintr`]) and EAGAIN is turned into `None`
//! in exactly one helper ([`would_block`]). Each wrapper also bumps a per-thread syscall
//! counter ([`syscalls`]), so that workers can report syscalls per request without `perf`.

use std::cell::Cell;
use std::io;

pub mod eventfd;
pub mod handover;
pub mod pipe;
pub mod poller;
pub mod rlimit;
pub mod signals;
pub mod slab;
pub mod socket;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(feature = "uring")]
pub mod uring;

/// Call a libc function and turn the C convention (`-1` + errno) into `io::Result`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        $crate::count_syscall();
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

/// Count one system call made by this thread (for calls made through std, socket2 or
/// io-uring rather than `syscall!`).
#[inline]
pub(crate) fn count_syscall() {
    SYSCALLS.with(|c| c.set(c.get() + 1));
}

/// System calls made so far by the calling thread through this crate.
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
