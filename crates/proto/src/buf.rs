//! Output buffering with a send cursor.
//!
//! Short writes are normal events: the backend sends `pending()`, then reports how much the
//! kernel took with `advance(n)`. All cursor arithmetic lives here and is unit-tested.

/// Bytes waiting to be sent on one connection.
///
/// The allocation is kept across messages (no allocation per request once warm), but an
/// unusually large one is released when the buffer drains so that idle connections stay small.
#[derive(Debug, Default)]
pub struct OutBuf {
    buf: Vec<u8>,
    sent: usize,
}

/// Above this capacity a drained buffer gives its memory back.
const KEEP_CAPACITY: usize = 64 * 1024;

impl OutBuf {
    #[must_use]
    pub const fn new() -> Self {
        Self { buf: Vec::new(), sent: 0 }
    }

    /// Bytes not yet sent.
    #[must_use]
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    /// Number of bytes not yet sent.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buf.len() - self.sent
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where protocols append output.
    pub fn writer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub fn extend_from_slice(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Record that the first `n` pending bytes were sent.
    ///
    /// # Panics
    /// If `n` exceeds the pending length: that would be a backend bug (the kernel never
    /// reports more than it was given), never something a peer can cause.
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advance({n}) past the {} pending bytes", self.len());
        self.sent += n;
        if self.sent == self.buf.len() {
            self.clear();
        } else if self.sent >= KEEP_CAPACITY && self.sent * 2 >= self.buf.len() {
            // Compact: what is left is at most as large as what is dropped.
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
    }

    /// Drop everything pending, keeping a modest allocation for reuse.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.sent = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
    }

    /// The buffer and how many of its bytes were already sent, for a transport that must own
    /// the bytes while the kernel sends them (io_uring); [`OutBuf::from_parts`] takes them back.
    #[must_use]
    pub fn into_parts(self) -> (Vec<u8>, usize) {
        (self.buf, self.sent)
    }

    /// Rebuild a buffer from [`OutBuf::into_parts`] (a cursor past the end is clamped).
    #[must_use]
    pub fn from_parts(buf: Vec<u8>, sent: usize) -> Self {
        let sent = sent.min(buf.len());
        let mut b = Self { buf, sent };
        if b.sent == b.buf.len() {
            b.clear();
        }
        b
    }

    /// Heap bytes held (for memory accounting in tests and summaries).
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// Per-connection backpressure: stop reading a peer whose output is above `high` until it has
/// drained to `low` or below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    pub high: usize,
    pub low: usize,
}

impl Default for Watermarks {
    fn default() -> Self {
        Self { high: 256 * 1024, low: 64 * 1024 }
    }
}

impl Watermarks {
    /// Whether a connection with `pending` output bytes may be read, given whether reading is
    /// currently paused. Hysteresis: pause above `high`, resume at or below `low`.
    #[must_use]
    pub fn may_read(&self, pending: usize, paused: bool) -> bool {
        if paused {
            pending <= self.low
        } else {
            pending <= self.high
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_writes_advance_through_the_buffer() {
        let mut b = OutBuf::new();
        b.extend_from_slice(b"hello world");
        b.advance(3);
        assert_eq!(b.pending(), b"lo world");
        b.extend_from_slice(b"!");
        assert_eq!(b.pending(), b"lo world!");
        b.advance(8);
        assert_eq!(b.pending(), b"!");
        b.advance(1);
        assert!(b.is_empty());
        assert_eq!(b.pending(), b"");
    }

    #[test]
    fn remaining_length_is_not_confused_with_the_cumulative_offset() {
        // The bug in io-uring's tcp_echo example: comparing the remaining length with a
        // cumulative offset. Many small advances must land exactly on the end.
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut b = OutBuf::new();
        b.extend_from_slice(&data);
        let mut got = Vec::new();
        let mut step = 1;
        while !b.is_empty() {
            let n = step.min(b.len());
            got.extend_from_slice(&b.pending()[..n]);
            b.advance(n);
            step = step % 97 + 13;
        }
        assert_eq!(got, data);
    }

    #[test]
    fn compaction_keeps_unsent_bytes_in_order() {
        let mut b = OutBuf::new();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        b.extend_from_slice(&data);
        b.advance(150_000);
        assert_eq!(b.pending(), &data[150_000..]);
        b.extend_from_slice(b"tail");
        b.advance(50_000);
        assert_eq!(b.pending(), b"tail");
    }

    #[test]
    fn draining_releases_large_allocations_only() {
        let mut b = OutBuf::new();
        b.extend_from_slice(&[0u8; 100]);
        b.advance(100);
        assert!(b.capacity() >= 100, "small buffers are kept for reuse");
        b.extend_from_slice(&vec![0u8; KEEP_CAPACITY * 4]);
        let n = b.len();
        b.advance(n);
        assert_eq!(b.capacity(), 0, "large buffers are released when drained");
    }

    #[test]
    #[should_panic(expected = "past the")]
    fn advancing_past_the_end_is_a_bug() {
        let mut b = OutBuf::new();
        b.extend_from_slice(b"ab");
        b.advance(3);
    }

    #[test]
    fn parts_round_trip_keeps_the_cursor() {
        let mut b = OutBuf::new();
        b.extend_from_slice(b"abcdef");
        b.advance(2);
        let (v, sent) = b.into_parts();
        assert_eq!((&v[..], sent), (&b"abcdef"[..], 2));
        let b = OutBuf::from_parts(v, sent + 1);
        assert_eq!(b.pending(), b"def");
        assert!(OutBuf::from_parts(b"xy".to_vec(), 9).is_empty());
    }

    #[test]
    fn watermarks_have_hysteresis() {
        let w = Watermarks { high: 100, low: 10 };
        assert!(w.may_read(100, false));
        assert!(!w.may_read(101, false));
        assert!(!w.may_read(50, true), "paused stays paused until low");
        assert!(w.may_read(10, true));
    }
}
