//! io_uring: one worker's ring, its op table and its provided-buffer ring, behind the safe
//! API of [`Ring`] (this file, a facade over the parts below). Every `unsafe` a completion
//! loop needs is in this module:
//! - `submit.rs`: the ring itself (registered fd, submission queue and backlog, enter);
//! - `setup.rs`: setup flags with fallback, the opcode probe, the refusal message;
//! - `start.rs`: bringing a ring up with the [`Techniques`] asked for, falling back (one INFO
//!   line each) where the kernel lacks one; `features.rs`: the techniques and the self-test
//!   of recv bundles and incremental buffers;
//! - `ops.rs`: op-table entries and the submission entries of every request;
//! - `completion.rs`: reaping completions, and the receive buffers they lend;
//! - `bufring.rs`: the provided-buffer ring (bundles, incremental consumption); `mmap.rs`:
//!   its memory (huge-page aligned);
//! - `fixed.rs`: fixed file descriptors ([`FixedFd`], [`RingFd`]); `regwait.rs`: the
//!   registered wait region;
//! - `tokens.rs`: what moves between the caller and the ring ([`SendBuf`], [`HeldBuf`]).
//!
//! The parts do not import this file: the facade composes them, so no module imports one
//! that imports it back.
//!
//! # Ownership contract
//! Every request the kernel holds is an entry of the op table, a generational slab whose key
//! is the request's user_data. The entry is created when the SQE is queued and removed only
//! when its final CQE (no `IORING_CQE_F_MORE`) arrives. Memory the kernel may touch for a
//! request lives in that entry (a send's buffer) or in the provided-buffer ring (receive
//! buffers), so:
//! - a send buffer moves into the ring with [`Ring::send`] as a [`SendBuf`] (an owned
//!   `Vec<u8>`, whose heap block does not move with it) and comes back only in the request's
//!   final [`Completion`], whatever happened to the connection meanwhile;
//! - a receive buffer is lent between the completion that names it and the next call that
//!   takes `&mut Ring` (which gives it back to the kernel); [`Ring::data`] and
//!   [`Ring::chunks`] borrow the ring, so the borrow checker ends every read before the
//!   buffer is reused. With recv bundles one completion lends several buffers, in order;
//!   with incremental buffers it lends a piece of one, and the buffer goes back only once
//!   the kernel has filled it and no piece of it is lent or held;
//! - unless [`Ring::hold`] keeps it out of the ring as a [`HeldBuf`] (the proxy's zero-copy
//!   relay): the token moves into a [`Ring::send_held`] request, comes back in its final
//!   completion, and only [`Ring::release`], which consumes it, gives the buffer back;
//! - a connect's socket address lives in its entry until the final completion;
//! - dropping the ring cancels and reaps every request first, and leaks (never frees) what
//!   the kernel still holds after a bounded wait.
//!
//! Completions and held buffers carry the id of the ring that produced them (and completions
//! their sequence number): a completion kept past the next one, or handed to another
//! worker's ring, reads no bytes, and a held buffer given to another ring is refused (logged),
//! so that such a mistake can never hand a buffer back to the kernel while it is in use.
//!
//! Requests whose completion nobody needs (cancellations, closes) carry an untracked
//! user_data and own nothing.

mod bufring;
mod completion;
mod features;
mod fixed;
mod mmap;
mod ops;
mod regwait;
mod setup;
mod start;
mod submit;
mod tokens;

use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::slab::Slab;
use bufring::BufRing;
use completion::Completions;
use ops::{Kind, Msg, Owned, Slot};
use submit::{Uring, Wait};

pub use completion::Completion;
pub use features::Techniques;
pub use fixed::{FixedFd, RingFd, Target};
pub use ops::OpId;
pub use setup::SetupError;
pub use start::RingConfig;
pub use tokens::{ForeignBuf, HeldBuf, SendBuf};

