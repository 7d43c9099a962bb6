//! The provided-buffer ring: `count` receive buffers of `size` bytes that the kernel picks
//! from when a multishot receive has data, so that a connection holds no receive buffer while
//! it waits.
//!
//! Ownership of each buffer id moves between the kernel (it is in the ring) and the worker
//! (a completion named it). `lent[bid]` records the worker's side, so a buffer is given back
//! at most once and is only ever read while the kernel cannot write it.

use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

use crate::count_syscall;

/// Buffer group id of the worker's single ring.
pub(super) const BGID: u16 = 0;

/// An anonymous private mapping (page aligned, as the kernel wants the ring to be).
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    /// Map `len` bytes, resident at once (MADV_POPULATE_WRITE, best effort), on transparent
    /// huge pages if `huge` and the system allows it.
    fn anonymous(len: usize, huge: bool) -> io::Result<Self> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        count_syscall();
        // SAFETY: a fresh anonymous private mapping touches no existing memory.
        let p = unsafe { libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        let map = Self { ptr, len };
        if huge {
            map.advise(libc::MADV_HUGEPAGE);
        }
        map.advise(libc::MADV_POPULATE_WRITE);
        Ok(map)
    }

    /// madvise over the whole mapping; advice is best effort (older kernels lack some).
    fn advise(&self, advice: libc::c_int) {
        count_syscall();
        // SAFETY: the range is exactly our mapping; the advice values used here (huge pages,
        // populate) do not change its contents.
        if unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, advice) } != 0 {
            tracing::debug!("madvise({advice}): {}", io::Error::last_os_error());
        }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        if self.len == 0 {
            return; // leaked (see `BufRing::drop`)
        }
        count_syscall();
        // SAFETY: `ptr`/`len` describe a mapping made by `anonymous` and unmapped only here;
        // every slice into it borrows the owner, so none outlives this.
        if unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) } != 0 {
            tracing::debug!("munmap: {}", io::Error::last_os_error());
        }
    }
}

pub(super) struct BufRing {
    entries: Mmap,
    data: Mmap,
    count: u16,
    size: u32,
    /// Our copy of the tail; published to entry 0's `resv` with a release store.
    tail: u16,
    /// Per buffer id: a completion handed it to the worker and it is not back in the ring.
    lent: Vec<bool>,
    /// The kernel may still hold buffers: never unmap (see `Ring::drop`).
    leak: bool,
}

