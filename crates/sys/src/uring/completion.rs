//! Completions as the worker sees them, and the receive buffers they lend.

use std::io;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};

use io_uring::cqueue;
use tracing::{debug, warn};

use super::ops::{Kind, Owned};
use super::{HeldBuf, OpId, Ring, SendBuf, PROBE, UNTRACKED};
use crate::slab::Key;

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
    /// [`Ring::send_held`] (final completion): the receive buffer, back from the kernel.
    /// `advance` it by the result; [`Ring::release`] it once done with it.
    pub held: Option<HeldBuf>,
    /// Receive: the provided buffer holding the data (read it with [`Ring::data`]).
    buf: Option<(u16, u32)>,
    /// The ring that produced it, and its number there: its buffer is readable only until the
    /// ring hands out the next completion.
    ring: u64,
    seq: u64,
}

impl<T: Copy> Ring<T> {
    /// The next completion, or `None` once the CQ is empty. Gives back the receive buffer
    /// lent by the previous one.
    pub fn next_completion(&mut self) -> Option<Completion<T>> {
        self.give_back_lent();
        loop {
            if self.batch_pos >= self.batch.len() && !self.refill() {
                return None;
            }
            let cqe = self.batch[self.batch_pos].clone();
            self.batch_pos += 1;
            if let Some(c) = self.complete(&cqe) {
                return Some(c);
            }
        }
    }

    /// The bytes a receive completion delivered: empty for any other completion, and for one
    /// that is not the last completion this ring handed out (its buffer is back in the ring).
    #[must_use]
    pub fn data(&self, c: &Completion<T>) -> &[u8] {
        match self.lent_by(c) {
            Some((bid, len)) => self.bufs.slice(bid, len),
            None => &[],
        }
    }

    /// Keep the receive buffer of completion `c` (the one just handed out) out of the ring:
    /// it is not given back at the next call, and its bytes can be sent as they are with
    /// [`Ring::send_held`]. `None` if `c` carries no buffer (or is not the last completion
    /// this ring handed out).
    pub fn hold(&mut self, c: &Completion<T>) -> Option<HeldBuf> {
        match self.lent_by(c) {
            Some((bid, len)) if len > 0 => {
                self.lent = None;
                Some(HeldBuf { ring: self.id, bid, len, off: 0 })
            }
            _ => None,
        }
    }

    /// The buffer `c` lends, if `c` is this ring's last completion and lends one. A
    /// completion of another ring, or one kept past the next, is refused (and logged).
    fn lent_by(&self, c: &Completion<T>) -> Option<(u16, u32)> {
        let (bid, len) = c.buf?;
        if c.ring != self.id {
            warn!("a completion of io_uring #{} was handed to io_uring #{}: refused", c.ring, self.id);
            return None;
        }
        if self.lent != Some((bid, c.seq)) {
            warn!(
                "io_uring #{}: completion {} read after the next one (its buffer is back in the ring)",
                self.id, c.seq
            );
            return None;
        }
        Some((bid, len))
    }

    fn refill(&mut self) -> bool {
        self.batch.clear();
        self.batch_pos = 0;
        let cap = self.batch.capacity().max(1);
        let batch = &mut self.batch;
        // Dropping the queue publishes the new head: the CQ space is free again at once.
        self.uring.with_cq(|cq| batch.extend(cq.take(cap)));
        !self.batch.is_empty()
    }

    fn complete(&mut self, cqe: &cqueue::Entry) -> Option<Completion<T>> {
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
        let zc_slot = if self.send_zc_min == usize::MAX { None } else { self.ops.get_mut(id) };
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
            self.ops.get(id).map(|s| (s.kind, s.op, Owned::Nothing))
        } else {
            self.ops.remove(id).map(|s| (s.kind, s.op, s.owned))
        };
        let Some((kind, op, owned)) = found else {
            // Cannot happen (slots live until their final CQE); never read or keep its buffer.
            warn!("io_uring completion for an unknown request {ud:#x} (result {res})");
            if let Some(b) = bid {
                if self.bufs.take(b) {
                    self.bufs.give(b);
                }
            }
            return None;
        };
        let accepted = (kind == Kind::Accept && res >= 0).then(|| {
            // SAFETY: a successful accept completion carries a new descriptor nobody else owns.
            TcpStream::from(unsafe { OwnedFd::from_raw_fd(res) })
        });
        self.seq += 1;
        let buf = bid.and_then(|b| self.bufs.take(b).then_some((b, res.max(0) as u32)));
        self.lent = buf.map(|(b, _)| (b, self.seq));
        let result = if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res as u32) };
        let (sent, held) = match owned {
            Owned::Send(b) => (Some(b), None),
            Owned::Held(h) => (None, Some(h)),
            Owned::Nothing | Owned::Addr(_) => (None, None),
        };
        Some(Completion { id, op, result, more, accepted, sent, held, buf, ring: self.id, seq: self.seq })
    }

    pub(super) fn give_back_lent(&mut self) {
        if let Some((bid, _)) = self.lent.take() {
            self.bufs.give(bid);
        }
    }
}
