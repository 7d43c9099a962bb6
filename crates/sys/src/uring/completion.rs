//! Completions as the worker sees them: reaping the CQ, matching each CQE with its op-table
//! entry, and lending the receive buffer(s) it names until the next completion.

use std::io;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd};

use io_uring::cqueue;
use tracing::{debug, warn};

use super::bufring::BufRing;
use super::fixed::FixedFd;
use super::ops::{Kind, OpId, Owned, Slot, PROBE, PROBE_END, UNTRACKED};
use super::submit::Uring;
use super::tokens::{HeldBuf, Seg, Segs, SendBuf};
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
    /// Direct accept (`Ring::accept_multi_direct`): the new connection's fixed table slot.
    pub accepted_fixed: Option<FixedFd>,
    /// Send (final completion): the buffer, back from the kernel as it was given; the
    /// result says how many of its pending bytes were sent.
    pub sent: Option<SendBuf>,
    /// `Ring::send_held` (final completion): the receive buffer, back from the kernel.
    /// `advance` it by the result; `Ring::release` it once done with it.
    pub held: Option<HeldBuf>,
    /// Receive: how many provided buffers hold the data (more than one for a bundle; read
    /// them with `Ring::chunks`, or `Ring::data` for one).
    pub buffers: u16,
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
    /// The pieces of receive buffers lent by the last completion, in order...
    lent: Vec<Seg>,
    /// ...and that completion's number (0: none lent).
    lent_seq: u64,
    /// Number of the last completion handed out.
    seq: u64,
    /// Zero-copy sends completed (notification received).
    zc_sends: u64,
}

impl Completions {
    pub fn new(ring: u64, capacity: usize) -> Self {
        Self { ring, batch: Vec::with_capacity(capacity), pos: 0, lent: Vec::new(), lent_seq: 0, seq: 0, zc_sends: 0 }
    }

    /// CQEs already reaped and not yet handed out.
    pub fn pending(&self) -> bool {
        self.pos < self.batch.len()
    }

    pub fn zero_copy_sends(&self) -> u64 {
        self.zc_sends
    }

    /// Give the buffers lent by the last completion back to the kernel.
    pub fn give_back(&mut self, bufs: &mut BufRing) {
        if !self.lent.is_empty() {
            bufs.give_back(&self.lent);
            self.lent.clear();
        }
        self.lent_seq = 0;
    }

    /// The next completion, or `None` once the CQ is empty. Gives back the receive buffer
    /// lent by the previous one. `zc`: zero-copy sends may be in flight; `bundle`: receives
    /// may span several buffers.
    pub fn next<T: Copy>(
        &mut self,
        uring: &mut Uring,
        ops: &mut Slab<Slot<T>>,
        bufs: &mut BufRing,
        zc: bool,
        bundle: bool,
    ) -> Option<Completion<T>> {
        self.give_back(bufs);
        loop {
            if !self.pending() && !self.refill(uring) {
                return None;
            }
            let cqe = self.batch[self.pos].clone();
            self.pos += 1;
            if let Some(c) = self.complete(&cqe, ops, bufs, zc, bundle) {
                return Some(c);
            }
        }
    }

    /// The pieces `c` lends, if `c` is this ring's last completion and lends any. A
    /// completion of another ring, or one kept past the next, is refused (and logged).
    pub fn lent_by<T>(&self, c: &Completion<T>) -> Option<&[Seg]> {
        if c.buffers == 0 {
            return None;
        }
        if c.ring != self.ring {
            warn!("a completion of io_uring #{} was handed to io_uring #{}: refused", c.ring, self.ring);
            return None;
        }
        if self.lent_seq != c.seq {
            warn!(
                "io_uring #{}: completion {} read after the next one (its buffer is back in the ring)",
                self.ring, c.seq
            );
            return None;
        }
        Some(&self.lent)
    }

    /// Keep the pieces `c` (this ring's last completion) lends out of the ring as a token
    /// (`None` if it lends no bytes).
    pub fn hold<T>(&mut self, c: &Completion<T>) -> Option<HeldBuf> {
        let lent = self.lent_by(c)?;
        if lent.iter().all(|s| s.len == 0) {
            return None;
        }
        let held = HeldBuf::new(self.ring, Segs::from_slice(lent)?);
        // The token keeps the pieces' references: nothing is given back at the next call.
        self.lent.clear();
        self.lent_seq = 0;
        Some(held)
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
        bundle: bool,
    ) -> Option<Completion<T>> {
        let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
        let bid = cqueue::buffer_select(flags);
        if ud == UNTRACKED || ud == PROBE || ud == PROBE_END {
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
            // Cannot happen (slots live until their final CQE); never read its buffers, but
            // give them back if the bookkeeping agrees they were lent.
            warn!("io_uring completion for an unknown request {ud:#x} (result {res})");
            if let Some(b) = bid {
                let mut segs = Vec::new();
                if bufs.take(b, res, cqueue::buffer_more(flags), bundle, &mut segs).is_ok() {
                    bufs.give_back(&segs);
                }
            }
            return None;
        };
        let accepted = (kind == Kind::Accept && res >= 0).then(|| {
            // SAFETY: a successful accept completion carries a new descriptor nobody else owns.
            TcpStream::from(unsafe { OwnedFd::from_raw_fd(res) })
        });
        let accepted_fixed =
            (kind == Kind::AcceptDirect && res >= 0).then_some(FixedFd { ring: self.ring, slot: res as u32 });
        self.seq += 1;
        let mut result = if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res as u32) };
        let mut buffers = 0;
        if let Some(b) = bid {
            debug_assert!(self.lent.is_empty());
            match bufs.take(b, res, cqueue::buffer_more(flags), bundle, &mut self.lent) {
                Ok(()) => {
                    buffers = u16::try_from(self.lent.len()).unwrap_or(u16::MAX);
                    self.lent_seq = if self.lent.is_empty() { 0 } else { self.seq };
                }
                Err(e) => {
                    warn!(
                        "io_uring #{}: a receive completion contradicts the buffer ring ({}): its bytes are dropped",
                        self.ring, e.0
                    );
                    result = Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("io_uring buffer ring inconsistency: {}", e.0),
                    ));
                }
            }
        }
        let (sent, held) = match owned {
            Owned::Send(b) => (Some(b), None),
            Owned::Held(h) | Owned::HeldMsg(h, _) => (None, Some(h)),
            Owned::Nothing | Owned::Addr(_) | Owned::Opt(_) => (None, None),
        };
        Some(Completion {
            id,
            op,
            result,
            more,
            accepted,
            accepted_fixed,
            sent,
            held,
            buffers,
            ring: self.ring,
            seq: self.seq,
        })
    }
}
