//! Per-thread measurement: histograms and counters, merged by the driver at the end.
//!
//! Only requests sent inside the measured window count (open loop: whose *intended* send
//! time falls inside it), wherever their response lands; errors and bytes count while the
//! window is open (grace period included).

use hdrhistogram::Histogram;

use crate::report::{Errors, StatusClasses};

/// Highest latency tracked (µs); slower ones are recorded as this.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// A latency histogram in µs, 1 µs .. 60 s, 3 significant figures.
#[must_use]
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Cheaper histogram for the per-second timeline (2 significant figures).
#[must_use]
pub fn timeline_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("constant histogram bounds are valid")
}

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
        }
    }

    /// A request completed at `now` (ns since the epoch).
    #[inline]
    pub fn complete(&mut self, slot: Slot, now: u64, outcome: Outcome) {
        if slot.intended < self.warm_end {
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
        match outcome {
            Outcome::Echoed => {}
            Outcome::Mismatch => self.errors.mismatch += 1,
            Outcome::Status(s) => {
                self.status.count(s);
                if !(200..300).contains(&s) {
                    self.errors.status += 1;
                }
            }
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
        r.complete(Slot { intended: 1_000, sent: 3_000 }, 5_000, Outcome::Status(404));
        assert_eq!((r.requests, r.errors.status, r.status.s4xx), (1, 1, 1));
        assert_eq!(r.corrected.max(), 4);
        assert_eq!(r.uncorrected.as_ref().unwrap().max(), 2);
    }

    #[test]
    fn errors_count_only_inside_the_window() {
        let mut r = Recorder::new(10, false, false);
        r.error(ErrorKind::Connect);
        assert_eq!(r.errors.connect, 0);
        r.measuring = true;
        r.error(ErrorKind::Connect);
        r.complete(Slot { intended: 20, sent: 20 }, 30, Outcome::Mismatch);
        assert_eq!((r.errors.connect, r.errors.mismatch), (1, 1));
    }
}
