//! The op table's entries (what each request is, and the memory it owns until its final
//! completion) and the submission entries for every request a worker makes.
//!
//! The builders only describe requests; pointers in them are made valid by the caller, which
//! keeps the memory in the request's op-table entry (see the `uring` module docs).

use std::os::fd::RawFd;

use io_uring::types::{CancelBuilder, Fd, Fixed};
use io_uring::{opcode, squeue};

use super::fixed::Target;
use super::tokens::{HeldBuf, SendBuf};
use crate::slab::Key;

/// Identifies one request in flight: its user_data (op-table slot and generation).
pub type OpId = Key;

/// user_data of requests whose completion is ignored (cancellations, closes).
pub(super) const UNTRACKED: u64 = u64::MAX;
/// user_data of the start-up probes (receive byte limits, bundles): never a slab key.
pub(super) const PROBE: u64 = u64::MAX - 1;
/// user_data of the no-op that marks the end of a probe's completions.
pub(super) const PROBE_END: u64 = u64::MAX - 2;

/// Build an entry for `target` with `$b`, a closure-like body given the fd as `Fd` or
/// `Fixed` (the opcode builders take either through io-uring's sealed `UseFixed`). A slot of
/// another ring's table is never used: it becomes descriptor -1, so the request fails with
/// EBADF (the facade refuses such targets before they get here).
macro_rules! on_target {
    ($t:expr, |$f:ident| $b:expr) => {
        match $t {
            Target::Fd(fd) => {
                let $f = Fd(fd);
                $b
            }
            Target::Fixed { slot, .. } => {
                let $f = Fixed(slot);
                $b
            }
        }
    };
}

/// What the kernel does for a request (the caller's `T` says what it is for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Accept,
    /// A multishot accept into the fixed file table: results are slots.
    AcceptDirect,
    Recv,
    Send,
    /// IORING_OP_SEND_ZC: two completions, the result (flagged MORE) and then a notification
    /// (flagged NOTIF) once the kernel no longer reads the buffer. The worker sees one
    /// completion, at the notification, with the first one's result.
    SendZc,
    Poll,
    Connect,
    /// Anything whose result is all there is (shutdown, set a socket option).
    Other,
}

/// Memory a request's SQE points to, owned by its op-table entry until the final completion.
pub(super) enum Owned {
    Nothing,
    /// A send's buffer.
    Send(SendBuf),
    /// A send straight out of a receive buffer (one piece).
    Held(HeldBuf),
    /// A send straight out of several receive buffers (a bundle): the held pieces, and the
    /// message header and vector the kernel reads (boxed: the slab may move its entries).
    HeldMsg(HeldBuf, #[allow(dead_code)] Box<Msg>),
    /// A socket option's value.
    Opt(#[allow(dead_code)] Box<libc::linger>),
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

/// A `msghdr` and the iovecs it points to, for a send of several pieces.
pub(super) struct Msg {
    pub hdr: libc::msghdr,
    /// Read by the kernel only, through `hdr`.
    #[allow(dead_code)]
    iov: Box<[libc::iovec]>,
}

impl Msg {
    /// A header over `iov` (its pointer targets the boxed slice, which does not move when the
    /// `Msg` does).
    pub fn new(iov: Box<[libc::iovec]>) -> Box<Self> {
        // SAFETY: msghdr is a plain C struct for which all-zero is a valid value (no name,
        // no control data, no flags).
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = iov.as_ptr().cast_mut();
        hdr.msg_iovlen = iov.len() as _;
        Box::new(Self { hdr, iov })
    }
}

/// A multishot accept; accepted sockets are blocking and close-on-exec. With `direct`, each
/// lands in a free slot of the fixed file table (the result is the slot) instead: such a
/// socket has no descriptor to inherit, and the kernel refuses SOCK_CLOEXEC with it.
pub(super) fn accept_multi(listener: RawFd, direct: bool) -> squeue::Entry {
    let flags = if direct { 0 } else { libc::SOCK_CLOEXEC };
    opcode::AcceptMulti::new(Fd(listener)).allocate_file_index(direct).flags(flags).build()
}

/// A multishot receive into buffer group `bgid`, ending after `limit` bytes if given; each
/// completion may cover several buffers if `bundle`.
pub(super) fn recv_multi(t: Target, bgid: u16, limit: Option<u32>, bundle: bool) -> squeue::Entry {
    let e = if bundle {
        on_target!(t, |f| opcode::RecvMultiBundle::new(f, bgid).build())
    } else {
        on_target!(t, |f| opcode::RecvMulti::new(f, bgid).build())
    };
    match limit {
        Some(n) => with_optlen(e, n),
        None => e,
    }
}

/// A send (zero-copy if `zc`) of `len` bytes at `ptr`, without SIGPIPE.
pub(super) fn send(t: Target, ptr: *const u8, len: u32, zc: bool) -> squeue::Entry {
    if zc {
        on_target!(t, |f| opcode::SendZc::new(f, ptr, len).flags(libc::MSG_NOSIGNAL).build())
    } else {
        on_target!(t, |f| opcode::Send::new(f, ptr, len).flags(libc::MSG_NOSIGNAL).build())
    }
}

/// A sendmsg of the message `msg` points to, without SIGPIPE.
pub(super) fn sendmsg(t: Target, msg: *const libc::msghdr) -> squeue::Entry {
    on_target!(t, |f| opcode::SendMsg::new(f, msg).flags(libc::MSG_NOSIGNAL as u32).build())
}

/// Shut down the write side of a socket (IORING_OP_SHUTDOWN, Linux 5.11).
pub(super) fn shutdown_write(t: Target) -> squeue::Entry {
    on_target!(t, |f| opcode::Shutdown::new(f, libc::SHUT_WR).build())
}

/// Set SO_LINGER to the value `l` points to (a socket command, Linux 6.7).
pub(super) fn set_linger(t: Target, l: *const libc::linger) -> squeue::Entry {
    let len = std::mem::size_of::<libc::linger>() as u32;
    on_target!(t, |f| opcode::SetSockOpt::new(f, libc::SOL_SOCKET as u32, libc::SO_LINGER as u32, l.cast(), len)
        .build())
}

/// A no-op (ends a probe).
pub(super) fn nop() -> squeue::Entry {
    opcode::Nop::new().build()
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

/// Close a descriptor or a fixed table slot (untracked).
pub(super) fn close(t: Target) -> squeue::Entry {
    on_target!(t, |f| opcode::Close::new(f).build()).user_data(UNTRACKED)
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
        let ours = recv_multi(Target::Fd(3), 0, Some(0x1234_5678), false);
        assert_eq!(bytes(reference)[44..48], bytes(ours)[44..48]);
        let none = recv_multi(Target::Fd(3), 0, None, true);
        assert_eq!(bytes(none)[44..48], [0; 4], "no limit: the field stays zero");
    }

    #[test]
    fn fixed_targets_set_the_fixed_file_flag() {
        const FIXED_FILE: u8 = 1; // IOSQE_FIXED_FILE, the first byte after the opcode
        let fixed = bytes(send(Target::Fixed { slot: 7, ring: 1 }, std::ptr::null(), 0, false));
        let plain = send(Target::Fd(7), std::ptr::null(), 0, false);
        assert_eq!(fixed[1] & FIXED_FILE, FIXED_FILE);
        assert_eq!(bytes(plain)[1] & FIXED_FILE, 0);
        assert_eq!(fixed[4..8], 7i32.to_ne_bytes(), "the slot is in the fd field");
    }
}
