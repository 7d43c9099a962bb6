//! Anonymous private mappings for memory the kernel reads or writes on the ring's behalf (the
//! provided-buffer ring and its buffers, the registered wait region): page aligned, resident
//! up front, and for large ones aligned to the huge-page size so that transparent huge pages
//! can back every byte of them.

use std::io;
use std::ptr::{self, NonNull};

use crate::count_syscall;

/// Size of a transparent huge page on x86-64 and arm64 with 4 KiB pages.
pub(super) const HUGE_PAGE: usize = 2 << 20;

/// One anonymous private mapping, unmapped on drop unless leaked.
pub(super) struct Mmap {
    pub ptr: NonNull<u8>,
    pub len: usize,
}

impl Mmap {
    /// Map `len` bytes, resident at once (MADV_POPULATE_WRITE, best effort). With `huge` and
    /// at least one huge page of length, the mapping starts on a huge-page boundary and is
    /// advised MADV_HUGEPAGE, so that (where the system allows transparent huge pages) every
    /// huge-page sized piece of it can be one TLB entry.
    pub fn anonymous(len: usize, huge: bool) -> io::Result<Self> {
        let page = page_size();
        let len = len.checked_next_multiple_of(page).ok_or_else(too_big)?;
        let huge = huge && len >= HUGE_PAGE;
        // Over-map by one huge page, then trim the unaligned head and the tail.
        let asked = if huge { len.checked_add(HUGE_PAGE).ok_or_else(too_big)? } else { len };
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        count_syscall();
        // SAFETY: a fresh anonymous private mapping touches no existing memory.
        let p = unsafe { libc::mmap(ptr::null_mut(), asked, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p.cast::<u8>();
        let map = if huge {
            let head = (HUGE_PAGE - (base as usize % HUGE_PAGE)) % HUGE_PAGE;
            let tail = asked - head - len;
            // SAFETY: both ranges lie inside the mapping just made (head + len + tail ==
            // asked) and nothing refers to them yet; both start on a page boundary (mmap
            // returns page-aligned memory and `head` and `len` are page multiples).
            unsafe {
                unmap(base, head);
                unmap(base.add(head + len), tail);
            }
            // SAFETY: `head < asked`, so the pointer is inside the mapping, hence non-null.
            Self { ptr: unsafe { NonNull::new_unchecked(base.add(head)) }, len }
        } else {
            Self { ptr: NonNull::new(base).ok_or_else(|| io::Error::other("mmap returned NULL"))?, len }
        };
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

    /// KiB of this mapping backed by transparent huge pages right now (`AnonHugePages` of its
    /// entry in /proc/self/smaps), or `None` when that cannot be read.
    pub fn huge_kib(&self) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let start = self.ptr.as_ptr() as usize;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                        inside = lo <= start && start < hi;
                        continue;
                    }
                }
            }
            if inside {
                if let Some(v) = line.strip_prefix("AnonHugePages:") {
                    return v.trim().trim_end_matches("kB").trim().parse().ok();
                }
            }
        }
        None
    }

    /// Keep the memory mapped forever (the kernel may still use it).
    pub fn leak(&mut self) {
        self.len = 0;
    }
}

/// The system's page size (4 KiB if it cannot be read).
fn page_size() -> usize {
    count_syscall();
    // SAFETY: sysconf only reads a system value.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|n| n.is_power_of_two()).unwrap_or(4096)
}

fn too_big() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "mapping size out of range")
}

/// Unmap `len` bytes at `p` (nothing when `len` is zero).
///
/// # Safety
/// The range must be part of a mapping this module made, unreferenced.
unsafe fn unmap(p: *mut u8, len: usize) {
    if len == 0 {
        return;
    }
    count_syscall();
    // SAFETY: the caller vouches for the range.
    if unsafe { libc::munmap(p.cast(), len) } != 0 {
        tracing::debug!("munmap: {}", io::Error::last_os_error());
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `anonymous` and unmapped only here
        // (a leaked one has length zero); every slice into it borrows the owner, so none
        // outlives this.
        unsafe { unmap(self.ptr.as_ptr(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_mappings_start_on_a_huge_page_and_small_ones_on_a_page() {
        let big = Mmap::anonymous(4 * HUGE_PAGE, true).unwrap();
        assert_eq!(big.ptr.as_ptr() as usize % HUGE_PAGE, 0);
        // SAFETY: inside the mapping, which is readable and writable.
        unsafe { big.ptr.as_ptr().add(4 * HUGE_PAGE - 1).write(7) };
        let small = Mmap::anonymous(1000, true).unwrap();
        assert_eq!(small.ptr.as_ptr() as usize % 4096, 0);
        assert_eq!(small.len % 4096, 0, "rounded up to pages");
        assert!(small.huge_kib().is_some(), "its smaps entry is found");
    }

    #[test]
    fn huge_pages_back_the_buffers_where_the_system_allows_them() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
        let big = Mmap::anonymous(4 * HUGE_PAGE, true).unwrap();
        let kib = big.huge_kib().expect("smaps entry");
        let defrag = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/defrag").unwrap_or_default();
        // Only where a MADV_HUGEPAGE fault may compact memory synchronously is a huge page
        // expected at once; elsewhere khugepaged may bring them later.
        let expected = (thp.contains("[always]") || thp.contains("[madvise]"))
            && ["[always]", "[madvise]", "[defer+madvise]"].iter().any(|m| defrag.contains(m));
        if expected {
            assert!(
                kib >= 2048,
                "no huge page behind an 8 MiB MADV_HUGEPAGE mapping (THP {}, defrag {})",
                thp.trim(),
                defrag.trim()
            );
        } else {
            eprintln!("transparent huge pages not expected at fault time here (THP {}): {kib} KiB", thp.trim());
        }
    }
}
