//! Completions as the worker sees them: reaping the CQ, matching each CQE with its op-table
//! entry, and lending the receive buffer it names until the next completion.

use std::io;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};

use io_uring::cqueue;
use tracing::{debug, warn};

use super::bufring::BufRing;
use super::ops::{Kind, OpId, Owned, Slot, PROBE, UNTRACKED};
use super::submit::Uring;
use super::tokens::{HeldBuf, SendBuf};
use crate::slab::{Key, Slab};

/// One completion, as handed to the worker.
#[derive(Debug)]
pub struct Completion<T> {
    pub id: OpId,
    /// The caller's tag given when the request was queued.
    pub op: T,
    /// Bytes transferred (receive, send), or the error.
    pub result: io::Result<u32>,
    /// The request is still armed (multishot): more completions will come for `id`.
    pub more: bool,
    /// Accept: the new connection.
    pub accepted: Option<TcpStream>,
    /// Send (final completion): the buffer, back from the kernel as it was given; the
    /// result says how many of its pending bytes were sent.
    pub sent: Option<SendBuf>,
    /// `Ring::send_held` (final completion): the receive buffer, back from the kernel.
    /// `advance` it by the result; `Ring::release` it once done with it.
    pub held: Option<HeldBuf>,
    /// Receive: the provided buffer holding the data (read it with `Ring::data`).
    buf: Option<(u16, u32)>,
    /// The ring that produced it, and its number there: its buffer is readable only until the
    /// ring hands out the next completion.
    ring: u64,
    seq: u64,
}

/// The completion side of one ring.
pub(super) struct Completions {
    /// The ring's id, stamped on its completions and held buffers.
    ring: u64,
    /// CQEs copied out of the CQ, handed out one by one.
    batch: Vec<cqueue::Entry>,
    pos: usize,
    /// The receive buffer lent by the last completion, with that completion's number.
    lent: Option<(u16, u64)>,
    /// Number of the last completion handed out.
    seq: u64,
    /// Zero-copy sends completed (notification received).
    zc_sends: u64,
}

impl Completions {
    pub fn new(ring: u64, capacity: usize) -> Self {
        Self { ring, batch: Vec::with_capacity(capacity), pos: 0, lent: None, seq: 0, zc_sends: 0 }
    }

    /// CQEs already reaped and not yet handed out.
    pub fn pending(&self) -> bool {
        self.pos < self.batch.len()
    }

    pub fn zero_copy_sends(&self) -> u64 {
        self.zc_sends
    }

    /// Give the buffer lent by the last completion back to the kernel.
    pub fn give_back(&mut self, bufs: &mut BufRing) {
        if let Some((bid, _)) = self.lent.take() {
            bufs.give(bid);
        }
    }

    /// The next completion, or `None` once the CQ is empty. Gives back the receive buffer
    /// lent by the previous one. `zc`: zero-copy sends may be in flight.
    pub fn next<T: Copy>(
        &mut self,
        uring: &mut Uring,
        ops: &mut Slab<Slot<T>>,
        bufs: &mut BufRing,
        zc: bool,
    ) -> Option<Completion<T>> {
        self.give_back(bufs);
        loop {
            if !self.pending() && !self.refill(uring) {
                return None;
            }
            let cqe = self.batch[self.pos].clone();
            self.pos += 1;
            if let Some(c) = self.complete(&cqe, ops, bufs, zc) {
                return Some(c);
            }
        }
    }

    /// The buffer `c` lends, if `c` is this ring's last completion and lends one. A
    /// completion of another ring, or one kept past the next, is refused (and logged).
    pub fn lent_by<T>(&self, c: &Completion<T>) -> Option<(u16, u32)> {
        let (bid, len) = c.buf?;
        if c.ring != self.ring {
            warn!("a completion of io_uring #{} was handed to io_uring #{}: refused", c.ring, self.ring);
            return None;
        }
        if self.lent != Some((bid, c.seq)) {
            warn!(
                "io_uring #{}: completion {} read after the next one (its buffer is back in the ring)",
                self.ring, c.seq
            );
            return None;
        }
        Some((bid, len))
    }

    /// Keep the buffer of `c` (this ring's last completion) out of the ring as a token.
    pub fn hold<T>(&mut self, c: &Completion<T>) -> Option<HeldBuf> {
        match self.lent_by(c) {
            Some((bid, len)) if len > 0 => {
                self.lent = None;
                Some(HeldBuf { ring: self.ring, bid, len, off: 0 })
            }
            _ => None,
        }
    }

    fn refill(&mut self, uring: &mut Uring) -> bool {
        self.batch.clear();
        self.pos = 0;
        let cap = self.batch.capacity().max(1);
        let batch = &mut self.batch;
        uring.with_cq(|cq| batch.extend(cq.take(cap)));
        !self.batch.is_empty()
    }

    fn complete<T: Copy>(
        &mut self,
        cqe: &cqueue::Entry,
        ops: &mut Slab<Slot<T>>,
        bufs: &mut BufRing,
        zc: bool,
    ) -> Option<Completion<T>> {
        let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
        let bid = cqueue::buffer_select(flags);
        if ud == UNTRACKED || ud == PROBE {
            if res < 0 && !matches!(-res, libc::ENOENT | libc::EALREADY | libc::ECANCELED) {
                debug!("io_uring cancel/close: {}", io::Error::from_raw_os_error(-res));
            }
            return None;
        }
        let id = Key::from_u64(ud);
        let mut more = cqueue::more(flags);
        let mut res = res;
        // Zero-copy sends only exist when enabled; otherwise no extra lookup per completion.
        let zc_slot = if zc { ops.get_mut(id) } else { None };
        if let Some(slot) = zc_slot.filter(|s| s.kind == Kind::SendZc) {
            if cqueue::notif(flags) {
                // The kernel is done with the buffer: now the send is over.
                res = slot.zc_result.unwrap_or(0);
                self.zc_sends += 1;
            } else if more {
                // The result; the notification follows. Keep the buffer.
                slot.zc_result = Some(res);
                return None;
            }
            // Else a result with no notification to follow (nothing was sent): final too.
            more = false;
        }
        let found = if more {
            ops.get(id).map(|s| (s.kind, s.op, Owned::Nothing))
        } else {
            ops.remove(id).map(|s| (s.kind, s.op, s.owned))
        };
        let Some((kind, op, owned)) = found else {
            // Cannot happen (slots live until their final CQE); never read or keep its buffer.
            warn!("io_uring completion for an unknown request {ud:#x} (result {res})");
            if let Some(b) = bid {
                if bufs.take(b) {
                    bufs.give(b);
                }
            }
            return None;
        };
        let accepted = (kind == Kind::Accept && res >= 0).then(|| {
            // SAFETY: a successful accept completion carries a new descriptor nobody else owns.
            TcpStream::from(unsafe { OwnedFd::from_raw_fd(res) })
        });
        self.seq += 1;
        let buf = bid.and_then(|b| bufs.take(b).then_some((b, res.max(0) as u32)));
        self.lent = buf.map(|(b, _)| (b, self.seq));
        let result = if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res as u32) };
        let (sent, held) = match owned {
            Owned::Send(b) => (Some(b), None),
            Owned::Held(h) => (None, Some(h)),
            Owned::Nothing | Owned::Addr(_) => (None, None),
        };
        Some(Completion { id, op, result, more, accepted, sent, held, buf, ring: self.ring, seq: self.seq })
    }
}