/// How long an enter waits for a batch of completions before settling for fewer: long
/// enough for a busy worker to gather requests into one system call, short against any
/// network round trip (and only paid when the load drops).
const BATCH_WAIT: Duration = Duration::from_micros(25);

/// How long dropping a ring waits for cancelled requests to complete.
const QUIESCE: Duration = Duration::from_secs(1);

/// Ids of rings, unique in the process (0 is never used).
static NEXT_RING_ID: AtomicU64 = AtomicU64::new(1);

/// One worker's io_uring. Not `Send`: the ring is single-issuer and its registered fd is only
/// valid in the thread that created it.
pub struct Ring<T: Copy> {
    // Field order is drop order: the ring goes before the buffer memory it points to.
    uring: Uring,
    bufs: BufRing,
    ops: Slab<Slot<T>>,
    done: Completions,
    /// This ring's id, stamped on its completions, held buffers and fixed descriptors.
    id: u64,
    /// The kernel caps multishot receives at a byte count (Linux 6.17+).
    recv_limit: bool,
    /// The kernel takes a minimum wait time with a completion count (Linux 6.12+).
    min_timeout: bool,
    /// The techniques granted.
    techniques: Techniques,
    /// One line per technique asked for and not granted.
    fallbacks: Vec<String>,
    /// Sends queued since the last enter.
    sends_queued: u32,
    /// Sends of at least this many bytes go zero-copy (`usize::MAX`: never).
    send_zc_min: usize,
    info: String,
    _single_thread: PhantomData<*const ()>,
}

impl<T: Copy> Ring<T> {
    /// Set up the ring (setup flags with fallback, probe, buffer ring, registered fd), with
    /// no optional technique.
    pub fn new(cfg: RingConfig) -> Result<Self, SetupError> {
        Self::with_techniques(cfg, Techniques::default())
    }

    /// Set up the ring with the optional techniques asked for; each one the kernel lacks is
    /// off (one INFO line, and a line in [`Ring::fallbacks`]). [`Ring::techniques`] says what
    /// was granted.
    pub fn with_techniques(cfg: RingConfig, asked: Techniques) -> Result<Self, SetupError> {
        let p = start::start(&cfg, asked)?;
        let send_zc_min = match cfg.send_zc_min {
            0 => usize::MAX,
            _ if !p.send_zc => {
                warn!("this kernel has no IORING_OP_SEND_ZC: zero-copy sends are off");
                usize::MAX
            }
            n => n,
        };
        let info = format!(
            "{}, zero-copy sends {}",
            p.info,
            if send_zc_min == usize::MAX { "off".to_string() } else { format!("from {send_zc_min} B") }
        );
        let id = NEXT_RING_ID.fetch_add(1, Ordering::Relaxed);
        let done = Completions::new(id, p.uring.ring().params().cq_entries() as usize);
        Ok(Self {
            uring: p.uring,
            bufs: p.bufs,
            ops: Slab::new(),
            done,
            id,
            recv_limit: p.recv_limit,
            min_timeout: p.min_timeout,
            techniques: p.granted,
            fallbacks: p.fallbacks,
            sends_queued: 0,
            send_zc_min,
            info,
            _single_thread: PhantomData,
        })
    }

    /// The optional techniques in use (those asked for that the kernel granted).
    #[must_use]
    pub fn techniques(&self) -> Techniques {
        self.techniques
    }

    /// One line per technique asked for and not granted, saying why.
    #[must_use]
    pub fn fallbacks(&self) -> &[String] {
        &self.fallbacks
    }

    /// Entries of the completion queue.
    #[must_use]
    pub fn cq_entries(&self) -> u32 {
        self.uring.ring().params().cq_entries()
    }

    /// Size of each provided receive buffer.
    #[must_use]
    pub fn buffer_size(&self) -> u32 {
        self.bufs.size()
    }

    /// One line describing the setup (flags, sizes), for the log.
    #[must_use]
    pub fn describe(&self) -> &str {
        &self.info
    }

