//! poll(2): no descriptor cap, but every wait copies and scans the whole array.
//!
//! One-shot adapter: when a descriptor fires it is disarmed by negating its fd in the array
//! (poll ignores negative descriptors entirely, including POLLHUP), and `rearm` restores it.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use super::{timeout_ms, Event, Interest, Mode, Poller, Token};
use crate::{retry_eintr, syscall};

pub struct Poll {
    fds: Vec<libc::pollfd>,
    tokens: Vec<Token>,
    /// Position in `fds` of each descriptor, indexed by descriptor number (`u32::MAX`: absent).
    index: Vec<u32>,
}

/// The flag mapping, in one place.
#[must_use]
pub fn interests_to_poll(interest: Interest) -> libc::c_short {
    let mut ev = 0;
    if interest.read {
        ev |= libc::POLLIN | libc::POLLRDHUP;
    }
    if interest.write {
        ev |= libc::POLLOUT;
    }
    ev
}

/// Translate `revents` into the backend-neutral form.
#[must_use]
pub fn event_from_poll(revents: libc::c_short, token: Token) -> Event {
    Event {
        token,
        readable: revents & (libc::POLLIN | libc::POLLPRI) != 0,
        writable: revents & libc::POLLOUT != 0,
        hup: revents & (libc::POLLHUP | libc::POLLRDHUP) != 0,
        error: revents & (libc::POLLERR | libc::POLLNVAL) != 0,
    }
}

/// A disarmed entry keeps its slot with a negative descriptor (`!fd`, i.e. `-fd - 1`).
const fn disarmed(fd: RawFd) -> RawFd {
    !fd
}

impl Poll {
    fn slot(&self, fd: RawFd) -> io::Result<usize> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.index.get(i).copied())
            .filter(|&p| p != u32::MAX)
            .map(|p| p as usize)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    /// The pollfd array as the kernel will see it (for tests of the adapter).
    #[cfg(test)]
    fn entries(&self) -> &[libc::pollfd] {
        &self.fds
    }
}

impl Poller for Poll {
    const NAME: &'static str = "poll";
    const MODE: Mode = Mode::OneShot;

    fn new() -> io::Result<Self> {
        Ok(Self { fds: Vec::new(), tokens: Vec::new(), index: Vec::new() })
    }

    fn add(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let i = usize::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        if self.index.len() <= i {
            self.index.resize(i + 1, u32::MAX);
        }
        if self.index[i] != u32::MAX {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        self.index[i] = u32::try_from(self.fds.len()).map_err(|_| io::Error::from_raw_os_error(libc::ENOSPC))?;
        let events = interests_to_poll(interest);
        self.fds.push(libc::pollfd { fd: if events == 0 { disarmed(fd) } else { fd }, events, revents: 0 });
        self.tokens.push(token);
        Ok(())
    }

    fn rearm(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let p = self.slot(fd)?;
        let events = interests_to_poll(interest);
        self.fds[p] = libc::pollfd { fd: if events == 0 { disarmed(fd) } else { fd }, events, revents: 0 };
        self.tokens[p] = token;
        Ok(())
    }

    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        let p = self.slot(fd)?;
        self.fds.swap_remove(p);
        self.tokens.swap_remove(p);
        self.index[fd as usize] = u32::MAX;
        if let Some(moved) = self.fds.get(p) {
            let mfd = if moved.fd < 0 { !moved.fd } else { moved.fd };
            self.index[mfd as usize] = p as u32;
        }
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        let ms = timeout_ms(timeout);
        let n = retry_eintr(|| {
            // SAFETY: the pointer and length describe our live pollfd array.
            syscall!(poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms))
        })?;
        if n == 0 {
            return Ok(());
        }
        for (pfd, &token) in self.fds.iter_mut().zip(&self.tokens) {
            if pfd.revents != 0 {
                events.push(event_from_poll(pfd.revents, token));
                // One-shot: silent until re-armed.
                pfd.fd = disarmed(pfd.fd);
                pfd.revents = 0;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventfd::EventFd;
    use std::os::fd::AsRawFd;

    #[test]
    fn mapping() {
        assert_eq!(interests_to_poll(Interest::NONE), 0);
        assert_ne!(interests_to_poll(Interest::READ) & libc::POLLIN, 0);
        assert_eq!(interests_to_poll(Interest::READ) & libc::POLLOUT, 0);
        assert_ne!(interests_to_poll(Interest::WRITE) & libc::POLLOUT, 0);
        let e = event_from_poll(libc::POLLIN | libc::POLLHUP, 3);
        assert!(e.readable && e.hup && !e.writable && !e.error);
    }

    #[test]
    fn fired_descriptors_stay_silent_until_rearmed() {
        let efd = EventFd::new().unwrap();
        efd.notify().unwrap();
        let mut p = Poll::new().unwrap();
        p.add(efd.as_raw_fd(), 5, Interest::READ).unwrap();
        let mut ev = Vec::new();
        p.wait(&mut ev, Some(Duration::from_millis(100))).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].token, 5);
        // Still readable, but one-shot: nothing until rearm.
        p.wait(&mut ev, Some(Duration::ZERO)).unwrap();
        assert!(ev.is_empty(), "disarmed descriptor reported again: {ev:?}");
        assert!(p.entries()[0].fd < 0);
        p.rearm(efd.as_raw_fd(), 6, Interest::READ).unwrap();
        p.wait(&mut ev, Some(Duration::ZERO)).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].token, 6);
    }

    #[test]
    fn delete_keeps_the_index_consistent() {
        let a = EventFd::new().unwrap();
        let b = EventFd::new().unwrap();
        let c = EventFd::new().unwrap();
        let mut p = Poll::new().unwrap();
        p.add(a.as_raw_fd(), 1, Interest::READ).unwrap();
        p.add(b.as_raw_fd(), 2, Interest::READ).unwrap();
        p.add(c.as_raw_fd(), 3, Interest::READ).unwrap();
        p.delete(a.as_raw_fd()).unwrap();
        c.notify().unwrap();
        let mut ev = Vec::new();
        p.wait(&mut ev, Some(Duration::ZERO)).unwrap();
        assert_eq!(ev.iter().map(|e| e.token).collect::<Vec<_>>(), vec![3]);
        p.rearm(c.as_raw_fd(), 3, Interest::NONE).unwrap();
        p.delete(c.as_raw_fd()).unwrap();
        assert!(p.delete(c.as_raw_fd()).is_err());
        assert_eq!(p.entries().len(), 1);
    }
}
