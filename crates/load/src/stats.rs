//! Per-thread measurement: histograms and counters, merged by the driver at the end.
//!
//! Only requests sent inside the measured window count (open loop: whose *intended* send
//! time falls inside it), wherever their response lands; errors and bytes count while the
//! window is open (grace period included).
//!
//! A request counts (and its latency is recorded) only when it succeeded: an echo message
//! whose every byte came back right, an HTTP response with a 2xx status. A reply that fails
//! verification is an error, never a request.

use hdrhistogram::Histogram;

use crate::histogram::{latency_histogram, timeline_histogram};
use crate::report::{Errors, StatusClasses};

/// One in-flight request: when it should have been sent (open loop) and when it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub intended: u64,
    pub sent: u64,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Echo message, every byte verified.
    Echoed,
    /// Echo message with at least one wrong byte.
    Mismatch,
    /// HTTP response with this status.
    Status(u16),
}

/// Error kinds counted per connection event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Read,
    Write,
    Timeout,
}

/// What one load thread measured.
#[derive(Debug)]
pub struct Recorder {
    pub warm_end: u64,
    /// The window is open (errors and bytes count).
    pub measuring: bool,
    pub corrected: Histogram<u64>,
    /// Open loop only: latency from the actual send time.
    pub uncorrected: Option<Histogram<u64>>,
    /// `--timeline`: corrected latencies of the current second.
    pub second: Option<Histogram<u64>>,
    pub requests: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub errors: Errors,
    pub status: StatusClasses,
    pub connects: u64,
    /// Replies of any kind received so far, warm-up included (the live line shows the rate
    /// during warm-up from it).
    pub replies: u64,
}

impl Recorder {
    #[must_use]
    pub fn new(warm_end: u64, open_loop: bool, timeline: bool) -> Self {
        Self {
            warm_end,
            measuring: warm_end == 0,
            corrected: latency_histogram(),
            uncorrected: open_loop.then(latency_histogram),
            second: timeline.then(timeline_histogram),
            requests: 0,
            bytes_read: 0,
            bytes_written: 0,
            errors: Errors::default(),
            status: StatusClasses::default(),
            connects: 0,
            replies: 0,
        }
    }

    /// A request completed at `now` (ns since the epoch).
    #[inline]
    pub fn complete(&mut self, slot: Slot, now: u64, outcome: Outcome) {
        self.replies += 1;
        if slot.intended < self.warm_end {
            return;
        }
        let ok = match outcome {
            Outcome::Echoed => true,
            Outcome::Mismatch => {
                self.errors.mismatch += 1;
                false
            }
            Outcome::Status(s) => {
                self.status.count(s);
                let ok = (200..300).contains(&s);
                if !ok {
                    self.errors.status += 1;
                }
                ok
            }
        };
        if !ok {
            return;
        }
        self.requests += 1;
        let us = now.saturating_sub(slot.intended) / 1000;
        self.corrected.saturating_record(us);
        if let Some(h) = &mut self.uncorrected {
            h.saturating_record(now.saturating_sub(slot.sent) / 1000);
        }
        if let Some(h) = &mut self.second {
            h.saturating_record(us);
        }
    }

    #[inline]
    pub fn error(&mut self, kind: ErrorKind) {
        if !self.measuring {
            return;
        }
        let e = &mut self.errors;
        match kind {
            ErrorKind::Connect => e.connect += 1,
            ErrorKind::Read => e.read += 1,
            ErrorKind::Write => e.write += 1,
            ErrorKind::Timeout => e.timeout += 1,
        }
    }

    #[inline]
    pub fn read(&mut self, n: usize) {
        if self.measuring {
            self.bytes_read += n as u64;
        }
    }

    #[inline]
    pub fn written(&mut self, n: usize) {
        if self.measuring {
            self.bytes_written += n as u64;
        }
    }

    pub fn connected(&mut self) {
        if self.measuring {
            self.connects += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_requests_do_not_count() {
        let mut r = Recorder::new(1_000, true, false);
        r.complete(Slot { intended: 999, sent: 999 }, 5_000, Outcome::Status(200));
        assert_eq!(r.requests, 0);
        r.complete(Slot { intended: 1_000, sent: 3_000 }, 5_000, Outcome::Status(200));
        assert_eq!((r.requests, r.errors.status, r.status.s2xx), (1, 0, 1));
        assert_eq!(r.corrected.max(), 4);
        assert_eq!(r.uncorrected.as_ref().unwrap().max(), 2);
        assert_eq!(r.replies, 2, "warm-up replies are seen, not counted");
    }

    #[test]
    fn failed_replies_are_errors_never_requests() {
        let mut r = Recorder::new(0, false, true);
        r.complete(Slot { intended: 0, sent: 0 }, 7_000, Outcome::Status(404));
        r.complete(Slot { intended: 0, sent: 0 }, 7_000, Outcome::Status(503));
        r.complete(Slot { intended: 0, sent: 0 }, 7_000, Outcome::Mismatch);
        assert_eq!(r.requests, 0);
        assert_eq!((r.errors.status, r.errors.mismatch, r.status.s4xx, r.status.s5xx), (2, 1, 1, 1));
        assert!(r.corrected.is_empty() && r.second.as_ref().unwrap().is_empty(), "no latency of a failure");
    }

    #[test]
    fn errors_count_only_inside_the_window() {
        let mut r = Recorder::new(10, false, false);
        r.error(ErrorKind::Connect);
        assert_eq!(r.errors.connect, 0);
        r.measuring = true;
        r.error(ErrorKind::Connect);
        r.complete(Slot { intended: 20, sent: 20 }, 30, Outcome::Mismatch);
        assert_eq!((r.errors.connect, r.errors.mismatch, r.requests), (1, 1, 0));
    }
}
