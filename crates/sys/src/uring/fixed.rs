//! Registered (fixed) file descriptors: a per-ring table of files that requests name by
//! slot, so the kernel does not look the descriptor up (and take a reference) per request.
//! Connections accepted with [`Ring::accept_multi_direct`](super::Ring::accept_multi_direct)
//! go straight into the table ("direct descriptors") and never get a regular descriptor: a
//! [`FixedFd`] is all there is, and only the ring can use or close it.
//!
//! Every request that targets a socket takes `&impl RingFd`: a regular socket (`TcpStream`,
//! `UnixStream`, ...) or a [`FixedFd`].

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::Submitter;

use crate::count_syscall;

/// The kernel's cap on a fixed file table (IORING_MAX_FIXED_FILES).
pub(super) const MAX_FIXED_FILES: u32 = 1 << 20;

/// What a request names: a descriptor, or a slot of the ring's fixed file table (with the
/// id of the ring whose table it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Fd(RawFd),
    Fixed { slot: u32, ring: u64 },
}

/// A socket a ring request can target.
pub trait RingFd {
    fn target(&self) -> Target;
}

impl<F: AsRawFd> RingFd for F {
    fn target(&self) -> Target {
        Target::Fd(self.as_raw_fd())
    }
}

/// A connection in a ring's fixed file table (a direct descriptor): it has no regular
/// descriptor. Close it with [`Ring::close_fixed`](super::Ring::close_fixed); dropping it
/// leaves the socket open in the table until the ring is dropped.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a fixed descriptor is closed only through Ring::close_fixed"]
pub struct FixedFd {
    pub(super) ring: u64,
    pub(super) slot: u32,
}

impl FixedFd {
    /// Its slot in the table.
    #[must_use]
    pub fn slot(&self) -> u32 {
        self.slot
    }
}

impl RingFd for FixedFd {
    fn target(&self) -> Target {
        Target::Fixed { slot: self.slot, ring: self.ring }
    }
}

/// Register a sparse table of `want` slots (clamped to RLIMIT_NOFILE, which the kernel
/// enforces, and to its own cap). Returns the size registered, with a note when clamped.
pub(super) fn register_table(submitter: &Submitter<'_>, want: u32) -> io::Result<(u32, Option<String>)> {
    crate::count_syscall();
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::from(MAX_FIXED_FILES), |(soft, _)| soft);
    let cap = u32::try_from(limit.min(u64::from(MAX_FIXED_FILES))).unwrap_or(MAX_FIXED_FILES);
    let n = want.min(cap).max(1);
    count_syscall();
    submitter.register_files_sparse(n)?;
    let note = (n < want).then(|| {
        format!(
            "fixed file table clamped to {n} slots (asked {want}; RLIMIT_NOFILE {limit}, kernel cap {MAX_FIXED_FILES})"
        )
    });
    Ok((n, note))
}