    /// Whether waits use a registered wait region.
    #[must_use]
    pub fn reg_wait(&self) -> bool {
        self.uring.reg_wait()
    }

    /// Zero-copy sends completed so far.
    #[must_use]
    pub fn zero_copy_sends(&self) -> u64 {
        self.done.zero_copy_sends()
    }

    /// Requests in flight (including queued ones), not counting untracked ones.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Whether [`Ring::recv_multi`] limits are honoured by this kernel.
    #[must_use]
    pub fn recv_limit_supported(&self) -> bool {
        self.recv_limit
    }

    /// Queue a multishot accept on `listener`; accepted sockets are blocking and close-on-exec.
    pub fn accept_multi(&mut self, listener: &TcpListener, op: T) -> OpId {
        self.accept(listener, op, false)
    }

    /// Queue a multishot accept whose connections go straight into the fixed file table
    /// ([`Completion::accepted_fixed`]); a full table fails an accept with ENFILE. Without a
    /// table ([`Techniques::fixed_files`] not granted) this is [`Ring::accept_multi`].
    pub fn accept_multi_direct(&mut self, listener: &TcpListener, op: T) -> OpId {
        self.accept(listener, op, self.techniques.fixed_files > 0)
    }

    fn accept(&mut self, listener: &TcpListener, op: T, direct: bool) -> OpId {
        let kind = if direct { Kind::AcceptDirect } else { Kind::Accept };
        let id = self.ops.insert(Slot::new(kind, op, Owned::Nothing));
        // SAFETY: no pointer in an accept (the peer address is not asked for).
        unsafe { self.uring.push(ops::accept_multi(listener.as_raw_fd(), direct).user_data(id.to_u64())) };
        id
    }

    /// What a request on `sock` targets; a fixed descriptor of another ring's table is
    /// refused (logged), and the request fails with EBADF.
    fn target(&self, sock: &impl RingFd) -> Target {
        match sock.target() {
            Target::Fixed { ring, slot } if ring != self.id => {
                warn!(
                    "a fixed descriptor (slot {slot}) of io_uring #{ring} was handed to io_uring #{}: refused",
                    self.id
                );
                Target::Fd(-1)
            }
            t => t,
        }
    }

    /// Queue a multishot receive into the provided-buffer ring (several buffers per
    /// completion with recv bundles). With `limit` > 0 (and a kernel that supports it) the
    /// receive ends, without F_MORE, once it has delivered that many bytes: backpressure
    /// without the completions already queued overshooting it.
    pub fn recv_multi(&mut self, sock: &impl RingFd, op: T, limit: u32) -> OpId {
        let id = self.ops.insert(Slot::new(Kind::Recv, op, Owned::Nothing));
        let limit = (self.recv_limit && limit > 0).then_some(limit);
        let t = self.target(sock);
        let e = ops::recv_multi(t, self.bufs.bgid(), limit, self.techniques.bundle).user_data(id.to_u64());
        // SAFETY: no pointer: the kernel picks buffers of the registered buffer ring, which
        // lives as long as the ring (and is leaked if requests outlive the drop's wait).
        unsafe { self.uring.push(e) };
        id
    }

    /// Queue a send of `buf.pending()`; the ring owns `buf` until the final completion, which
    /// hands it back in [`Completion::sent`].
    pub fn send(&mut self, sock: &impl RingFd, buf: SendBuf, op: T) -> OpId {
        let t = self.target(sock);
        let zc = buf.len() >= self.send_zc_min;
        let kind = if zc { Kind::SendZc } else { Kind::Send };
        let id = self.ops.insert(Slot::new(kind, op, Owned::Send(buf)));
        let pending = match self.ops.get(id).map(|s| &s.owned) {
            Some(Owned::Send(b)) => b.pending(),
            _ => &[],
        };
        let len = u32::try_from(pending.len()).unwrap_or(u32::MAX);
        let e = ops::send(t, pending.as_ptr(), len, zc).user_data(id.to_u64());
        // SAFETY: the pointer targets the heap block of the Vec in this request's op-table
        // entry, which does not move when the entry does, and nothing mutates or frees it
        // before the final completion (for a zero-copy send, the notification that the kernel
        // no longer reads it), which is when the entry gives it back.
        unsafe { self.uring.push(e) };
        self.sends_queued = self.sends_queued.saturating_add(1);
        id
    }

