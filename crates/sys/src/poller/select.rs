//! select(2): watches descriptors below FD_SETSIZE only, and rebuilds and scans its sets on
//! every wait.
//!
//! One-shot adapter: a descriptor that fires has its interest cleared until `rearm`.
//! Descriptors at or above FD_SETSIZE are refused in `add` (never passed to FD_SET, which
//! would write out of bounds).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{fd_out_of_range, Event, Interest, Mode, Poller, Token};
use crate::{retry_eintr, syscall};

/// The largest descriptor count select can watch.
pub const FD_SETSIZE: usize = libc::FD_SETSIZE;

const READ: u8 = 1;
const WRITE: u8 = 2;
const REGISTERED: u8 = 4;

pub struct Select {
    tokens: Box<[Token; FD_SETSIZE]>,
    /// Bit set per descriptor: REGISTERED, READ, WRITE.
    state: Box<[u8; FD_SETSIZE]>,
    /// One past the highest registered descriptor.
    end: usize,
}

/// The flag mapping, in one place.
#[must_use]
pub const fn interests_to_select(interest: Interest) -> u8 {
    (if interest.read { READ } else { 0 }) | (if interest.write { WRITE } else { 0 })
}

fn index(fd: RawFd) -> io::Result<usize> {
    match usize::try_from(fd) {
        Ok(i) if i < FD_SETSIZE => Ok(i),
        _ => Err(fd_out_of_range(fd)),
    }
}

fn empty_set() -> libc::fd_set {
    let mut set = std::mem::MaybeUninit::<libc::fd_set>::uninit();
    // SAFETY: FD_ZERO initialises the whole set it is given.
    unsafe {
        libc::FD_ZERO(set.as_mut_ptr());
        set.assume_init()
    }
}

impl Select {
    /// The interest bits recorded for `fd` (for tests of the adapter).
    #[must_use]
    pub fn armed(&self, fd: RawFd) -> Interest {
        let s = index(fd).map_or(0, |i| self.state[i]);
        Interest { read: s & READ != 0, write: s & WRITE != 0 }
    }
}

impl Poller for Select {
    const NAME: &'static str = "select";
    const MODE: Mode = Mode::OneShot;

    fn new() -> io::Result<Self> {
        Ok(Self { tokens: Box::new([0; FD_SETSIZE]), state: Box::new([0; FD_SETSIZE]), end: 0 })
    }

    fn add(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let i = index(fd)?;
        if self.state[i] & REGISTERED != 0 {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.tokens[i] = token;
        self.state[i] = REGISTERED | interests_to_select(interest);
        self.end = self.end.max(i + 1);
        Ok(())
    }

    fn rearm(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let i = index(fd)?;
        if self.state[i] & REGISTERED == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.tokens[i] = token;
        self.state[i] = REGISTERED | interests_to_select(interest);
        Ok(())
    }

    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        let i = index(fd)?;
        if self.state[i] & REGISTERED == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.state[i] = 0;
        while self.end > 0 && self.state[self.end - 1] == 0 {
            self.end -= 1;
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        let mut rset = empty_set();
        let mut wset = empty_set();
        for (i, &s) in self.state[..self.end].iter().enumerate() {
            // `i < FD_SETSIZE` by construction of `end`.
            if s & READ != 0 {
                // SAFETY: `i` is below FD_SETSIZE and `rset` is an initialised set.
                unsafe { libc::FD_SET(i as RawFd, &mut rset) };
            }
            if s & WRITE != 0 {
                // SAFETY: as above, for `wset`.
                unsafe { libc::FD_SET(i as RawFd, &mut wset) };
            }
        }
        let mut tv = timeout.map(|d| libc::timeval {
            tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::from(d.subsec_micros()),
        });
        let tvp = tv.as_mut().map_or(std::ptr::null_mut(), std::ptr::from_mut);
        let nfds = self.end as libc::c_int;
        let n = retry_eintr(|| {
            // SAFETY: both sets are initialised and cover `nfds` <= FD_SETSIZE descriptors;
            // `tvp` is null or points at a live timeval.
            syscall!(select(nfds, &mut rset, &mut wset, std::ptr::null_mut(), tvp))
        })?;
        if n == 0 {
            return Ok(());
        }
        for i in 0..self.end {
            // SAFETY: `i` is below FD_SETSIZE and the sets are initialised.
            let (r, w) = unsafe { (libc::FD_ISSET(i as RawFd, &rset), libc::FD_ISSET(i as RawFd, &wset)) };
            if r || w {
                events.push(Event { token: self.tokens[i], readable: r, writable: w, hup: false, error: false });
                // One-shot: silent until re-armed.
                self.state[i] &= REGISTERED;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventfd::EventFd;
    use crate::poller::is_fd_out_of_range;
    use std::os::fd::AsRawFd;

    #[test]
    fn descriptors_beyond_fd_setsize_are_refused_not_set() {
        let mut s = Select::new().unwrap();
        let e = s.add(FD_SETSIZE as RawFd, 1, Interest::READ).unwrap_err();
        assert!(is_fd_out_of_range(&e));
        assert!(is_fd_out_of_range(&s.add(-1, 1, Interest::READ).unwrap_err()));
    }

    #[test]
    fn fired_descriptors_stay_silent_until_rearmed() {
        let efd = EventFd::new().unwrap();
        efd.notify().unwrap();
        let mut s = Select::new().unwrap();
        s.add(efd.as_raw_fd(), 9, Interest::READ).unwrap();
        let mut ev = Vec::new();
        s.wait(&mut ev, Some(Duration::from_millis(100))).unwrap();
        assert_eq!(ev.len(), 1);
        assert!(ev[0].readable && ev[0].token == 9);
        assert_eq!(s.armed(efd.as_raw_fd()), Interest::NONE);
        s.wait(&mut ev, Some(Duration::ZERO)).unwrap();
        assert!(ev.is_empty());
        s.rearm(efd.as_raw_fd(), 10, Interest::READ).unwrap();
        s.wait(&mut ev, Some(Duration::ZERO)).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].token, 10);
        s.delete(efd.as_raw_fd()).unwrap();
        assert_eq!(s.end, 0);
    }
}
