//! io_uring: the ring, its op table and its provided-buffer ring. Every `unsafe` the io_uring
//! worker needs is here; [`crate::uring`] drives it through the safe API of [`Ring`].
//!
//! # Ownership contract
//! Every request the kernel holds is an entry of the op table, a generational slab whose key
//! is the request's user_data. The entry is created when the SQE is queued and removed only
//! when its final CQE (no `IORING_CQE_F_MORE`) arrives. Memory the kernel may touch for a
//! request lives in that entry (a send's buffer) or in the provided-buffer ring (receive
//! buffers), so:
//! - a send buffer moves into the ring with [`Ring::send`] and comes back only in the
//!   request's final [`Completion`], whatever happened to the connection meanwhile;
//! - a receive buffer is lent between the completion that names it and the next call that
//!   takes `&mut Ring` (which gives it back to the kernel); [`Ring::data`] borrows the ring,
//!   so the borrow checker ends every read before the buffer is reused;
//! - unless [`Ring::hold`] keeps it out of the ring as a [`HeldBuf`] (the proxy's zero-copy
//!   relay): the token moves into a [`Ring::send_held`] request, comes back in its final
//!   completion, and only [`Ring::release`], which consumes it, gives the buffer back;
//! - a connect's socket address lives in its entry until the final completion;
//! - dropping the ring cancels and reaps every request first, and leaks (never frees) what
//!   the kernel still holds after a bounded wait.
//!
//! Requests whose completion nobody needs (cancellations, closes) carry [`UNTRACKED`] as
//! user_data and own nothing.

mod bufring;
mod setup;

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd};
use io_uring::{cqueue, opcode, squeue, IoUring};
use ringpoll_proto::OutBuf;
use tracing::{debug, warn};

use crate::slab::{Key, Slab};
use bufring::{BufRing, BGID};
use setup::{Enter, Wait};

/// Identifies one request in flight: its user_data (op-table slot and generation).
pub type OpId = Key;

/// user_data of requests whose completion is ignored.
const UNTRACKED: u64 = u64::MAX;
/// user_data of the start-up probe for multishot receive byte limits.
const PROBE: u64 = u64::MAX - 1;

/// How long an enter waits for a batch of completions before settling for fewer: long
/// enough for a busy worker to gather requests into one system call, short against any
/// network round trip (and only paid when the load drops, see `uring::run`).
const BATCH_WAIT: Duration = Duration::from_micros(25);

/// How long dropping a ring waits for cancelled requests to complete.
const QUIESCE: Duration = Duration::from_secs(1);

/// Sizes of a worker's ring.
#[derive(Clone, Copy, Debug)]
pub struct RingConfig {
    pub sq_entries: u32,
    pub cq_entries: u32,
    pub buf_count: u16,
    pub buf_size: u32,
    /// Sends of at least this many bytes use IORING_OP_SEND_ZC (0: never).
    pub send_zc_min: usize,
}

/// Why a ring could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// io_uring (or a feature the worker needs) is missing or forbidden: one line naming the
    /// cause and `--backend epoll`.
    Unavailable(String),
    /// A size in the configuration is out of range.
    Invalid(String),
    /// Anything else.
    Io(io::Error),
}

/// What the kernel does for a request (the caller's `T` says what it is for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Accept,
    Recv,
    Send,
    /// IORING_OP_SEND_ZC: two completions, the result (flagged MORE) and then a notification
    /// (flagged NOTIF) once the kernel no longer reads the buffer. The worker sees one
    /// completion, at the notification, with the first one's result.
    SendZc,
    Poll,
    Connect,
}

/// Memory a request's SQE points to, owned by its op-table entry until the final completion.
enum Owned {
    Nothing,
    /// A send's buffer.
    Send(OutBuf),
    /// A send straight out of a receive buffer.
    Held(HeldBuf),
    /// A connect's address (boxed: the slab may move its entries). Only the kernel reads it.
    Addr(#[allow(dead_code)] Box<socket2::SockAddr>),
}

struct Slot<T> {
    kind: Kind,
    op: T,
    owned: Owned,
    /// Zero-copy send: the result of its first completion, held until the notification that
    /// the kernel is done with the buffer.
    zc_result: Option<i32>,
}

impl<T> Slot<T> {
    fn new(kind: Kind, op: T, owned: Owned) -> Self {
        Self { kind, op, owned, zc_result: None }
    }
}

/// A receive buffer kept out of the provided-buffer ring after its completion, so that its
/// bytes can be sent without a copy ([`Ring::hold`]). It is a token, not a reference: the bytes
/// stay in the ring's memory. Give it back with [`Ring::release`]; dropping it instead leaves
/// the buffer out of the ring for good (no memory is unsafe, the ring just has one less).
#[derive(Debug)]
#[must_use = "a held receive buffer goes back to the ring only through Ring::release"]
pub struct HeldBuf {
    bid: u16,
    /// Bytes of data in the buffer.
    len: u32,
    /// Bytes of it already sent.
    off: u32,
}

impl HeldBuf {
    /// Bytes not yet sent.
    #[must_use]
    pub fn len(&self) -> usize {
        (self.len - self.off) as usize
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == self.off
    }