    /// Keep the receive buffer(s) of completion `c` (the one just handed out) out of the
    /// ring: they are not given back at the next call, and their bytes can be sent as they
    /// are with [`Ring::send_held`] (echo or relay without a copy). `None` if `c` lends no
    /// bytes, or is not the last completion this ring handed out.
    pub fn hold(&mut self, c: &Completion<T>) -> Option<HeldBuf> {
        self.done.hold(c)
    }

    /// Queue a send of the unsent bytes of a held receive buffer (a `sendmsg` over its pieces
    /// when it spans several buffers); the request owns it until the final completion, which
    /// hands it back in [`Completion::held`]. A buffer another ring lent is refused.
    pub fn send_held(&mut self, sock: &impl RingFd, held: HeldBuf, op: T) -> Result<OpId, ForeignBuf> {
        self.check_owner(&held)?;
        let t = self.target(sock);
        let (first, more) = {
            let mut pending = held.pending();
            (pending.next(), pending.next().is_some())
        };
        let (e, owned) = if more {
            let iov: Box<[libc::iovec]> = held
                .pending()
                .map(|s| libc::iovec { iov_base: self.bufs.addr(s).cast_mut().cast(), iov_len: s.len as usize })
                .collect();
            let msg = Msg::new(iov);
            (ops::sendmsg(t, &msg.hdr), Owned::HeldMsg(held, msg))
        } else {
            // One piece (or none left): a plain send, no allocation.
            let (ptr, len) = first.map_or((std::ptr::null(), 0), |s| (self.bufs.addr(s), s.len));
            (ops::send(t, ptr, len, false), Owned::Held(held))
        };
        let id = self.ops.insert(Slot::new(Kind::Send, op, owned));
        // SAFETY: the pointers (the data, or the message header, its vector and the data it
        // points to) target buffers of this ring's buffer ring that are lent to us (checked
        // above: this ring lent them) and owned by this request's entry, and boxed headers in
        // that entry (which do not move when the entry does): the kernel cannot pick the
        // buffers for a receive, and nothing gives them back or frees the header before the
        // final completion.
        unsafe { self.uring.push(e.user_data(id.to_u64())) };
        self.sends_queued = self.sends_queued.saturating_add(1);
        Ok(id)
    }

    /// Give a held receive buffer back to the kernel. A buffer another ring lent is refused
    /// (and stays out of both rings).
    pub fn release(&mut self, held: HeldBuf) -> Result<(), ForeignBuf> {
        self.check_owner(&held)?;
        self.bufs.give_back(held.segs.as_slice());
        Ok(())
    }

    fn check_owner(&self, held: &HeldBuf) -> Result<(), ForeignBuf> {
        if held.ring == self.id {
            return Ok(());
        }
        let e = ForeignBuf { owner: held.ring, ring: self.id };
        warn!("{e}");
        Err(e)
    }

    /// Queue a connect of `stream` to `addr` (the address lives in the request's entry).
    pub fn connect(&mut self, stream: &TcpStream, addr: SocketAddr, op: T) -> OpId {
        let addr = Box::new(socket2::SockAddr::from(addr));
        let e = ops::connect(stream.as_raw_fd(), &addr);
        let id = self.ops.insert(Slot::new(Kind::Connect, op, Owned::Addr(addr)));
        // SAFETY: the address is boxed in this request's op-table entry (the box does not move
        // with the entry) until the final completion.
        unsafe { self.uring.push(e.user_data(id.to_u64())) };
        id
    }

