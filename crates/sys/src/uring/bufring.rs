//! The provided-buffer ring: `count` receive buffers of `size` bytes that the kernel picks
//! from when a multishot receive has data, so that a connection holds no receive buffer while
//! it waits.
//!
//! Ownership of each buffer moves between the kernel (it is in the ring, or, with
//! incremental consumption, still being filled) and the worker (completions lent pieces of
//! it). Per buffer id this module records whether the kernel may still write it and how many
//! pieces the worker holds, so that a buffer is given back only once both are over, and a
//! piece is only ever read while the kernel cannot write it.
//!
//! Two kernel options change what one completion covers, and both are decoded here:
//! - **bundles** (`IORING_RECVSEND_BUNDLE`, Linux 6.10): one completion for several buffers.
//!   The CQE names the first; the others are the ring entries that followed it, in ring
//!   order (not id order), every one full but the last. The ring order is mirrored here
//!   (`order`, `pos`) to find them.
//! - **incremental consumption** (`IOU_PBUF_RING_INC`, Linux 6.12): the kernel takes only the
//!   bytes it needs from a buffer and leaves the rest at the head of the ring for the next
//!   receive, flagging `IORING_CQE_F_BUF_MORE` while it keeps the buffer. Pieces then start
//!   where the previous receive ended (`used`).
//!
//! A completion that contradicts this bookkeeping (a buffer the kernel does not hold, more
//! bytes than the buffers can carry) is a kernel bug, never a peer's doing: its bytes are not
//! read and its buffers are not reused (see [`BufRing::take`]).

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

use super::mmap::Mmap;
use super::tokens::Seg;
use crate::count_syscall;

/// Buffer group id of the worker's ring.
pub(super) const BGID: u16 = 0;

/// One buffer's state on the worker's side.
#[derive(Clone, Copy, Debug, Default)]
struct Buf {
    /// Published in the ring and not released by the kernel: the kernel may write it (from
    /// `used` on, with incremental consumption).
    in_kernel: bool,
    /// Pieces of it lent to or held by the worker.
    refs: u16,
    /// Incremental consumption: bytes of it the kernel has filled so far.
    used: u32,
}

pub(super) struct BufRing {
    entries: Mmap,
    data: Mmap,
    count: u16,
    size: u32,
    bgid: u16,
    /// Registered with IOU_PBUF_RING_INC.
    inc: bool,
    /// Our copy of the tail; published to entry 0's `resv` with a release store.
    tail: u16,
    /// Ring position (tail value when written, masked) -> buffer id written there.
    order: Vec<u16>,
    /// Buffer id -> ring position it was last written at.
    pos: Vec<u16>,
    bufs: Vec<Buf>,
    /// The kernel may still hold buffers: never unmap (see `Ring::drop`).
    leak: bool,
}

/// Why [`BufRing::take`] refused a completion's buffers.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Inconsistent(pub String);