    /// Record that the first `n` unsent bytes were sent (clamped to what is left).
    pub fn advance(&mut self, n: usize) {
        self.off += u32::try_from(n).unwrap_or(u32::MAX).min(self.len - self.off);
    }
}

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
    /// Send (final completion): the buffer, back from the kernel. `advance` it by the result.
    pub sent: Option<OutBuf>,
    /// [`Ring::send_held`] (final completion): the receive buffer, back from the kernel.
    /// `advance` it by the result; [`Ring::release`] it once done with it.
    pub held: Option<HeldBuf>,
    /// Receive: the provided buffer holding the data (read it with [`Ring::data`]).
    buf: Option<(u16, u32)>,
}

/// One worker's io_uring. Not `Send`: the ring is single-issuer and its registered fd is only
/// valid in the thread that created it.
pub struct Ring<T: Copy> {
    // Field order is drop order: the ring goes before the buffer memory it points to.
    uring: IoUring,
    enter: Enter,
    bufs: BufRing,
    ops: Slab<Slot<T>>,
    /// Entries that did not fit in a full submission queue (kept in order).
    backlog: VecDeque<squeue::Entry>,
    /// Completions copied out of the CQ, handed out one by one.
    batch: Vec<cqueue::Entry>,
    batch_pos: usize,
    /// The receive buffer lent by the last completion.
    lent: Option<u16>,
    /// The kernel caps multishot receives at a byte count (Linux 6.17+).
    recv_limit: bool,
    /// The kernel takes a minimum wait time with a completion count (Linux 6.12+).
    min_timeout: bool,
    /// Sends queued since the last enter.
    sends_queued: u32,
    /// Sends of at least this many bytes go zero-copy (`usize::MAX`: never).
    send_zc_min: usize,
    /// Zero-copy sends completed (notification received).
    zc_sends: u64,
    info: String,
    _single_thread: PhantomData<*const ()>,
}

