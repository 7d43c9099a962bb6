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

/// A receive buffer kept out of the provided-buffer ring after its completion, so that its
/// bytes can be sent without a copy ([`Ring::hold`](super::Ring::hold)). It is a token, not a
/// reference: the bytes stay in the ring's memory, and the token names the ring that lent it.
/// Give it back with [`Ring::release`](super::Ring::release); dropping it instead leaves the
/// buffer out of the ring for good (no memory is unsafe, the ring just has one less).
#[derive(Debug)]
#[must_use = "a held receive buffer goes back to the ring only through Ring::release"]
pub struct HeldBuf {
    /// The ring that lent it.
    pub(super) ring: u64,
    pub(super) bid: u16,
    /// Bytes of data in the buffer.
    pub(super) len: u32,
    /// Bytes of it already sent.
    pub(super) off: u32,
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
        let mut h = HeldBuf { ring: 1, bid: 0, len: 10, off: 0 };
        h.advance(4);
        assert_eq!(h.len(), 6);
        h.advance(100);
        assert!(h.is_empty());
    }
}