impl BufRing {
    /// Map the ring and the buffers and put every buffer in the ring (not yet registered).
    pub fn new(count: u16, size: u32) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "buffer count must be a power of two <= 32768"));
        }
        let total = usize::from(count)
            .checked_mul(size as usize)
            .filter(|&n| n > 0 && n <= isize::MAX as usize)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "buffer ring size out of range"))?;
        let entries = Mmap::anonymous(usize::from(count) * std::mem::size_of::<BufRingEntry>(), false)?;
        // Resident up front: the pool is a fixed per-worker cost, rather than RSS that creeps
        // up as the ring cycles through every buffer. On huge pages where possible: the ring
        // hands out a different buffer for every receive, so with 4 KiB pages nearly every
        // receive would also miss the TLB.
        let data = Mmap::anonymous(total, true)?;
        let mut ring = Self { entries, data, count, size, tail: 0, lent: vec![false; usize::from(count)], leak: false };
        for bid in 0..count {
            ring.write_entry(bid);
        }
        ring.publish();
        Ok(ring)
    }

    /// Register the ring with the kernel as buffer group [`BGID`].
    pub fn register(&self, submitter: &Submitter<'_>) -> io::Result<()> {
        count_syscall();
        // SAFETY: `entries` maps `count` ring entries, page aligned, and stays mapped until
        // after the group is unregistered or the ring is gone (`Ring` drops the IoUring first
        // and leaks the mapping if the kernel may still use it); buffer addresses in it point
        // into `data`, which lives just as long.
        unsafe { submitter.register_buf_ring_with_flags(self.entries.ptr.as_ptr() as u64, self.count, BGID, 0) }
    }

    pub fn unregister(&self, submitter: &Submitter<'_>) {
        count_syscall();
        if let Err(e) = submitter.unregister_buf_ring(BGID) {
            tracing::debug!("unregistering the buffer ring: {e}");
        }
    }

    pub fn leak(&mut self) {
        self.leak = true;
    }

    /// A completion handed buffer `bid` to the worker. False for an id we do not know or
    /// already hold (a kernel bug, never a peer's doing): then nothing may be read from it.
    pub fn take(&mut self, bid: u16) -> bool {
        match self.lent.get_mut(usize::from(bid)) {
            Some(l) if !*l => {
                *l = true;
                true
            }
            _ => false,
        }
    }

    /// Give a buffer the worker holds back to the kernel.
    pub fn give(&mut self, bid: u16) {
        match self.lent.get_mut(usize::from(bid)) {
            Some(l) if *l => *l = false,
            _ => return,
        }
        self.write_entry(bid);
        self.publish();
    }

    /// The first `len` bytes of a buffer the worker holds.
    pub fn slice(&self, bid: u16, len: u32) -> &[u8] {
        if !self.lent.get(usize::from(bid)).copied().unwrap_or(false) {
            return &[];
        }
        let len = len.min(self.size) as usize;
        let offset = usize::from(bid) * self.size as usize;
        // SAFETY: `bid < count`, so `offset + len <= count * size`, inside `data`. The kernel
        // wrote these bytes before posting the completion that lent us the buffer and cannot
        // write them again until `give`, which needs `&mut self` and so waits for this borrow.
        unsafe { std::slice::from_raw_parts(self.data.ptr.as_ptr().add(offset), len) }
    }

    /// Write `bid` into the entry at our tail and advance it (not yet visible to the kernel).
    fn write_entry(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.count - 1));
        let addr = self.data.ptr.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: `idx < count`, inside `entries`, which is page aligned and sized for `count`
        // entries of io-uring's `#[repr(transparent)]` `struct io_uring_buf`, zeroed by the
        // mapping, so the reference is aligned and valid. The slot at our tail is not visible
        // to the kernel (it reads only up to the published tail) and holds no buffer it still
        // needs: `bid` was held by us, so fewer than `count` buffers are in the ring. The only
        // field the kernel may read concurrently is entry 0's `resv` (the tail), which the
        // setters below do not touch.
        let e = unsafe { &mut *self.entries.ptr.as_ptr().cast::<BufRingEntry>().add(idx) };
        e.set_addr(addr);
        e.set_len(self.size);
        e.set_bid(bid);
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
            let entries = std::mem::replace(&mut self.entries, Mmap { ptr: NonNull::dangling(), len: 0 });
            let data = std::mem::replace(&mut self.data, Mmap { ptr: NonNull::dangling(), len: 0 });
            std::mem::forget(entries);
            std::mem::forget(data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_readable_only_while_lent_and_given_back_once() {
        let mut r = BufRing::new(4, 64).unwrap();
        assert_eq!(r.tail, 4, "every buffer starts in the ring");
        assert!(r.slice(1, 10).is_empty(), "a buffer in the ring is the kernel's");
        assert!(r.take(1));
        assert_eq!(r.slice(1, 10).len(), 10);
        assert_eq!(r.slice(1, 1000).len(), 64, "never past the buffer");
        assert!(!r.take(1), "taken twice");
        r.give(1);
        assert!(r.slice(1, 10).is_empty());
        r.give(1); // a second give is ignored
        assert_eq!(r.tail, 5);
        assert!(!r.take(9), "unknown id");
    }

    #[test]
    fn counts_must_be_powers_of_two() {
        assert!(BufRing::new(3, 64).is_err());
        assert!(BufRing::new(8, 0).is_err());
    }
}