impl<T: Copy> Ring<T> {
    /// Set up the ring (setup flags with fallback, probe, buffer ring, registered fd).
    pub fn new(cfg: RingConfig) -> Result<Self, SetupError> {
        if !cfg.buf_count.is_power_of_two() || cfg.buf_count > 32768 {
            return Err(SetupError::Invalid(format!(
                "--uring-bufs must be a power of two between 1 and 32768 (got {})",
                cfg.buf_count
            )));
        }
        if cfg.buf_size == 0 || cfg.buf_size > (1 << 30) {
            return Err(SetupError::Invalid(format!("--uring-buf-size out of range (got {})", cfg.buf_size)));
        }
        let sq = cfg.sq_entries.clamp(1, 32768);
        let cq = cfg.cq_entries.clamp(sq.next_power_of_two(), 65536);
        let (uring, flags) = setup::build(sq, cq)?;
        setup::check(&uring)?;
        let bufs = BufRing::new(cfg.buf_count, cfg.buf_size).map_err(|e| {
            SetupError::Io(io::Error::new(e.kind(), format!("mapping the io_uring receive buffers: {e}")))
        })?;
        if let Err(e) = bufs.register(&uring) {
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL | libc::EOPNOTSUPP) => setup::unavailable(&format!(
                    "registering a provided-buffer ring failed ({e}; needs Linux 5.19 or later)"
                )),
                Some(libc::ENOMEM) => setup::unavailable(&format!(
                    "registering the provided-buffer ring failed ({e}; try fewer --uring-bufs)"
                )),
                _ => SetupError::Io(io::Error::new(e.kind(), format!("registering the buffer ring: {e}"))),
            });
        }
        let enter = Enter::new(&uring);
        let mut uring = uring;
        let recv_limit = probe_recv_limit(&mut uring, &enter);
        let send_zc_min = match cfg.send_zc_min {
            0 => usize::MAX,
            _ if !setup::supports(&uring, opcode::SendZc::CODE) => {
                warn!("this kernel has no IORING_OP_SEND_ZC: zero-copy sends are off");
                usize::MAX
            }
            n => n,
        };
        let params = uring.params();
        let info = format!(
            "io_uring {flags}, sq {} cq {}, {}, {} x {} B receive buffers, receive byte limits {}, batched waits {}, \
             zero-copy sends {}",
            params.sq_entries(),
            params.cq_entries(),
            if enter.registered() { "registered ring fd" } else { "ring fd not registered" },
            cfg.buf_count,
            cfg.buf_size,
            if recv_limit { "supported" } else { "unsupported" },
            if params.is_feature_min_timeout() { "supported" } else { "unsupported" },
            if send_zc_min == usize::MAX { "off".to_string() } else { format!("from {send_zc_min} B") },
        );
        let batch = Vec::with_capacity(params.cq_entries() as usize);
        let min_timeout = params.is_feature_min_timeout();
        Ok(Self {
            uring,
            enter,
            bufs,
            ops: Slab::new(),
            backlog: VecDeque::new(),
            batch,
            batch_pos: 0,
            lent: None,
            recv_limit,
            min_timeout,
            sends_queued: 0,
            send_zc_min,
            zc_sends: 0,
            info,
            _single_thread: PhantomData,
        })
    }

    /// One line describing the setup (flags, sizes), for the log.
    #[must_use]
    pub fn describe(&self) -> &str {
        &self.info
    }

    /// Zero-copy sends completed so far.
    #[must_use]
    pub fn zero_copy_sends(&self) -> u64 {
        self.zc_sends
    }

    /// Requests in flight (including queued ones), not counting untracked ones.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Queue a multishot accept on `listener`; accepted sockets are blocking and close-on-exec.
    pub fn accept_multi(&mut self, listener: &TcpListener, op: T) -> OpId {
        let id = self.ops.insert(Slot::new(Kind::Accept, op, Owned::Nothing));
        let e = opcode::AcceptMulti::new(Fd(listener.as_raw_fd())).flags(libc::SOCK_CLOEXEC).build();
        self.push(e.user_data(id.to_u64()));
        id
    }

    /// Queue a multishot receive into the provided-buffer ring. With `limit` > 0 (and a
    /// kernel that supports it) the receive ends, without F_MORE, once it has delivered that
    /// many bytes: backpressure without the completions already queued overshooting it.
    pub fn recv_multi(&mut self, stream: &TcpStream, op: T, limit: u32) -> OpId {
        let id = self.ops.insert(Slot::new(Kind::Recv, op, Owned::Nothing));
        let mut e = opcode::RecvMulti::new(Fd(stream.as_raw_fd()), BGID).build();
        if self.recv_limit && limit > 0 {
            e = with_optlen(e, limit);
        }
        self.push(e.user_data(id.to_u64()));
        id
    }

    /// Whether [`Ring::recv_multi`] limits are honoured by this kernel.
    #[must_use]
    pub fn recv_limit_supported(&self) -> bool {
        self.recv_limit
    }

    /// Queue a send of `buf.pending()`; the ring owns `buf` until the final completion.
    pub fn send(&mut self, stream: &TcpStream, buf: OutBuf, op: T) -> OpId {
        let kind = if buf.pending().len() >= self.send_zc_min { Kind::SendZc } else { Kind::Send };
        let id = self.ops.insert(Slot::new(kind, op, Owned::Send(buf)));
        let pending = match self.ops.get(id).map(|s| &s.owned) {
            Some(Owned::Send(b)) => b.pending(),
            _ => &[],
        };
        let len = u32::try_from(pending.len()).unwrap_or(u32::MAX);
        // The pointer targets the Vec's heap block, which does not move when the slot does,
        // and nothing can mutate or free it before the final completion (module docs; for a
        // zero-copy send that is the notification, after which the kernel no longer reads it).
        let fd = Fd(stream.as_raw_fd());
        let e = if kind == Kind::SendZc {
            opcode::SendZc::new(fd, pending.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build()
        } else {
            opcode::Send::new(fd, pending.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build()
        };
        self.push(e.user_data(id.to_u64()));
        self.sends_queued = self.sends_queued.saturating_add(1);
        id
    }

    /// Keep the receive buffer of completion `c` (the one just handed out) out of the ring:
    /// it is not given back at the next call, and its bytes can be sent as they are with
    /// [`Ring::send_held`]. `None` if `c` carries no buffer.
    pub fn hold(&mut self, c: &Completion<T>) -> Option<HeldBuf> {
        match c.buf {
            Some((bid, len)) if self.lent == Some(bid) && len > 0 => {
                self.lent = None;
                Some(HeldBuf { bid, len, off: 0 })
            }
            _ => None,
        }
    }

    /// Queue a send of the unsent bytes of a held receive buffer; the request owns it until
    /// the final completion, which hands it back in [`Completion::held`].
    pub fn send_held(&mut self, stream: &TcpStream, held: HeldBuf, op: T) -> OpId {
        let (bid, len, off) = (held.bid, held.len, held.off as usize);
        let id = self.ops.insert(Slot::new(Kind::Send, op, Owned::Held(held)));
        let data = self.bufs.slice(bid, len);
        let pending = data.get(off..).unwrap_or(&[]);
        // The buffer is lent to us and owned by this request's entry: the kernel cannot pick
        // it for a receive, and nothing gives it back before the final completion.
        let e = opcode::Send::new(Fd(stream.as_raw_fd()), pending.as_ptr(), pending.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.push(e.user_data(id.to_u64()));
        self.sends_queued = self.sends_queued.saturating_add(1);
        id
    }

    /// Give a held receive buffer back to the kernel.
    pub fn release(&mut self, held: HeldBuf) {
        self.bufs.give(held.bid);
    }

    /// Queue a connect of `stream` to `addr` (the address lives in the request's entry).
    pub fn connect(&mut self, stream: &TcpStream, addr: SocketAddr, op: T) -> OpId {
        let addr = Box::new(socket2::SockAddr::from(addr));
        let (ptr, len) = (addr.as_ptr().cast::<libc::sockaddr>(), addr.len());
        let id = self.ops.insert(Slot::new(Kind::Connect, op, Owned::Addr(addr)));
        self.push(opcode::Connect::new(Fd(stream.as_raw_fd()), ptr, len).build().user_data(id.to_u64()));
        id
    }

    /// Queue a one-shot poll for readability (the wake-up eventfd).
    pub fn poll_readable(&mut self, fd: &impl AsRawFd, op: T) -> OpId {
        let id = self.ops.insert(Slot::new(Kind::Poll, op, Owned::Nothing));
        let e = opcode::PollAdd::new(Fd(fd.as_raw_fd()), libc::POLLIN as u32).build();
        self.push(e.user_data(id.to_u64()));
        id
    }

    /// Ask the kernel to cancel a request; its final completion (usually ECANCELED) follows.
    pub fn cancel(&mut self, id: OpId) {
        if self.ops.get(id).is_some() {
            self.push(opcode::AsyncCancel::new(id.to_u64()).build().user_data(UNTRACKED));
        }
    }

    /// Close a descriptor through the ring (no system call of its own). Call it once no
    /// request uses the descriptor any more, or the socket stays open until they end.
    pub fn close(&mut self, fd: OwnedFd) {
        let raw = fd.into_raw_fd();
        self.push(opcode::Close::new(Fd(raw)).build().user_data(UNTRACKED));
    }

    /// The bytes a receive completion delivered (empty for any other completion).
    #[must_use]
    pub fn data(&self, c: &Completion<T>) -> &[u8] {
        match c.buf {
            Some((bid, len)) if self.lent == Some(bid) => self.bufs.slice(bid, len),
            _ => &[],
        }
    }

    /// Submit everything queued and wait up to `max_wait` for completions (not at all when
    /// zero, or when queued work or unread completions remain). One `io_uring_enter`.
    ///
    /// With `batch` > 1 (and IORING_FEAT_MIN_TIMEOUT, Linux 6.12) the wait is for `batch`
    /// completions beyond those of the sends just submitted (sends that fit in the socket
    /// buffer complete during the submit), for at most [`BATCH_WAIT`], after which any one
    /// completion ends it. Otherwise the first completion ends it: a min-wait costs a timer
    /// (a VM exit on virtual machines), worth paying only when it saves wake-ups.
    pub fn enter(&mut self, max_wait: Duration, batch: u32) -> io::Result<()> {
        self.give_back_lent();
        self.flush_backlog();
        let busy = self.batch_pos < self.batch.len() || !self.backlog.is_empty();
        let sends = std::mem::take(&mut self.sends_queued);
        let wait = (!busy && !max_wait.is_zero()).then(|| {
            if self.min_timeout && batch > 1 {
                Wait { timeout: max_wait, min_complete: sends.saturating_add(batch), min_wait: BATCH_WAIT }
            } else {
                Wait { timeout: max_wait, min_complete: 1, min_wait: Duration::ZERO }
            }
        });
        let to_submit = self.uring.submission().len() as u32;
        match self.enter.enter(to_submit, wait, true) {
            Ok(()) => Ok(()),
            // Timeout, signal, or CQ overflow / no resources for submission: the caller drains
            // completions and enters again; unsubmitted entries stay queued.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

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

    fn refill(&mut self) -> bool {
        self.batch.clear();
        self.batch_pos = 0;
        let cap = self.batch.capacity().max(1);
        // Dropping the queue publishes the new head: the CQ space is free again at once.
        self.batch.extend(self.uring.completion().take(cap));
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
        let buf = bid.and_then(|b| self.bufs.take(b).then_some((b, res.max(0) as u32)));
        self.lent = buf.map(|(b, _)| b);
        let result = if res < 0 { Err(io::Error::from_raw_os_error(-res)) } else { Ok(res as u32) };
        let (sent, held) = match owned {
            Owned::Send(b) => (Some(b), None),
            Owned::Held(h) => (None, Some(h)),
            Owned::Nothing | Owned::Addr(_) => (None, None),
        };
        Some(Completion { id, op, result, more, accepted, sent, held, buf })
    }

    fn give_back_lent(&mut self) {
        if let Some(bid) = self.lent.take() {
            self.bufs.give(bid);
        }
    }

    fn push(&mut self, e: squeue::Entry) {
        if self.backlog.is_empty() {
            if self.try_push(&e) {
                return;
            }
            // SQ full: submit what is queued (no wait) and retry once.
            let n = self.uring.submission().len() as u32;
            match self.enter.enter(n, None, false) {
                Ok(()) if self.try_push(&e) => return,
                Ok(()) => {}
                Err(err) => debug!("io_uring submit with a full SQ: {err}"),
            }
        }
        self.backlog.push_back(e);
    }

    fn try_push(&mut self, e: &squeue::Entry) -> bool {
        let mut sq = self.uring.submission();
        // SAFETY: entries are built only by this type. What they point to is owned by their
        // op-table slot (send buffers, connect addresses) or is a buffer of the buffer ring
        // (receives; sends of a held buffer, which their slot owns), all of which outlive the
        // request (module docs); the others carry no pointer.
        unsafe { sq.push(e) }.is_ok()
    }

    fn flush_backlog(&mut self) {
        while let Some(e) = self.backlog.front() {
            let e = e.clone();
            if !self.try_push(&e) {
                break;
            }
            self.backlog.pop_front();
        }
    }

    /// Submit what is still queued (closes, cancels), then cancel everything in flight and
    /// reap completions until nothing is left (bounded). True when nothing is left.
    fn quiesce(&mut self) -> bool {
        self.give_back_lent();
        let end = Instant::now() + QUIESCE;
        let mut asked = false;
        loop {
            let queued = !self.backlog.is_empty() || !self.uring.submission().is_empty();
            if (self.ops.is_empty() && !queued) || Instant::now() >= end {
                break;
            }
            if !asked && !self.ops.is_empty() && self.backlog.is_empty() {
                self.push(opcode::AsyncCancel2::new(CancelBuilder::any()).build().user_data(UNTRACKED));
                asked = true;
            }
            let wait = if self.ops.is_empty() { Duration::ZERO } else { Duration::from_millis(10) };
            if let Err(e) = self.enter(wait, 1) {
                debug!("io_uring enter while shutting down: {e}");
                break;
            }
            while let Some(c) = self.next_completion() {
                drop(c);
            }
            if !self.backlog.is_empty() {
                asked = false; // cancel again once the rest is submitted
            }
        }
        self.give_back_lent();
        self.ops.is_empty()
    }
}

impl<T: Copy> Drop for Ring<T> {
    fn drop(&mut self) {
        if self.quiesce() {
            self.bufs.unregister(&self.uring);
        } else {
            warn!("{} io_uring request(s) still in flight at exit: leaking their buffers", self.ops.len());
            std::mem::forget(std::mem::take(&mut self.ops));
            self.bufs.leak();
        }
        self.enter.unregister(&self.uring);
    }
}

/// Set the `optlen` field of an SQE (for a multishot receive: its total byte limit), which
/// the io-uring crate does not expose for receives.
fn with_optlen(e: squeue::Entry, value: u32) -> squeue::Entry {
    const OPTLEN: usize = 44; // offsetof(struct io_uring_sqe, optlen)
                              // SAFETY: `squeue::Entry` is a `#[repr(C)]` wrapper of the 64-byte `struct io_uring_sqe`
                              // (transmute checks the size), which has no padding and is built from a zeroed value, so
                              // every byte is initialised; it holds only integers (in unions), so any bytes are valid.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(e) };
    raw[OPTLEN..OPTLEN + 4].copy_from_slice(&value.to_ne_bytes());
    // SAFETY: as above, back to the type it came from.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// Does this kernel take a byte limit on multishot receives (Linux 6.17+)? Older kernels
/// reject the request with EINVAL when it is prepared, i.e. during the submit. Probed on a
/// socketpair that never carries data, before the worker queues anything.
fn probe_recv_limit(uring: &mut IoUring, enter: &Enter) -> bool {
    let Ok((a, _b)) = std::os::unix::net::UnixStream::pair() else { return false };
    crate::sys::count_syscall();
    let e = with_optlen(opcode::RecvMulti::new(Fd(a.as_raw_fd()), BGID).build(), 1).user_data(PROBE);
    // SAFETY: the entry carries no pointer (the buffers come from the registered ring).
    if unsafe { uring.submission().push(&e) }.is_err() || enter.enter(1, None, true).is_err() {
        return false;
    }
    let mut armed = true;
    let mut supported = true;
    for cqe in uring.completion() {
        if cqe.user_data() == PROBE {
            armed = cqueue::more(cqe.flags());
            supported &= cqe.result() != -libc::EINVAL;
        }
    }
    if armed {
        let cancel = opcode::AsyncCancel::new(PROBE).build().user_data(UNTRACKED);
        // SAFETY: no pointer in a cancel request.
        if unsafe { uring.submission().push(&cancel) }.is_ok() {
            let wait = Wait { timeout: Duration::from_millis(100), min_complete: 1, min_wait: Duration::ZERO };
            let _ = enter.enter(1, Some(wait), true);
        }
        // Whatever is left (the cancelled receive) is ignored by `complete` as PROBE.
        let _ = uring.completion().count();
    }
    supported
}

/// A request ended because it was cancelled.
#[must_use]
pub fn is_canceled(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED)
}

/// A multishot receive ended because the provided-buffer ring was empty.
#[must_use]
pub fn is_no_buffers(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Set TCP_NODELAY on a listener: Linux copies it to every accepted socket, which saves the
/// io_uring worker a setsockopt per connection.
pub fn set_nodelay_inherited(listener: &TcpListener) -> io::Result<()> {
    crate::sys::count_syscall();
    socket2::SockRef::from(listener).set_tcp_nodelay(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(e: squeue::Entry) -> [u8; 64] {
        // SAFETY: as in `with_optlen`.
        unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(e) }
    }

    #[test]
    fn optlen_lands_where_the_crate_puts_it() {
        let reference = opcode::SetSockOpt::new(Fd(3), 1, 2, std::ptr::null(), 0x1234_5678).build();
        let ours = with_optlen(opcode::RecvMulti::new(Fd(3), BGID).build(), 0x1234_5678);
        assert_eq!(bytes(reference)[44..48], bytes(ours)[44..48]);
    }

    #[test]
    fn a_ring_reports_its_setup_or_a_clear_refusal() {
        let cfg = RingConfig { sq_entries: 8, cq_entries: 32, buf_count: 8, buf_size: 256, send_zc_min: 0 };
        match Ring::<u8>::new(cfg) {
            Ok(mut ring) => {
                assert!(ring.describe().starts_with("io_uring "), "{}", ring.describe());
                assert_eq!(ring.in_flight(), 0);
                ring.enter(Duration::ZERO, 1).unwrap();
                assert!(ring.next_completion().is_none());
            }
            Err(SetupError::Unavailable(msg)) => assert!(msg.contains("--backend epoll"), "{msg}"),
            Err(e) => panic!("{e:?}"),
        }
        let bad = RingConfig { buf_count: 12, ..cfg };
        assert!(matches!(Ring::<u8>::new(bad), Err(SetupError::Invalid(_))));
    }
}
