//! The echo verification pattern: a deterministic byte stream indexed by stream offset.
//!
//! The load generator never keeps a copy of what it sent. Byte `i` of every echo stream is
//! [`byte_at`]`(i)`, so whatever comes back at offset `i` can be checked on the spot, in bulk,
//! with a slice comparison against a static table. The stream is periodic with a prime period
//! ([`PERIOD`]), long enough that a dropped, duplicated or reordered segment shows up unless it
//! is an exact multiple of 65521 bytes long, and misaligned with every power-of-two message
//! size. Giving each connection its own starting offset also catches bytes delivered to the
//! wrong connection.
//!
//! Sending needs no buffer either: [`slice`] hands out the pattern bytes straight from the
//! table (it is `2 * PERIOD` long so any window of up to `PERIOD` bytes is contiguous).

/// Period of the pattern, in bytes (the largest prime below 2^16).
pub const PERIOD: usize = 65_521;

static TABLE: [u8; 2 * PERIOD] = build();

/// xorshift32, high byte: cheap, full period, no short cycles in the byte sequence.
const fn build() -> [u8; 2 * PERIOD] {
    let mut t = [0u8; 2 * PERIOD];
    let mut x: u32 = 0x2545_f491;
    let mut i = 0;
    while i < PERIOD {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        t[i] = (x >> 24) as u8;
        t[i + PERIOD] = t[i];
        i += 1;
    }
    t
}

#[inline]
fn start(offset: u64) -> usize {
    // The remainder is below PERIOD, so it fits in usize.
    (offset % PERIOD as u64) as usize
}

/// The pattern byte at stream offset `offset`.
#[must_use]
#[inline]
pub fn byte_at(offset: u64) -> u8 {
    TABLE[start(offset)]
}

/// The pattern bytes starting at `offset`: `min(max, PERIOD)` of them (possibly fewer than
/// asked; call again at the new offset for the rest).
#[must_use]
#[inline]
pub fn slice(offset: u64, max: usize) -> &'static [u8] {
    let s = start(offset);
    &TABLE[s..s + max.min(PERIOD)]
}

/// Fill `out` with the pattern bytes `offset .. offset + out.len()`.
pub fn fill(mut offset: u64, out: &mut [u8]) {
    let mut rest = out;
    while !rest.is_empty() {
        let src = slice(offset, rest.len());
        let (head, tail) = rest.split_at_mut(src.len());
        head.copy_from_slice(src);
        offset = offset.wrapping_add(src.len() as u64);
        rest = tail;
    }
}

/// Number of bytes of `data` that differ from the pattern at `offset .. offset + data.len()`
/// (0 when every byte matches; the common case costs one `memcmp` per 64 KiB).
#[must_use]
pub fn mismatches(mut offset: u64, data: &[u8]) -> usize {
    let mut bad = 0;
    let mut rest = data;
    while !rest.is_empty() {
        let expect = slice(offset, rest.len());
        let (head, tail) = rest.split_at(expect.len());
        if head != expect {
            bad += head.iter().zip(expect).filter(|(a, b)| a != b).count();
        }
        offset = offset.wrapping_add(head.len() as u64);
        rest = tail;
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_is_periodic_and_not_trivial() {
        assert_eq!(byte_at(0), byte_at(PERIOD as u64));
        assert_eq!(byte_at(12_345), byte_at(12_345 + 7 * PERIOD as u64));
        let first = slice(0, 4096);
        assert_eq!(first.len(), 4096);
        // Every byte value shows up, and no short period hides in the sequence.
        let mut seen = [false; 256];
        for &b in slice(0, PERIOD) {
            seen[usize::from(b)] = true;
        }
        assert!(seen.iter().all(|&s| s));
        for p in [1usize, 2, 4, 64, 256, 4096] {
            assert_ne!(&first[..1024], slice(p as u64, 1024), "period {p}");
        }
    }

    #[test]
    fn slices_are_capped_at_one_period() {
        assert_eq!(slice(PERIOD as u64 - 1, usize::MAX).len(), PERIOD);
        assert_eq!(slice(u64::MAX, 10).len(), 10);
        assert!(slice(5, 0).is_empty());
    }

    #[test]
    fn one_corrupted_byte_is_one_mismatch() {
        let mut buf = vec![0; 200_000];
        fill(77, &mut buf);
        assert_eq!(mismatches(77, &buf), 0);
        buf[150_000] ^= 0x40;
        assert_eq!(mismatches(77, &buf), 1);
        // Shifted by one byte (a dropped byte): almost everything mismatches.
        assert!(mismatches(78, &buf) > 150_000);
    }

    proptest! {
        #[test]
        fn fill_agrees_with_byte_at(offset in any::<u64>(), len in 0usize..3000) {
            let mut buf = vec![0; len];
            fill(offset, &mut buf);
            for (i, &b) in buf.iter().enumerate() {
                prop_assert_eq!(b, byte_at(offset.wrapping_add(i as u64)));
            }
        }

        #[test]
        fn chunked_verification_matches_whole(offset in 0u64..1 << 40, len in 1usize..200_000,
                                              cuts in proptest::collection::vec(1usize..70_000, 0..8)) {
            let mut buf = vec![0; len];
            fill(offset, &mut buf);
            let mut off = offset;
            let mut rest = &buf[..];
            for c in cuts {
                let n = c.min(rest.len());
                prop_assert_eq!(mismatches(off, &rest[..n]), 0);
                off += n as u64;
                rest = &rest[n..];
            }
            prop_assert_eq!(mismatches(off, rest), 0);
        }
    }
}
