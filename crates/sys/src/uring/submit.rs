//! The ring itself and the way into the kernel: the registered ring fd, the submission queue
//! (with a backlog for when it is full) and `io_uring_enter`.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{cqueue, squeue, CompletionQueue, EnterFlags, IoUring, SubmissionQueue, Submitter};
use tracing::debug;

use super::regwait::{RegWait, RegWaitArg};
use crate::count_syscall;

type SubmitterOf<'a> = Submitter<'a>;

self_cell::self_cell!(
    /// The ring and one long-lived submitter borrowing it: io-uring keeps the index of a
    /// registered ring fd in the `Submitter` that registered it, so that submitter must live
    /// as long as the ring.
    struct Cell {
        owner: IoUring,
        #[covariant]
        dependent: SubmitterOf,
    }
);

/// What an enter waits for.
#[derive(Clone, Copy, Debug)]
pub(super) struct Wait {
    /// Give up after this long (ETIME).
    pub timeout: Duration,
    /// Completions to wait for...
    pub min_complete: u32,
    /// ...for at most this long, after which one completion is enough (zero: no such phase;
    /// needs IORING_FEAT_MIN_TIMEOUT).
    pub min_wait: Duration,
}

/// One thread's ring. The submission and completion queues are only reached through
/// [`Uring::with_sq`] and [`Uring::with_cq`], which take `&mut self`.
pub(super) struct Uring {
    // Field order is drop order: the ring goes before the wait region it pins.
    cell: Cell,
    /// Entries that did not fit in a full submission queue (kept in order).
    backlog: VecDeque<squeue::Entry>,
    /// The ring fd is registered for this thread (no fd lookup per enter).
    registered: bool,
    /// Waits pass their arguments through this registered region (Linux 6.13).
    regwait: Option<RegWait>,
    /// A kernel thread polls the submission queue (IORING_SETUP_SQPOLL).
    sqpoll: bool,
}

impl Uring {
    /// Take the ring (enabled, with its wait region if registered) and register its fd for
    /// the calling thread (best effort: Linux 5.18+).
    pub fn new(ring: IoUring, regwait: Option<RegWait>) -> Self {
        let sqpoll = ring.params().is_setup_sqpoll();
        let mut cell = Cell::new(ring, IoUring::submitter);
        count_syscall();
        let registered = match cell.with_dependent_mut(|_, s| s.register_ring_fd()) {
            Ok(()) => true,
            Err(e) => {
                debug!("registering the io_uring fd: {e}");
                false
            }
        };
        Self { cell, backlog: VecDeque::new(), registered, regwait, sqpoll }
    }

    /// Waits use the registered wait region.
    pub fn reg_wait(&self) -> bool {
        self.regwait.is_some()
    }

    /// Completions are waiting in the CQ.
    pub fn cq_ready(&mut self) -> bool {
        self.with_cq(|cq| !CompletionQueue::is_empty(cq))
    }

    /// Task work is pending (IORING_SQ_TASKRUN, with IORING_SETUP_TASKRUN_FLAG): completions
    /// the kernel posts as soon as the ring is entered.
    pub fn taskrun_pending(&mut self) -> bool {
        self.with_sq(|sq| sq.taskrun())
    }

    /// IORING_ENTER_SQ_WAKEUP if the SQPOLL thread sleeps and entries are queued for it.
    fn wakeup(&mut self) -> u32 {
        if !self.sqpoll {
            return 0;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if self.with_sq(|sq| sq.need_wakeup()) {
            EnterFlags::SQ_WAKEUP.bits()
        } else {
            0
        }
    }

    pub fn ring(&self) -> &IoUring {
        self.cell.borrow_owner()
    }

    pub fn submitter(&self) -> &Submitter<'_> {
        self.cell.borrow_dependent()
    }

    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Undo [`Uring::new`]'s registration (it holds a reference that keeps the ring alive).
    pub fn unregister(&mut self) {
        if std::mem::take(&mut self.registered) {
            count_syscall();
            if let Err(e) = self.cell.with_dependent_mut(|_, s| s.unregister_ring_fd()) {
                debug!("unregistering the io_uring fd: {e}");
            }
        }
    }