impl BufRing {
    /// Map the ring and the buffers and put every buffer in the ring (not yet registered).
    /// `reversed` publishes them in descending id order (the bundle self-test uses it to make
    /// ring order differ from id order).
    pub fn new(count: u16, size: u32, bgid: u16, reversed: bool, huge: bool) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffer count must be a power of two <= 32768"));
        }
        let total = usize::from(count)
            .checked_mul(size as usize)
            .filter(|&n| n > 0 && n <= isize::MAX as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring size out of range"))?;
        let entries = Mmap::anonymous(usize::from(count) * std::mem::size_of::<BufRingEntry>(), false)?;
        // Resident up front: the pool is a fixed per-worker cost, rather than RSS that creeps
        // up as the ring cycles through every buffer. On huge pages if asked (`huge`): the ring
        // hands out a different buffer for every receive, so with 4 KiB pages nearly every
        // receive may also miss the TLB (`--uring-huge-pages`; its A/B found no difference).
        let data = Mmap::anonymous(total, huge)?;
        let n = usize::from(count);
        let mut ring = Self {
            entries,
            data,
            count,
            size,
            bgid,
            inc: false,
            tail: 0,
            order: vec![0; n],
            pos: vec![0; n],
            bufs: vec![Buf::default(); n],
            leak: false,
        };
        for i in 0..count {
            ring.write_entry(if reversed { count - 1 - i } else { i });
        }
        ring.publish();
        Ok(ring)
    }

    /// Register the ring with the kernel as its buffer group, consumed incrementally if
    /// `inc` (IOU_PBUF_RING_INC).
    pub fn register(&mut self, submitter: &Submitter<'_>, inc: bool) -> io::Result<()> {
        let flags = if inc { io_uring::types::IOU_PBUF_RING_INC as u16 } else { 0 };
        count_syscall();
        // SAFETY: `entries` maps `count` ring entries, page aligned, and stays mapped until
        // after the group is unregistered or the ring is gone (`Ring` drops the IoUring first
        // and leaks the mapping if the kernel may still use it); buffer addresses in it point
        // into `data`, which lives just as long.
        let r = unsafe {
            submitter.register_buf_ring_with_flags(self.entries.ptr.as_ptr() as u64, self.count, self.bgid, flags)
        };
        if r.is_ok() {
            self.inc = inc;
        }
        r
    }

    pub fn unregister(&self, submitter: &Submitter<'_>) {
        count_syscall();
        if let Err(e) = submitter.unregister_buf_ring(self.bgid) {
            tracing::debug!("unregistering the buffer ring: {e}");
        }
    }

    pub fn leak(&mut self) {
        self.leak = true;
    }

    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// KiB of the buffers backed by transparent huge pages.
    pub fn huge_kib(&self) -> Option<u64> {
        self.data.huge_kib()
    }

    /// A receive completion named buffer `first` for `res` bytes (`buf_more`: the kernel
    /// flagged IORING_CQE_F_BUF_MORE; `bundle`: the receive may span several buffers). On
    /// success the pieces it lends are appended to `out`, in order, and the worker holds one
    /// reference on each until [`BufRing::unref`]. A completion that contradicts the
    /// bookkeeping changes nothing and lends nothing: its buffers stay out of the ring for
    /// good rather than risk reuse while the kernel writes them.
    pub fn take(
        &mut self,
        first: u16,
        res: i32,
        buf_more: bool,
        bundle: bool,
        out: &mut Vec<Seg>,
    ) -> Result<(), Inconsistent> {
        let Ok(mut left) = u32::try_from(res) else {
            // A failed receive consumes no buffer (the kernel recycles it before posting).
            return Ok(());
        };
        let mask = self.count - 1;
        let Some(&p0) = self.pos.get(usize::from(first)) else {
            return Err(Inconsistent(format!("unknown buffer id {first}")));
        };
        let start_len = out.len();
        let mut p = p0;
        loop {
            let bid = self.order[usize::from(p & mask)];
            let b = self.bufs[usize::from(bid)];
            if !b.in_kernel || (p == p0 && bid != first) {
                out.truncate(start_len);
                return Err(Inconsistent(format!(
                    "buffer {bid} (ring position {p}, completion named {first} for {res} bytes) is not the kernel's"
                )));
            }
            let start = if self.inc { b.used } else { 0 };
            let n = left.min(self.size - start);
            if n > 0 || !self.inc {
                out.push(Seg { bid, start, len: n });
            }
            left -= n;
            if left == 0 {
                break;
            }
            let pieces = out.len() - start_len;
            if !bundle || pieces >= usize::from(self.count) {
                out.truncate(start_len);
                return Err(Inconsistent(format!(
                    "{res} bytes from buffer {first} exceed what {pieces} buffer(s) of {} bytes can carry",
                    self.size
                )));
            }
            p = p.wrapping_add(1);
        }
        // Consistent: apply. Every piece but the last filled its buffer to the end, which the
        // kernel then released; the last is released too unless the kernel keeps filling it.
        let pieces = out.len() - start_len;
        for (i, s) in out[start_len..].iter().enumerate() {
            let b = &mut self.bufs[usize::from(s.bid)];
            b.refs += 1;
            if self.inc {
                b.used = s.start + s.len;
                let released = b.used == self.size;
                if i + 1 == pieces && released == buf_more {
                    tracing::debug!(
                        "buffer {}: IORING_CQE_F_BUF_MORE is {buf_more} with {} of {} bytes used",
                        s.bid,
                        b.used,
                        self.size
                    );
                }
                b.in_kernel = !released;
            } else {
                b.in_kernel = false;
            }
        }
        Ok(())
    }

    /// The worker is done with one piece of buffer `bid`: once it holds none and the kernel
    /// has released it, the buffer goes back into the ring (visible at the next
    /// [`BufRing::publish`]). Returns whether it did.
    pub fn unref(&mut self, bid: u16) -> bool {
        let Some(b) = self.bufs.get_mut(usize::from(bid)) else { return false };
        if b.refs == 0 {
            return false;
        }
        b.refs -= 1;
        if b.refs > 0 || b.in_kernel {
            return false;
        }
        self.write_entry(bid);
        true
    }

    /// Give pieces back and publish what went back into the ring.
    pub fn give_back(&mut self, segs: &[Seg]) {
        let mut any = false;
        for s in segs {
            any |= self.unref(s.bid);
        }
        if any {
            self.publish();
        }
    }

    /// The bytes of a piece the worker holds (empty if it holds none of that buffer).
    pub fn slice(&self, s: Seg) -> &[u8] {
        if self.bufs.get(usize::from(s.bid)).is_none_or(|b| b.refs == 0) {
            return &[];
        }
        let start = s.start.min(self.size) as usize;
        let len = s.len.min(self.size - start as u32) as usize;
        let offset = usize::from(s.bid) * self.size as usize + start;
        // SAFETY: `bid < count` and `start + len <= size`, so the range is inside `data`. The
        // kernel wrote these bytes before posting the completion that lent them and cannot
        // write them again while the worker holds a piece of the buffer: without incremental
        // consumption the buffer is out of the ring until `unref` puts it back (which needs
        // `&mut self` and so waits for this borrow); with it, the kernel only writes past
        // `used`, which is at or past the end of every piece lent so far.
        unsafe { std::slice::from_raw_parts(self.data.ptr.as_ptr().add(offset), len) }
    }

    /// The address of a piece's first byte, for a send straight out of it.
    pub fn addr(&self, s: Seg) -> *const u8 {
        self.slice(s).as_ptr()
    }

    /// Write `bid` into the entry at our tail and advance it (not yet visible to the kernel).
    fn write_entry(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.count - 1));
        let addr = self.data.ptr.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `idx < count`, inside `entries`, which is page aligned and sized for `count`
        // entries of io-uring's `#[repr(transparent)]` `struct io_uring_buf`, zeroed by the
        // mapping, so the reference is aligned and valid. The slot at our tail is not visible
        // to the kernel (it reads only up to the published tail) and holds no buffer it still
        // needs: `bid` was out of the ring, so fewer than `count` buffers are in it. The only
        // field the kernel may read concurrently is entry 0's `resv` (the tail), which the
        // setters below do not touch.
        let e = unsafe { &mut *self.entries.ptr.as_ptr().cast::<BufRingEntry>().add(idx) };
        e.set_addr(addr);
        e.set_len(self.size);
        e.set_bid(bid);
        self.order[idx] = bid;
        self.pos[usize::from(bid)] = self.tail;
        self.bufs[usize::from(bid)] = Buf { in_kernel: true, refs: 0, used: 0 };
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make the entries written so far visible to the kernel.
    fn publish(&self) {
        let base = self.entries.ptr.as_ptr().cast::<BufRingEntry>().cast_const();
        // SAFETY: `base` is the first entry of our live, page-aligned ring mapping, as
        // `BufRingEntry::tail` requires; it returns the address of that entry's `resv` field.
        let tail = unsafe { BufRingEntry::tail(base) };
        // SAFETY: the tail is a u16 inside our mapping, aligned (offset 14 of a page-aligned
        // entry), and only ever accessed atomically: the kernel reads it with an acquire load,
        // we store it with release after writing the entries.
        let tail = unsafe { &*tail.cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leak {
            // The kernel may still write into `data`: keep both mappings forever.
            self.entries.leak();
            self.data.leak();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(bid: u16, start: u32, len: u32) -> Seg {
        Seg { bid, start, len }
    }

    #[test]
    fn huge_pages_are_asked_for_only_when_configured() {
        // 256 x 16 KiB = 4 MiB: two huge pages' worth.
        let off = BufRing::new(256, 16 * 1024, BGID, false, false).unwrap();
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        if thp.contains("[always]") {
            eprintln!("THP is [always] here: a mapping may get huge pages without asking, not checked");
        } else {
            assert_eq!(off.huge_kib(), Some(0), "--uring-huge-pages off: no MADV_HUGEPAGE, no huge page");
        }
        let on = BufRing::new(256, 16 * 1024, BGID, false, true).unwrap();
        assert_eq!(on.data.ptr.as_ptr() as usize % super::super::mmap::HUGE_PAGE, 0, "on: huge-page aligned");
        assert!(on.huge_kib().is_some());
    }

    #[test]
    fn buffers_are_readable_only_while_lent_and_given_back_once() {
        let mut r = BufRing::new(4, 64, BGID, false, false).unwrap();
        assert_eq!(r.tail, 4, "every buffer starts in the ring");
        assert!(r.slice(seg(1, 0, 10)).is_empty(), "a buffer in the ring is the kernel's");
        let mut out = Vec::new();
        r.take(1, 10, false, false, &mut out).unwrap();
        assert_eq!(out, [seg(1, 0, 10)]);
        assert_eq!(r.slice(out[0]).len(), 10);
        assert_eq!(r.slice(seg(1, 0, 1000)).len(), 64, "never past the buffer");
        assert!(r.take(1, 10, false, false, &mut Vec::new()).is_err(), "taken twice");
        r.give_back(&out);
        assert!(r.slice(out[0]).is_empty());
        r.give_back(&out); // a second give is ignored
        assert_eq!(r.tail, 5);
        assert!(r.take(9, 1, false, false, &mut Vec::new()).is_err(), "unknown id");
        assert!(r.take(2, 65, false, false, &mut Vec::new()).is_err(), "more than a buffer without bundles");
        assert_eq!(r.take(2, -104, false, false, &mut out), Ok(()), "an error lends nothing");
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_bundle_follows_ring_order_not_id_order() {
        let mut r = BufRing::new(4, 8, BGID, true, false).unwrap(); // ring order 3, 2, 1, 0
        let mut out = Vec::new();
        r.take(3, 20, false, true, &mut out).unwrap();
        assert_eq!(out, [seg(3, 0, 8), seg(2, 0, 8), seg(1, 0, 4)]);
        // Giving back 2 then 3 then 1 puts them in the ring in that order after 0.
        r.give_back(&out[1..2]);
        r.give_back(&out[..1]);
        r.give_back(&out[2..]);
        out.clear();
        r.take(0, 32, false, true, &mut out).unwrap();
        assert_eq!(out.iter().map(|s| s.bid).collect::<Vec<_>>(), [0, 2, 3, 1]);
        assert!(r.take(0, 1, false, true, &mut Vec::new()).is_err(), "0 is ours now");
    }

    #[test]
    fn incremental_buffers_lend_pieces_and_return_once_full_and_unreferenced() {
        let mut r = BufRing::new(2, 16, BGID, false, false).unwrap();
        r.inc = true;
        let mut a = Vec::new();
        r.take(0, 5, true, false, &mut a).unwrap();
        let mut b = Vec::new();
        r.take(0, 6, true, false, &mut b).unwrap();
        assert_eq!((a[0], b[0]), (seg(0, 0, 5), seg(0, 5, 6)));
        r.give_back(&a);
        assert_eq!(r.tail, 2, "the kernel still fills buffer 0");
        let mut c = Vec::new();
        r.take(0, 5, false, false, &mut c).unwrap();
        assert_eq!(c, [seg(0, 11, 5)]);
        r.give_back(&c);
        assert_eq!(r.tail, 2, "b still holds a piece of it");
        assert_eq!(r.slice(b[0]).len(), 6);
        r.give_back(&b);
        assert_eq!(r.tail, 3, "full and unreferenced: back in the ring");
        // An incremental bundle: the rest of buffer 1 and then buffer 0 (anew).
        let mut d = Vec::new();
        r.take(1, 4, true, true, &mut d).unwrap();
        let mut e = Vec::new();
        r.take(1, 20, true, true, &mut e).unwrap();
        assert_eq!(e, [seg(1, 4, 12), seg(0, 0, 8)]);
    }
}
