//! The worker's coarse clock: one `Instant` and one cached `Date` header per loop iteration,
//! the header re-formatted at most once per second. Owned by each worker (no global cell).

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub const DATE_LEN: usize = 29;

pub struct Clock {
    now: Instant,
    date: [u8; DATE_LEN],
    date_secs: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    #[must_use]
    pub fn new() -> Self {
        let mut c = Self { now: Instant::now(), date: [b' '; DATE_LEN], date_secs: u64::MAX };
        c.update();
        c
    }

    /// Read the clocks (vDSO, no system call) and refresh the date when the second changed.
    pub fn update(&mut self) {
        self.now = Instant::now();
        let sys = SystemTime::now();
        let secs = sys.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if secs != self.date_secs {
            self.date_secs = secs;
            let mut w = &mut self.date[..];
            // An HttpDate always formats to exactly DATE_LEN bytes.
            let _ = write!(w, "{}", httpdate::HttpDate::from(sys));
            debug_assert!(w.is_empty());
        }
    }

    #[must_use]
    pub const fn now(&self) -> Instant {
        self.now
    }

    #[must_use]
    pub fn date(&self) -> &[u8] {
        &self.date
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_is_an_imf_fixdate() {
        let c = Clock::new();
        let d = std::str::from_utf8(c.date()).unwrap();
        assert_eq!(d.len(), DATE_LEN);
        assert!(d.ends_with(" GMT"), "{d}");
        assert!(httpdate::parse_http_date(d).is_ok(), "{d}");
    }
}