    /// Run `f` on the submission queue (its new tail is published when `f` returns).
    fn with_sq<R>(&mut self, f: impl FnOnce(&mut SubmissionQueue<'_>) -> R) -> R {
        // SAFETY: `&mut self` guarantees that no other submission queue of this ring exists
        // while `f` runs (the ring is reached only through `Uring`, which hands out queues only
        // here, and `f` cannot reach `self`), and the queue does not outlive this call.
        let mut sq = unsafe { self.ring().submission_shared() };
        f(&mut sq)
    }

    /// Run `f` on the completion queue (its new head is published when `f` returns, so the
    /// space of the entries taken is free again at once).
    pub fn with_cq<R>(&mut self, f: impl FnOnce(&mut CompletionQueue<'_>) -> R) -> R {
        // SAFETY: as in `with_sq`, for the completion queue.
        let mut cq = unsafe { self.ring().completion_shared() };
        f(&mut cq)
    }

    /// Nothing is queued for the kernel, in the submission queue or the backlog.
    pub fn idle(&mut self) -> bool {
        self.backlog.is_empty() && self.with_sq(|sq| sq.is_empty())
    }

    pub fn backlogged(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Queue an entry; when the submission queue is full, submit it (no wait) and retry once,
    /// then keep the entry in the backlog (in order) until there is room.
    ///
    /// # Safety
    /// Whatever `e` points to (a buffer, an address) must stay valid, and a buffer the kernel
    /// writes must not be read or written by anyone else, until the request's final
    /// completion has been reaped.
    pub unsafe fn push(&mut self, e: squeue::Entry) {
        if self.backlog.is_empty() {
            if self.try_push(&e) {
                return;
            }
            match self.enter(None, false) {
                Ok(()) if self.try_push(&e) => return,
                Ok(()) => {}
                Err(err) => debug!("io_uring submit with a full SQ: {err}"),
            }
        }
        self.backlog.push_back(e);
    }

    /// Move backlogged entries into the submission queue while there is room.
    pub fn flush_backlog(&mut self) {
        while let Some(e) = self.backlog.front() {
            let e = e.clone();
            if !self.try_push(&e) {
                break;
            }
            self.backlog.pop_front();
        }
    }

    fn try_push(&mut self, e: &squeue::Entry) -> bool {
        self.with_sq(|sq| {
            // SAFETY: every entry reaches the queue through `push`, whose caller vouched for
            // what the entry points to.
            unsafe { sq.push(e) }.is_ok()
        })
    }

    /// Submit what is queued; with `wait`, block as it says. With `getevents` (implied by
    /// `wait`), also run deferred task work so that completions are posted.
    pub fn enter(&mut self, wait: Option<Wait>, getevents: bool) -> io::Result<()> {
        let to_submit = self.with_sq(|sq| sq.len()) as u32;
        if let (Some(w), true) = (wait, self.regwait.is_some()) {
            let wake = self.wakeup();
            if let Some(r) = self.regwait.as_mut() {
                r.set(w.timeout, w.min_wait);
            }
            let flags = EnterFlags::GETEVENTS | EnterFlags::EXT_ARG | EnterFlags::EXT_ARG_REG;
            count_syscall();
            // SAFETY: with IORING_ENTER_EXT_ARG_REG the argument is an offset into the
            // registered wait region, not a pointer: `None` passes offset 0, where `set` just
            // wrote this wait's arguments, and the size of `RegWaitArg` (the kernel's
            // `struct io_uring_reg_wait`) as the argument size, as the kernel requires.
            let r =
                unsafe { self.submitter().enter::<RegWaitArg>(to_submit, w.min_complete, flags.bits() | wake, None) };
            return r.map(drop);
        }
        count_syscall();
        let wake = if wait.is_none() && getevents { self.wakeup() } else { 0 };
        let sub = self.submitter();
        match wait {
            Some(w) => {
                let ts = Timespec::from(w.timeout);
                let mut args = SubmitArgs::new().timespec(&ts);
                if !w.min_wait.is_zero() {
                    args = args.min_wait_usec(u32::try_from(w.min_wait.as_micros()).unwrap_or(u32::MAX));
                }
                sub.submit_with_args(w.min_complete as usize, &args).map(drop)
            }
            // `submit` asks for completions only when the kernel flags pending task work, which
            // it does not for DEFER_TASKRUN rings without TASKRUN_FLAG: ask explicitly.
            None if getevents => {
                // SAFETY: no argument pointer is passed (`None`), and the flag needs none.
                unsafe { sub.enter::<libc::sigset_t>(to_submit, 0, EnterFlags::GETEVENTS.bits() | wake, None) }
                    .map(drop)
            }
            None => sub.submit().map(drop),
        }
    }

    /// The completions waiting in the CQ right now (for the set-up probe).
    pub fn drain(&mut self) -> Vec<cqueue::Entry> {
        self.with_cq(|cq| cq.collect())
    }
}
