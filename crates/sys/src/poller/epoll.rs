//! epoll(7) in its three flavours: edge-triggered one-shot (the default), level-triggered
//! (the textbook loop) and edge-triggered without one-shot.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{timeout_ms, Event, Interest, Mode, Poller, Token};
use crate::{retry_eintr, syscall};

const MAX_EVENTS: usize = 1024;

/// An epoll instance parametrised by how it meets the one-shot contract.
pub struct EpollBase<const MODE: u8> {
    fd: OwnedFd,
    buf: Vec<libc::epoll_event>,
    /// Level mode only: the interest currently registered per descriptor, so that `rearm` is a
    /// no-op when nothing changed (the textbook loop never calls MOD needlessly).
    current: Vec<u8>,
}

/// `--backend epoll`: EPOLLET | EPOLLONESHOT, re-armed with EPOLL_CTL_MOD.
pub type Epoll = EpollBase<ONESHOT>;
/// `--backend epoll-lt`: level-triggered, no one-shot.
pub type EpollLt = EpollBase<LEVEL>;
/// `--backend epoll-et`: edge-triggered, registered once for read and write, never re-armed.
pub type EpollEt = EpollBase<EDGE>;

pub const ONESHOT: u8 = 0;
pub const LEVEL: u8 = 1;
pub const EDGE: u8 = 2;

/// The flag mapping, in one place.
#[must_use]
pub fn interests_to_epoll(mode: Mode, interest: Interest) -> u32 {
    // EPOLLRDHUP goes with read interest only: a level-triggered descriptor whose peer
    // half-closed would otherwise report it forever while the loop is not reading.
    let read = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
    let write = libc::EPOLLOUT as u32;
    let dirs = if interest.read { read } else { 0 } | if interest.write { write } else { 0 };
    match mode {
        Mode::OneShot => dirs | (libc::EPOLLET | libc::EPOLLONESHOT) as u32,
        Mode::Level => dirs,
        // Edge without one-shot: always both directions, the loop tracks what it wants.
        Mode::Edge => read | write | libc::EPOLLET as u32,
    }
}

/// Translate a kernel event into the backend-neutral form.
#[must_use]
pub fn event_from_epoll(flags: u32, token: Token) -> Event {
    Event {
        token,
        readable: flags & (libc::EPOLLIN | libc::EPOLLPRI) as u32 != 0,
        writable: flags & libc::EPOLLOUT as u32 != 0,
        hup: flags & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0,
        error: flags & libc::EPOLLERR as u32 != 0,
    }
}

const fn mode_of(m: u8) -> Mode {
    match m {
        ONESHOT => Mode::OneShot,
        LEVEL => Mode::Level,
        _ => Mode::Edge,
    }
}

const fn interest_bits(i: Interest) -> u8 {
    (i.read as u8) | ((i.write as u8) << 1)
}

impl<const M: u8> EpollBase<M> {
    fn ctl(&self, op: libc::c_int, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: interests_to_epoll(mode_of(M), interest), u64: token };
        // SAFETY: `self.fd` is our epoll instance; `ev` is a live epoll_event for the call.
        syscall!(epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev))?;
        Ok(())
    }

    fn remember(&mut self, fd: RawFd, interest: Interest) {
        if M == LEVEL {
            let i = usize::try_from(fd).unwrap_or(0);
            if self.current.len() <= i {
                self.current.resize(i + 1, 0);
            }
            self.current[i] = interest_bits(interest);
        }
    }
}

impl<const M: u8> Poller for EpollBase<M> {
    const NAME: &'static str = match M {
        ONESHOT => "epoll",
        LEVEL => "epoll-lt",
        _ => "epoll-et",
    };
    const MODE: Mode = mode_of(M);

    fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        Ok(Self {
            // SAFETY: epoll_create1 returned a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            buf: Vec::with_capacity(MAX_EVENTS),
            current: Vec::new(),
        })
    }

    fn add(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)?;
        self.remember(fd, interest);
        Ok(())
    }

    fn rearm(&mut self, fd: RawFd, token: Token, interest: Interest) -> io::Result<()> {
        match M {
            ONESHOT => self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest),
            LEVEL => {
                let known = usize::try_from(fd).ok().and_then(|i| self.current.get(i).copied());
                if known == Some(interest_bits(interest)) {
                    return Ok(());
                }
                self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)?;
                self.remember(fd, interest);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: `self.fd` is our epoll instance; DEL ignores the event pointer.
        syscall!(epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()))?;
        Ok(())
    }

    fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        let ms = timeout_ms(timeout);
        let cap = self.buf.capacity();
        let n = retry_eintr(|| {
            // SAFETY: the kernel writes at most `cap` entries into our buffer's spare capacity.
            syscall!(epoll_wait(self.fd.as_raw_fd(), self.buf.as_mut_ptr(), cap as libc::c_int, ms))
        })?;
        // SAFETY: epoll_wait initialised the first `n` (<= cap) entries.
        unsafe { self.buf.set_len(n as usize) };
        events.extend(self.buf.iter().map(|e| event_from_epoll(e.events, e.u64)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oneshot_mapping_is_edge_oneshot_with_only_the_asked_directions() {
        let f = interests_to_epoll(Mode::OneShot, Interest::READ);
        assert_ne!(f & libc::EPOLLET as u32, 0);
        assert_ne!(f & libc::EPOLLONESHOT as u32, 0);
        assert_ne!(f & libc::EPOLLIN as u32, 0);
        assert_eq!(f & libc::EPOLLOUT as u32, 0);
        let f = interests_to_epoll(Mode::OneShot, Interest::BOTH);
        assert_ne!(f & libc::EPOLLOUT as u32, 0);
    }

    #[test]
    fn level_mapping_has_no_edge_or_oneshot() {
        let f = interests_to_epoll(Mode::Level, Interest::WRITE);
        assert_eq!(f & (libc::EPOLLET | libc::EPOLLONESHOT) as u32, 0);
        assert_eq!(f & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32, 0, "no read-side reports while not reading");
        assert_ne!(f & libc::EPOLLOUT as u32, 0);
    }

    #[test]
    fn edge_mapping_watches_both_directions_always() {
        let f = interests_to_epoll(Mode::Edge, Interest::NONE);
        assert_ne!(f & libc::EPOLLET as u32, 0);
        assert_eq!(f & libc::EPOLLONESHOT as u32, 0);
        assert_ne!(f & libc::EPOLLIN as u32, 0);
        assert_ne!(f & libc::EPOLLOUT as u32, 0);
    }

    #[test]
    fn kernel_flags_translate() {
        let e = event_from_epoll((libc::EPOLLIN | libc::EPOLLRDHUP) as u32, 7);
        assert_eq!(e, Event { token: 7, readable: true, writable: false, hup: true, error: false });
        let e = event_from_epoll((libc::EPOLLERR | libc::EPOLLOUT) as u32, 9);
        assert!(e.error && e.writable && !e.readable);
    }
}
