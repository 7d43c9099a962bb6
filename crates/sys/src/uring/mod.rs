//! io_uring: one worker's ring, its op table and its provided-buffer ring, behind the safe
//! API of [`Ring`]. Every `unsafe` a completion loop needs is in this module:
//! - `submit.rs`: the ring itself (registered fd, submission with a batched wait);
//! - `setup.rs`: setup flags with fallback, the opcode probe, the refusal message;
//! - `ops.rs`: the op table and the requests (accept, receive, send, connect, ...);
//! - `completion.rs`: completions, and the receive buffers they lend;
//! - `bufring.rs`: the provided-buffer ring;
//! - `tokens.rs`: what moves between the caller and the ring ([`SendBuf`], [`HeldBuf`]).
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
//!   takes `&mut Ring` (which gives it back to the kernel); [`Ring::data`] borrows the ring,
//!   so the borrow checker ends every read before the buffer is reused;
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
//! Requests whose completion nobody needs (cancellations, closes) carry `UNTRACKED` as
//! user_data and own nothing.

mod bufring;
mod completion;
mod ops;
mod setup;
mod submit;
mod tokens;

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::CancelBuilder;
use io_uring::{cqueue, opcode, squeue};
use tracing::{debug, warn};

use crate::slab::Slab;
use bufring::BufRing;
use ops::Slot;
use submit::Uring;

pub use completion::Completion;
pub use ops::OpId;
pub use tokens::{ForeignBuf, HeldBuf, SendBuf};

/// user_data of requests whose completion is ignored.
const UNTRACKED: u64 = u64::MAX;
/// user_data of the start-up probe for multishot receive byte limits.
const PROBE: u64 = u64::MAX - 1;

/// How long an enter waits for a batch of completions before settling for fewer: long
/// enough for a busy worker to gather requests into one system call, short against any
/// network round trip (and only paid when the load drops).
const BATCH_WAIT: Duration = Duration::from_micros(25);

/// How long dropping a ring waits for cancelled requests to complete.
const QUIESCE: Duration = Duration::from_secs(1);

/// Ids of rings, unique in the process (0 is never used).
static NEXT_RING_ID: AtomicU64 = AtomicU64::new(1);

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

/// One worker's io_uring. Not `Send`: the ring is single-issuer and its registered fd is only
/// valid in the thread that created it.
pub struct Ring<T: Copy> {
    // Field order is drop order: the ring goes before the buffer memory it points to.
    uring: Uring,
    bufs: BufRing,
    ops: Slab<Slot<T>>,
    /// Entries that did not fit in a full submission queue (kept in order).
    backlog: VecDeque<squeue::Entry>,
    /// Completions copied out of the CQ, handed out one by one.
    batch: Vec<cqueue::Entry>,
    batch_pos: usize,
    /// The receive buffer lent by the last completion, with that completion's number.
    lent: Option<(u16, u64)>,
    /// This ring's id, stamped on its completions and held buffers.
    id: u64,
    /// Number of the last completion handed out.
    seq: u64,
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
        let (ring, flags) = setup::build(sq, cq)?;
        setup::check(&ring)?;
        let bufs = BufRing::new(cfg.buf_count, cfg.buf_size).map_err(|e| {
            SetupError::Io(io::Error::new(e.kind(), format!("mapping the io_uring receive buffers: {e}")))
        })?;
        if let Err(e) = bufs.register(&ring.submitter()) {
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
        let send_zc = setup::supports(&ring, opcode::SendZc::CODE);
        let mut uring = Uring::new(ring);
        let recv_limit = setup::probe_recv_limit(&mut uring);
        let send_zc_min = match cfg.send_zc_min {
            0 => usize::MAX,
            _ if !send_zc => {
                warn!("this kernel has no IORING_OP_SEND_ZC: zero-copy sends are off");
                usize::MAX
            }
            n => n,
        };
        let params = uring.ring().params();
        let min_timeout = params.is_feature_min_timeout();
        let info = format!(
            "io_uring {flags}, sq {} cq {}, {}, {} x {} B receive buffers, receive byte limits {}, batched waits {}, \
             zero-copy sends {}",
            params.sq_entries(),
            params.cq_entries(),
            if uring.registered() { "registered ring fd" } else { "ring fd not registered" },
            cfg.buf_count,
            cfg.buf_size,
            if recv_limit { "supported" } else { "unsupported" },
            if min_timeout { "supported" } else { "unsupported" },
            if send_zc_min == usize::MAX { "off".to_string() } else { format!("from {send_zc_min} B") },
        );
        let batch = Vec::with_capacity(params.cq_entries() as usize);
        Ok(Self {
            uring,
            bufs,
            ops: Slab::new(),
            backlog: VecDeque::new(),
            batch,
            batch_pos: 0,
            lent: None,
            id: NEXT_RING_ID.fetch_add(1, Ordering::Relaxed),
            seq: 0,
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

    /// Whether [`Ring::recv_multi`] limits are honoured by this kernel.
    #[must_use]
    pub fn recv_limit_supported(&self) -> bool {
        self.recv_limit
    }

    /// Submit what is still queued (closes, cancels), then cancel everything in flight and
    /// reap completions until nothing is left (bounded). True when nothing is left.
    fn quiesce(&mut self) -> bool {
        self.give_back_lent();
        let end = Instant::now() + QUIESCE;
        let mut asked = false;
        loop {
            let queued = !self.backlog.is_empty() || !self.uring.sq_is_empty();
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
