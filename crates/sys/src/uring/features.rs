//! The optional techniques a ring can use ([`Techniques`]: asked for by the caller, granted
//! by the kernel), and the start-up self-test of recv bundles and incremental buffers.
//!
//! Each technique is probed at setup; one the kernel lacks (or fails its self-test) is
//! turned off with one INFO line saying why, and the ring works as without it.

use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::cqueue;

use super::bufring::BufRing;
use super::fixed::Target;
use super::ops::{self, PROBE};
use super::setup::{end_probe, probe_round};
use super::submit::Uring;
use super::tokens::Seg;

/// Buffer group of the self-test's small ring (the worker's is 0).
const TEST_BGID: u16 = 1;
/// The self-test's ring: 8 buffers of 64 bytes, published in descending id order so that
/// ring order differs from id order.
const TEST_BUFS: u16 = 8;
const TEST_BUF_SIZE: u32 = 64;

/// Optional io_uring techniques. Asked for with [`Ring::with_techniques`]; what the kernel
/// granted is [`Ring::techniques`]. All off by default.
///
/// [`Ring::with_techniques`]: super::Ring::with_techniques
/// [`Ring::techniques`]: super::Ring::techniques
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Techniques {
    /// Slots of the fixed file table for direct accepts (0: none). Linux 5.19. The table is
    /// clamped to RLIMIT_NOFILE; a full table fails accepts with ENFILE, so it should cover
    /// the worker's connection limit.
    pub fixed_files: u32,
    /// Multishot receives take several buffers per completion (IORING_RECVSEND_BUNDLE,
    /// Linux 6.10), after a self-test at setup.
    pub bundle: bool,
    /// Buffers are consumed incrementally (IOU_PBUF_RING_INC, Linux 6.12): a small message
    /// takes only its bytes of a buffer, not all of it.
    pub buf_inc: bool,
    /// A kernel thread polls the submission queue (IORING_SETUP_SQPOLL), sleeping after this
    /// long without work. It excludes DEFER_TASKRUN.
    pub sqpoll_idle: Option<Duration>,
    /// Waits pass their arguments through a registered region (Linux 6.13).
    pub reg_wait: bool,
}

impl Techniques {
    /// One word per technique and its state, for the ring's description.
    #[must_use]
    pub fn describe(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "fixed files {}, recv bundles {}, incremental buffers {}, SQPOLL {}, registered waits {}",
            if self.fixed_files > 0 { format!("{} slots", self.fixed_files) } else { "off".into() },
            on(self.bundle),
            on(self.buf_inc),
            self.sqpoll_idle.map_or("off".into(), |d| format!("on (idle {} ms)", d.as_millis())),
            on(self.reg_wait),
        )
    }
}

/// What the self-test saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct SelfTest {
    /// Most buffers one completion covered.
    pub max_buffers: usize,
    /// Two completions shared one buffer (incremental consumption at work).
    pub shared: bool,
}

#[cfg(test)]
thread_local! {
    /// Tests make a ring believe the kernel lacks techniques (to test the fallbacks).
    pub(super) static PRETEND_MISSING: std::cell::Cell<Techniques> = const {
        std::cell::Cell::new(Techniques { fixed_files: 0, bundle: false, buf_inc: false, sqpoll_idle: None, reg_wait: false })
    };
}

/// Whether a test asked to pretend that the kernel lacks a technique.
pub(super) fn pretend_missing(pick: impl Fn(&Techniques) -> bool) -> bool {
    #[cfg(test)]
    {
        PRETEND_MISSING.with(|p| pick(&p.get()))
    }
    #[cfg(not(test))]
    {
        let _ = pick;
        false
    }
}

/// Receive a known byte pattern through a small buffer ring registered like the worker's
/// (`inc`), with bundles if `bundle`, and check every byte and every buffer id against the
/// ring order: in two steps (10 bytes, then 300), so that incremental consumption shows as
/// two completions sharing a buffer and bundles as a completion spanning several buffers.
/// Recv bundles have had kernel bugs with buffer ids out of order; a kernel that gets it wrong
/// fails here and the worker goes on without the technique.
pub(super) fn self_test(uring: &mut Uring, bundle: bool, inc: bool) -> Result<SelfTest, String> {
    let mut bufs =
        BufRing::new(TEST_BUFS, TEST_BUF_SIZE, TEST_BGID, true, false).map_err(|e| format!("mapping: {e}"))?;
    bufs.register(uring.submitter(), inc).map_err(|e| format!("registering a buffer ring: {e}"))?;
    let result = run_self_test(uring, &mut bufs, bundle);
    if end_probe(uring) {
        bufs.unregister(uring.submitter());
    } else {
        bufs.leak(); // the probe receive may still be armed
    }
    result
}

fn run_self_test(uring: &mut Uring, bufs: &mut BufRing, bundle: bool) -> Result<SelfTest, String> {
    let (mut tx, rx) = std::os::unix::net::UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let pattern: Vec<u8> = (0..310u32).map(|i| (i * 7 % 251) as u8).collect();
    std::io::Write::write_all(&mut tx, &pattern[..10]).map_err(|e| format!("write: {e}"))?;
    let e = ops::recv_multi(Target::Fd(rx.as_raw_fd()), bufs.bgid(), None, bundle).user_data(PROBE);
    // SAFETY: no pointer: the kernel picks buffers of the registered test ring, which stays
    // mapped until the probe's receive has ended (or forever, see `self_test`).
    unsafe { uring.push(e) };
    let mut got = Vec::new();
    let mut seen = SelfTest::default();
    let mut last_bid = None;
    for step in [10, pattern.len()] {
        if step > 10 {
            std::io::Write::write_all(&mut tx, &pattern[10..]).map_err(|e| format!("write: {e}"))?;
        }
        let mut rounds = 0;
        while got.len() < step {
            rounds += 1;
            if rounds > 20 {
                return Err(format!("received {} of {step} bytes", got.len()));
            }
            let cqes = probe_round(uring).ok_or("the ring did not answer")?;
            for cqe in cqes.iter().filter(|c| c.user_data() == PROBE) {
                let res = cqe.result();
                if res < 0 {
                    return Err(format!("receive failed: {}", std::io::Error::from_raw_os_error(-res)));
                }
                if !cqueue::more(cqe.flags()) {
                    return Err("the multishot receive ended".into());
                }
                let bid = cqueue::buffer_select(cqe.flags()).ok_or("a receive completion without a buffer")?;
                let mut segs: Vec<Seg> = Vec::new();
                bufs.take(bid, res, cqueue::buffer_more(cqe.flags()), bundle, &mut segs)
                    .map_err(|e| format!("buffer ids out of order: {}", e.0))?;
                seen.max_buffers = seen.max_buffers.max(segs.len());
                seen.shared |= segs.first().map(|s| s.bid) == last_bid && segs.first().is_some_and(|s| s.start > 0);
                last_bid = segs.last().map(|s| s.bid);
                for s in &segs {
                    got.extend_from_slice(bufs.slice(*s));
                }
                bufs.give_back(&segs);
            }
        }
    }
    if got != pattern {
        let at = got.iter().zip(&pattern).position(|(a, b)| a != b).unwrap_or(got.len().min(pattern.len()));
        return Err(format!("the received bytes differ from those sent at offset {at}"));
    }
    Ok(seen)
}
