//! The op table's entries (what each request is, and the memory it owns until its final
//! completion) and the submission entries for every request a worker makes.
//!
//! The builders only describe requests; pointers in them are made valid by the caller, which
//! keeps the memory in the request's op-table entry (see the `uring` module docs).

use std::os::fd::RawFd;

use io_uring::types::{CancelBuilder, Fd};
use io_uring::{opcode, squeue};

use super::bufring::BGID;
use super::tokens::{HeldBuf, SendBuf};
use crate::slab::Key;

/// Identifies one request in flight: its user_data (op-table slot and generation).
pub type OpId = Key;

/// user_data of requests whose completion is ignored (cancellations, closes).
pub(super) const UNTRACKED: u64 = u64::MAX;
/// user_data of the start-up probe for multishot receive byte limits.
pub(super) const PROBE: u64 = u64::MAX - 1;

/// What the kernel does for a request (the caller's `T` says what it is for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Accept,
    Recv,
    Send,
    /// IORING_OP_SEND_ZC: two completions, the result (flagged MORE) and then a notification
    /// (flagged NOTIF) once the kernel no longer reads the buffer. The worker sees one
    /// completion, at the notification, with the first one's result.
    SendZc,
    Poll,
    Connect,
}

/// Memory a request's SQE points to, owned by its op-table entry until the final completion.
pub(super) enum Owned {
    Nothing,
    /// A send's buffer.
    Send(SendBuf),
    /// A send straight out of a receive buffer.
    Held(HeldBuf),
    /// A connect's address (boxed: the slab may move its entries). Only the kernel reads it.
    Addr(#[allow(dead_code)] Box<socket2::SockAddr>),
}

/// One entry of the op table.
pub(super) struct Slot<T> {
    pub kind: Kind,
    pub op: T,
    pub owned: Owned,
    /// Zero-copy send: the result of its first completion, held until the notification that
    /// the kernel is done with the buffer.
    pub zc_result: Option<i32>,
}

impl<T> Slot<T> {
    pub fn new(kind: Kind, op: T, owned: Owned) -> Self {
        Self { kind, op, owned, zc_result: None }
    }
}

/// A multishot accept; accepted sockets are blocking and close-on-exec.
pub(super) fn accept_multi(listener: RawFd) -> squeue::Entry {
    opcode::AcceptMulti::new(Fd(listener)).flags(libc::SOCK_CLOEXEC).build()
}

/// A multishot receive into the provided-buffer ring, ending after `limit` bytes if given.
pub(super) fn recv_multi(fd: RawFd, limit: Option<u32>) -> squeue::Entry {
    let e = opcode::RecvMulti::new(Fd(fd), BGID).build();
    match limit {
        Some(n) => with_optlen(e, n),
        None => e,
    }
}

/// A send (zero-copy if `zc`) of `len` bytes at `ptr`, without SIGPIPE.
pub(super) fn send(fd: RawFd, ptr: *const u8, len: u32, zc: bool) -> squeue::Entry {
    if zc {
        opcode::SendZc::new(Fd(fd), ptr, len).flags(libc::MSG_NOSIGNAL).build()
    } else {
        opcode::Send::new(Fd(fd), ptr, len).flags(libc::MSG_NOSIGNAL).build()
    }
}

/// A connect to the address `addr` points to.
pub(super) fn connect(fd: RawFd, addr: &socket2::SockAddr) -> squeue::Entry {
    opcode::Connect::new(Fd(fd), addr.as_ptr().cast::<libc::sockaddr>(), addr.len()).build()
}

/// A one-shot poll for readability.
pub(super) fn poll_readable(fd: RawFd) -> squeue::Entry {
    opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32).build()
}

/// Cancel the request with user_data `target` (untracked itself).
pub(super) fn cancel(target: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(target).build().user_data(UNTRACKED)
}

/// Cancel every request of the ring (untracked itself).
pub(super) fn cancel_all() -> squeue::Entry {
    opcode::AsyncCancel2::new(CancelBuilder::any()).build().user_data(UNTRACKED)
}

/// Close a descriptor (untracked).
pub(super) fn close(fd: RawFd) -> squeue::Entry {
    opcode::Close::new(Fd(fd)).build().user_data(UNTRACKED)
}

/// Set the `optlen` field of an SQE: for a multishot receive, its total byte limit (Linux
/// 6.17). Hand-written because io-uring 0.7 has no API for it: `RecvMulti` sets only `len`,
/// the per-buffer cap, and no opcode builder for receives touches `optlen`.
fn with_optlen(e: squeue::Entry, value: u32) -> squeue::Entry {
    const OPTLEN: usize = 44; // offsetof(struct io_uring_sqe, optlen)
                              // SAFETY: `squeue::Entry` is a `#[repr(C)]` wrapper of the 64-byte `struct io_uring_sqe`
                              // (transmute checks the size), which has no padding and is built from a zeroed value, so
                              // every byte is initialised; it holds only integers (in unions), so any bytes are valid.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(e) };
    raw[OPTLEN..OPTLEN + 4].copy_from_slice(&value.to_ne_bytes());
    // SAFETY: as above, back to the type it came from.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(e: squeue::Entry) -> [u8; 64] {
        // SAFETY: as in `with_optlen`.
        unsafe { std::mem::transmute::<squeue::Entry, [u8; 64]>(e) }
    }

    #[test]
    fn optlen_lands_where_the_crate_puts_it() {
        let reference = opcode::SetSockOpt::new(Fd(3), 1, 2, std::ptr::null(), 0x1234_5678).build();
        let ours = recv_multi(3, Some(0x1234_5678));
        assert_eq!(bytes(reference)[44..48], bytes(ours)[44..48]);
        assert_eq!(bytes(recv_multi(3, None))[44..48], [0; 4], "no limit: the field stays zero");
    }
}
