//! What moves between the caller and the ring: a send's bytes ([`SendBuf`]), a receive buffer
//! kept out of the provided-buffer ring ([`HeldBuf`]), and the refusal when a held buffer is
//! handed to a ring that did not lend it ([`ForeignBuf`]).

/// The bytes of a send: an owned `Vec<u8>` of which everything from `start` on is sent. The
/// ring owns it while the kernel reads it (the pointer given to the kernel targets the Vec's
/// heap block, which does not move when the Vec does) and hands it back, unchanged, in the
/// request's final completion ([`Completion::sent`](super::Completion::sent)).
#[derive(Debug, Default)]
pub struct SendBuf {
    bytes: Vec<u8>,
    start: usize,
}

impl SendBuf {
    /// Send `bytes[start..]` (a start past the end is clamped: nothing to send).
    #[must_use]
    pub fn new(bytes: Vec<u8>, start: usize) -> Self {
        let start = start.min(bytes.len());
        Self { bytes, start }
    }

    /// The bytes to send.
    #[must_use]
    pub fn pending(&self) -> &[u8] {
        &self.bytes[self.start..]
    }

    /// Number of bytes to send.
    #[must_use]
    pub fn len(&self) -> usize {
        self.bytes.len() - self.start
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer and the start offset it was made with.
    #[must_use]
    pub fn into_parts(self) -> (Vec<u8>, usize) {
        (self.bytes, self.start)
    }
}

/// A piece of a provided receive buffer: `len` bytes from offset `start` of buffer `bid`.
/// A completion lends one (or, with recv bundles, several in order; with incremental
/// buffers, a piece that does not start at 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seg {
    pub bid: u16,
    pub start: u32,
    pub len: u32,
}

/// The pieces a held buffer covers: one without an allocation, several (a bundle) boxed.
#[derive(Debug)]
pub(super) enum Segs {
    One(Seg),
    Many(Box<[Seg]>),
}

impl Segs {
    pub fn from_slice(segs: &[Seg]) -> Option<Self> {
        match segs {
            [] => None,
            [one] => Some(Segs::One(*one)),
            many => Some(Segs::Many(many.into())),
        }
    }

    pub fn as_slice(&self) -> &[Seg] {
        match self {
            Segs::One(s) => std::slice::from_ref(s),
            Segs::Many(v) => v,
        }
    }
}

/// Received bytes kept out of the provided-buffer ring after their completion, so that they
/// can be sent without a copy ([`Ring::hold`](super::Ring::hold)): the proxy's zero-copy relay,
/// and echo straight from the provided buffer. With recv bundles it may span several buffers,
/// in order. It is a token, not a reference: the bytes stay in the ring's memory, and the
/// token names the ring that lent it. Give it back with [`Ring::release`](super::Ring::release);
/// dropping it instead leaves its buffers out of the ring for good (no memory is unsafe, the
/// ring just has fewer).
#[derive(Debug)]
#[must_use = "a held receive buffer goes back to the ring only through Ring::release"]
pub struct HeldBuf {
    /// The ring that lent it.
    pub(super) ring: u64,
    pub(super) segs: Segs,
    /// Bytes of data in all its pieces.
    pub(super) len: u32,
    /// Bytes of it already sent.
    pub(super) off: u32,
}

impl HeldBuf {
    pub(super) fn new(ring: u64, segs: Segs) -> Self {
        let len = segs.as_slice().iter().map(|s| s.len).sum();
        Self { ring, segs, len, off: 0 }
    }

    /// Bytes not yet sent.
    #[must_use]
    pub fn len(&self) -> usize {
        (self.len - self.off) as usize
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == self.off
    }

    /// Provided buffers it covers (more than one for a bundle).
    #[must_use]
    pub fn buffers(&self) -> usize {
        self.segs.as_slice().len()
    }

    /// Record that the first `n` unsent bytes were sent (clamped to what is left).
    pub fn advance(&mut self, n: usize) {
        self.off += u32::try_from(n).unwrap_or(u32::MAX).min(self.len - self.off);
    }

    /// The unsent bytes, as pieces in order (the first one cut at the send offset).
    pub(super) fn pending(&self) -> impl Iterator<Item = Seg> + '_ {
        let mut skip = self.off;
        self.segs.as_slice().iter().filter_map(move |s| {
            if skip >= s.len {
                skip -= s.len;
                return None;
            }
            let cut = std::mem::take(&mut skip);
            Some(Seg { bid: s.bid, start: s.start + cut, len: s.len - cut })
        })
    }
}

/// A held receive buffer was handed to a ring other than the one that lent it: refused (the
/// buffer stays out of both rings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForeignBuf {
    /// The ring that lent the buffer.
    pub owner: u64,
    /// The ring it was handed to.
    pub ring: u64,
}

impl std::fmt::Display for ForeignBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a receive buffer of io_uring #{} was handed to io_uring #{}: refused", self.owner, self.ring)
    }
}

impl std::error::Error for ForeignBuf {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_buffers_send_from_their_start() {
        let b = SendBuf::new(b"hello world".to_vec(), 6);
        assert_eq!(b.pending(), b"world");
        assert_eq!(b.len(), 5);
        let (v, start) = b.into_parts();
        assert_eq!((v.len(), start), (11, 6));
        let past = SendBuf::new(vec![1, 2], 9);
        assert!(past.is_empty());
        assert_eq!(past.into_parts().1, 2, "clamped");
    }

    #[test]
    fn held_buffers_advance_within_their_length() {
        let mut h = HeldBuf::new(1, Segs::One(Seg { bid: 0, start: 0, len: 10 }));
        h.advance(4);
        assert_eq!(h.len(), 6);
        assert_eq!(h.pending().collect::<Vec<_>>(), [Seg { bid: 0, start: 4, len: 6 }]);
        h.advance(100);
        assert!(h.is_empty());
        assert_eq!(h.pending().count(), 0);
    }

    #[test]
    fn held_bundles_send_their_pieces_in_order_from_the_offset() {
        let segs =
            [Seg { bid: 3, start: 0, len: 8 }, Seg { bid: 1, start: 0, len: 8 }, Seg { bid: 2, start: 5, len: 3 }];
        let mut h = HeldBuf::new(1, Segs::from_slice(&segs).unwrap());
        assert_eq!((h.len(), h.buffers()), (19, 3));
        assert_eq!(h.pending().collect::<Vec<_>>(), segs);
        h.advance(10);
        assert_eq!(h.pending().collect::<Vec<_>>(), [Seg { bid: 1, start: 2, len: 6 }, segs[2]]);
        h.advance(6);
        assert_eq!(h.pending().collect::<Vec<_>>(), [segs[2]]);
        assert!(Segs::from_slice(&[]).is_none());
    }
}
