//! Registered wait regions (Linux 6.13): the arguments of a waiting `io_uring_enter` (timeout,
//! minimum wait) live in memory registered with the ring once, and each enter passes only
//! an offset into it, instead of the kernel copying an argument structure and a timespec in
//! from user memory on every wait.
//!
//! io-uring 0.7.16 lacks both halves: it has no `Submitter::register_mem_region`
//! (IORING_REGISTER_MEM_REGION) and its `submit_with_args` always passes a pointer to an
//! `io_uring_getevents_arg`. The registration is hand-written here; the enter uses the
//! crate's raw `Submitter::enter` with IORING_ENTER_EXT_ARG_REG (see `submit.rs`).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::types::{io_uring_region_desc, IORING_MEM_REGION_TYPE_USER};
use io_uring::IoUring;

use super::mmap::Mmap;
use crate::count_syscall;

/// IORING_REGISTER_MEM_REGION (not exported by io-uring 0.7.16's public API).
const IORING_REGISTER_MEM_REGION: libc::c_uint = 34;
/// IORING_MEM_REGION_REG_WAIT_ARG: the region holds wait arguments.
const IORING_MEM_REGION_REG_WAIT_ARG: u64 = 1;
/// IORING_REG_WAIT_TS: the wait argument's timespec is set.
const IORING_REG_WAIT_TS: u32 = 1;

/// `struct io_uring_mem_region_reg` (io-uring 0.7.16 does not export it).
#[repr(C)]
struct MemRegionReg {
    region_uptr: u64,
    flags: u64,
    resv: [u64; 2],
}

/// `struct io_uring_reg_wait`: one wait's arguments, 64 bytes (io-uring 0.7.16 does not
/// export it). Also the type whose size `Submitter::enter` passes as the argument size.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(super) struct RegWaitArg {
    ts_sec: i64,
    ts_nsec: i64,
    min_wait_usec: u32,
    flags: u32,
    sigmask: u64,
    sigmask_sz: u32,
    pad: [u32; 3],
    pad2: [u64; 2],
}

const _: () = assert!(std::mem::size_of::<RegWaitArg>() == 64);

/// A ring's registered wait region: one page, of which the first entry is used.
pub(super) struct RegWait {
    map: Mmap,
}

impl RegWait {
    /// Map a page and register it as the wait-argument region of `ring`, which must still be
    /// disabled (IORING_SETUP_R_DISABLED: the kernel refuses the region once the ring may
    /// have waiters).
    pub fn register(ring: &IoUring) -> io::Result<Self> {
        let map = Mmap::anonymous(4096, false)?;
        let mut desc = io_uring_region_desc {
            user_addr: map.ptr.as_ptr() as u64,
            size: map.len as u64,
            flags: IORING_MEM_REGION_TYPE_USER,
            ..Default::default()
        };
        let reg = MemRegionReg {
            region_uptr: std::ptr::addr_of_mut!(desc) as u64,
            flags: IORING_MEM_REGION_REG_WAIT_ARG,
            resv: [0; 2],
        };
        count_syscall();
        // SAFETY: io_uring_register(IORING_REGISTER_MEM_REGION) reads `reg` and the region
        // descriptor it points to (both live across the call) and pins the user pages of
        // `map`, which stays mapped for as long as the ring (the `Uring` owns it and drops it
        // after the ring); the kernel may write `desc` back (its mmap offset), which is ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                ring.as_raw_fd(),
                IORING_REGISTER_MEM_REGION,
                std::ptr::addr_of!(reg),
                1u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { map })
    }

    /// Write the arguments of the next wait into the region's first entry (offset 0, the
    /// offset an enter with a null argument pointer names).
    pub fn set(&mut self, timeout: Duration, min_wait: Duration) {
        let arg = RegWaitArg {
            ts_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            ts_nsec: i64::from(timeout.subsec_nanos()),
            min_wait_usec: u32::try_from(min_wait.as_micros()).unwrap_or(u32::MAX),
            flags: IORING_REG_WAIT_TS,
            ..RegWaitArg::default()
        };
        // SAFETY: the mapping is at least one page, page aligned, so its start holds an
        // aligned `RegWaitArg`; only this thread writes it, and the kernel reads it only
        // during this thread's next enter. Volatile: the reader is the kernel, not Rust code.
        unsafe { self.map.ptr.as_ptr().cast::<RegWaitArg>().write_volatile(arg) };
    }
}