    /// Queue a one-shot poll for readability (the wake-up eventfd).
    pub fn poll_readable(&mut self, fd: &impl AsRawFd, op: T) -> OpId {
        let id = self.ops.insert(Slot::new(Kind::Poll, op, Owned::Nothing));
        // SAFETY: no pointer in a poll.
        unsafe { self.uring.push(ops::poll_readable(fd.as_raw_fd()).user_data(id.to_u64())) };
        id
    }

    /// Ask the kernel to cancel a request; its final completion (usually ECANCELED) follows.
    pub fn cancel(&mut self, id: OpId) {
        if self.ops.get(id).is_some() {
            // SAFETY: no pointer in a cancel.
            unsafe { self.uring.push(ops::cancel(id.to_u64())) };
        }
    }

    /// Close a descriptor through the ring (no system call of its own). Call it once no
    /// request uses the descriptor any more, or the socket stays open until they end.
    pub fn close(&mut self, fd: impl Into<OwnedFd>) {
        // SAFETY: no pointer in a close; the descriptor is ours to close (taken from its owner).
        unsafe { self.uring.push(ops::close(Target::Fd(fd.into().into_raw_fd()))) };
    }

    /// Close a fixed descriptor (free its table slot). Requests still using it keep the
    /// socket open until they end; another ring's descriptor is refused (logged).
    pub fn close_fixed(&mut self, fd: FixedFd) {
        if let t @ Target::Fixed { .. } = self.target(&fd) {
            // SAFETY: no pointer in a close; the slot is ours to close (the token is consumed).
            unsafe { self.uring.push(ops::close(t)) };
        }
    }

    /// Queue a shutdown of the write side of `sock` (the way to shut a fixed descriptor; the
    /// completion carries the result).
    pub fn shutdown_write(&mut self, sock: &impl RingFd, op: T) -> OpId {
        let t = self.target(sock);
        let id = self.ops.insert(Slot::new(Kind::Other, op, Owned::Nothing));
        // SAFETY: no pointer in a shutdown.
        unsafe { self.uring.push(ops::shutdown_write(t).user_data(id.to_u64())) };
        id
    }

    /// Queue SO_LINGER 0 on `sock` (its close then resets the connection), the way to do it
    /// on a fixed descriptor (Linux 6.7 socket commands).
    pub fn set_linger_zero(&mut self, sock: &impl RingFd, op: T) -> OpId {
        let t = self.target(sock);
        let value = Box::new(libc::linger { l_onoff: 1, l_linger: 0 });
        let ptr: *const libc::linger = &*value;
        let id = self.ops.insert(Slot::new(Kind::Other, op, Owned::Opt(value)));
        // SAFETY: the value is boxed in this request's entry (the box does not move with the
        // entry) until the final completion.
        unsafe { self.uring.push(ops::set_linger(t, ptr).user_data(id.to_u64())) };
        id
    }

    /// The bytes a receive completion delivered when they are in one buffer (always, without
    /// recv bundles): empty for any other completion, for one that is not the last
    /// completion this ring handed out (its buffer is back in the ring), and for a bundle
    /// spanning several buffers (read those with [`Ring::chunks`]).
    #[must_use]
    pub fn data(&self, c: &Completion<T>) -> &[u8] {
        match self.done.lent_by(c) {
            Some([one]) => self.bufs.slice(*one),
            Some(_) => {
                debug!("Ring::data on a completion spanning {} buffers: use Ring::chunks", c.buffers);
                &[]
            }
            None => &[],
        }
    }

