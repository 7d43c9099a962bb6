//! The readiness abstraction every classic backend implements, and the backends: one file
//! per poller ([`epoll`] in three flavours, [`poll`], [`select`]), each only syscall
//! translation plus one flag-mapping function.
//!
//! # The one-shot contract
//!
//! After a [`Poller::wait`] reports an event for a token, **no further event is reported for
//! that token until [`Poller::rearm`] is called** with the interest the loop wants next.
//! Re-arming re-evaluates readiness: if the descriptor is still readable (because the loop
//! stopped reading early to be fair to others), a new event arrives on the next wait. This is
//! what lets the loop budget its work per event without ever losing a wakeup, and it is what
//! `EPOLLONESHOT` + `EPOLL_CTL_MOD` give natively.
//!
//! Backends that cannot deliver the contract natively say how they relate to it through
//! [`Poller::MODE`]:
//! - [`Mode::OneShot`]: the contract holds exactly (epoll ET|ONESHOT; poll and select clear
//!   the interest that fired until re-armed).
//! - [`Mode::Level`]: events keep arriving while the descriptor is ready; `rearm` only
//!   changes the interest when it differs (epoll-lt, the textbook loop).
//! - [`Mode::Edge`]: an event arrives only on a new edge, `rearm` is free, and the loop must
//!   remember descriptors it left readable (budget exhausted) and revisit them itself
//!   (epoll-et without oneshot).
//!
//! Spurious events are allowed in every mode: handlers treat EAGAIN as "not ready after all".

pub mod epoll;
pub mod poll;
pub mod select;

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Identifies a registered descriptor to its owner (for example a slab key, or a value the
/// owner reserves for its listener); the poller only hands it back with each event.
pub type Token = u64;

/// What the loop wants to hear about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const NONE: Self = Self { read: false, write: false };
    pub const READ: Self = Self { read: true, write: false };
    pub const WRITE: Self = Self { read: false, write: true };
    pub const BOTH: Self = Self { read: true, write: true };

    #[must_use]
    pub const fn is_none(self) -> bool {
        !self.read && !self.write
    }
}

/// One readiness report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub token: Token,
    pub readable: bool,
    pub writable: bool,
    /// The peer shut down its side or the connection hung up (EPOLLRDHUP/EPOLLHUP, POLLHUP).
    pub hup: bool,
    /// The socket has a pending error (EPOLLERR, POLLERR); read it with SO_ERROR.
    pub error: bool,
}

/// How a backend honours the one-shot contract (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    OneShot,
    Level,
    Edge,
}

/// A readiness poller owned by one worker thread.
pub trait Poller: Sized {
    /// Backend name as given on the command line.
    const NAME: &'static str;
    /// How the backend relates to the one-shot contract.
    const MODE: Mode;

    fn new() -> io::Result<Self>;

    /// Start watching `fd` for `interest`.
    ///
    /// A backend that cannot watch this descriptor at all (select and FD_SETSIZE) fails with
    /// [`fd_out_of_range`]'s error, which callers tell apart with [`is_fd_out_of_range`].
    fn add(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()>;

    /// Re-arm after an event (see the contract). `interest` may be [`Interest::NONE`] to keep
    /// the descriptor registered but silent.
    fn rearm(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()>;

    /// Stop watching `fd`. Must be called before the descriptor is closed.
    fn delete(&mut self, fd: RawFd) -> io::Result<()>;

    /// Wait for events (at most `timeout`, forever if `None`), replacing `events`' content.
    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()>;
}

/// The error a backend returns from [`Poller::add`] when the descriptor number is beyond what
/// it can watch (select's FD_SETSIZE).
#[must_use]
pub fn fd_out_of_range(fd: RawFd) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, FdOutOfRange(fd))
}

/// Payload of [`fd_out_of_range`], so callers can tell this refusal from real failures.
#[derive(Debug)]
pub struct FdOutOfRange(pub RawFd);

impl std::fmt::Display for FdOutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "descriptor {} is beyond what this backend can watch", self.0)
    }
}

impl std::error::Error for FdOutOfRange {}

/// Whether `e` is the [`fd_out_of_range`] refusal.
#[must_use]
pub fn is_fd_out_of_range(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<FdOutOfRange>())
}

/// Milliseconds for a poll-style timeout argument: `None` is -1 (forever); sub-millisecond
/// waits round up so that a short timer never turns into a busy loop.
#[must_use]
pub fn timeout_ms(timeout: Option<Duration>) -> i32 {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_and_saturate() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::ZERO)), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_millis(250))), 250);
        assert_eq!(timeout_ms(Some(Duration::from_secs(u64::MAX / 4))), i32::MAX);
    }

    #[test]
    fn out_of_range_is_recognised() {
        assert!(is_fd_out_of_range(&fd_out_of_range(2000)));
        assert!(!is_fd_out_of_range(&io::Error::from(io::ErrorKind::InvalidInput)));
    }
}