    /// The bytes a receive completion delivered, buffer by buffer, in order (several for a
    /// recv bundle); nothing for the completions [`Ring::data`] gives nothing for.
    pub fn chunks<'a>(&'a self, c: &Completion<T>) -> impl Iterator<Item = &'a [u8]> + 'a {
        let segs = self.done.lent_by(c).unwrap_or(&[]);
        segs.iter().map(|s| self.bufs.slice(*s))
    }

    /// The next completion, or `None` once the CQ is empty. Gives back the receive buffers
    /// lent by the previous one.
    pub fn next_completion(&mut self) -> Option<Completion<T>> {
        let zc = self.send_zc_min != usize::MAX;
        self.done.next(&mut self.uring, &mut self.ops, &mut self.bufs, zc, self.techniques.bundle)
    }

    /// Submit everything queued and wait up to `max_wait` for completions (not at all when
    /// zero, when queued work remains, or when completions are [`Ring::ready`]). One
    /// `io_uring_enter`.
    ///
    /// With `batch` > 1 (and IORING_FEAT_MIN_TIMEOUT, Linux 6.12) the wait is for `batch`
    /// completions beyond those of the sends just submitted (sends that fit in the socket
    /// buffer complete during the submit), for at most [`BATCH_WAIT`], after which any one
    /// completion ends it. Otherwise the first completion ends it: a min-wait costs a timer
    /// (a VM exit on virtual machines), worth paying only when it saves wake-ups.
    pub fn enter(&mut self, max_wait: Duration, batch: u32) -> io::Result<()> {
        self.done.give_back(&mut self.bufs);
        self.uring.flush_backlog();
        // Never wait while completions are already there to be handled (reaped or posted):
        // the enter then only submits. Completions still in task work do not count: the
        // enter runs that work first and they count toward `batch`, so a busy worker still
        // gathers its batch (a worker with one active connection asks for one completion,
        // which the task work itself provides).
        let busy = self.uring.backlogged() || self.done.pending() || self.uring.cq_ready();
        let sends = std::mem::take(&mut self.sends_queued);
        let wait = (!busy && !max_wait.is_zero()).then(|| {
            if self.min_timeout && batch > 1 {
                Wait { timeout: max_wait, min_complete: sends.saturating_add(batch), min_wait: BATCH_WAIT }
            } else {
                Wait { timeout: max_wait, min_complete: 1, min_wait: Duration::ZERO }
            }
        });
        match self.uring.enter(wait, true) {
            Ok(()) => Ok(()),
            // Timeout, signal, or CQ overflow / no resources for submission: the caller drains
            // completions and enters again; unsubmitted entries stay queued.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Completions are there to be handled: reaped and not handed out yet, in the CQ, or
    /// pending in task work that the next enter runs (seen with IORING_SETUP_TASKRUN_FLAG).
    pub fn ready(&mut self) -> bool {
        self.done.pending() || self.uring.cq_ready() || self.uring.taskrun_pending()
    }

    /// Submit what is still queued (closes, cancels), then cancel everything in flight and
    /// reap completions until nothing is left (bounded). True when nothing is left.
    fn quiesce(&mut self) -> bool {
        self.done.give_back(&mut self.bufs);
        let end = Instant::now() + QUIESCE;
        let mut asked = false;
        loop {
            if (self.ops.is_empty() && self.uring.idle()) || Instant::now() >= end {
                break;
            }
            if !asked && !self.ops.is_empty() && !self.uring.backlogged() {
                // SAFETY: no pointer in a cancel.
                unsafe { self.uring.push(ops::cancel_all()) };
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
            if self.uring.backlogged() {
                asked = false; // cancel again once the rest is submitted
            }
        }
        self.done.give_back(&mut self.bufs);
        self.ops.is_empty()
    }
}

impl<T: Copy> Drop for Ring<T> {
    fn drop(&mut self) {
        if self.quiesce() {
            self.bufs.unregister(self.uring.submitter());
        } else {
            warn!("{} io_uring request(s) still in flight at exit: leaking their buffers", self.ops.len());
            std::mem::forget(std::mem::take(&mut self.ops));
            self.bufs.leak();
        }
        self.uring.unregister();
    }
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
    crate::count_syscall();
    socket2::SockRef::from(listener).set_tcp_nodelay(true)
}

#[cfg(test)]
mod tests;
