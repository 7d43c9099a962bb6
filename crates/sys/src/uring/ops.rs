//! The op table and the requests a worker queues: what the kernel is asked to do, and the
//! memory each request owns until its final completion (module docs of [`super`]).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use io_uring::types::Fd;
use io_uring::{opcode, squeue};
use tracing::warn;

use super::bufring::BGID;
use super::{ForeignBuf, HeldBuf, Ring, SendBuf, UNTRACKED};
use crate::slab::Key;

/// Identifies one request in flight: its user_data (op-table slot and generation).
pub type OpId = Key;

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

pub(super) struct Slot<T> {
    pub kind: Kind,
    pub op: T,
    pub owned: Owned,
    /// Zero-copy send: the result of its first completion, held until the notification that
    /// the kernel is done with the buffer.
    pub zc_result: Option<i32>,
}

impl<T> Slot<T> {
    fn new(kind: Kind, op: T, owned: Owned) -> Self {
        Self { kind, op, owned, zc_result: None }
    }
}

impl<T: Copy> Ring<T> {
    /// Queue a multishot accept on `listener`; accepted sockets are blocking and close-on-exec.
    pub fn accept_multi(&mut self, listener: &TcpListener, op: T) -> OpId {
        let id = self.ops.insert(Slot::new(Kind::Accept, op, Owned::Nothing));
        let e = opcode::AcceptMulti::new(Fd(listener.as_raw_fd())).flags(libc::SOCK_CLOEXEC).build();
        self.push(e.user_data(id.to_u64()));
        id
    }

    /// Queue a multishot receive into the provided-buffer ring. With `limit` > 0 (and a
    /// kernel that supports it) the receive ends, without F_MORE, once it has delivered that
    /// many bytes: backpressure without the completions already queued overshooting it.
    pub fn recv_multi(&mut self, stream: &TcpStream, op: T, limit: u32) -> OpId {
        let id = self.ops.insert(Slot::new(Kind::Recv, op, Owned::Nothing));
        let mut e = opcode::RecvMulti::new(Fd(stream.as_raw_fd()), BGID).build();
        if self.recv_limit && limit > 0 {
            e = with_optlen(e, limit);
        }
        self.push(e.user_data(id.to_u64()));
        id
    }

    /// Queue a send of `buf.pending()`; the ring owns `buf` until the final completion, which
    /// hands it back in [`Completion::sent`](super::Completion::sent).
    pub fn send(&mut self, stream: &TcpStream, buf: SendBuf, op: T) -> OpId {
        let kind = if buf.len() >= self.send_zc_min { Kind::SendZc } else { Kind::Send };
        let id = self.ops.insert(Slot::new(kind, op, Owned::Send(buf)));
        let pending = match self.ops.get(id).map(|s| &s.owned) {
            Some(Owned::Send(b)) => b.pending(),
            _ => &[],
        };
        let len = u32::try_from(pending.len()).unwrap_or(u32::MAX);
        // The pointer targets the Vec's heap block, which does not move when the slot does,
        // and nothing can mutate or free it before the final completion (module docs; for a
        // zero-copy send that is the notification, after which the kernel no longer reads it).
        let fd = Fd(stream.as_raw_fd());
        let e = if kind == Kind::SendZc {
            opcode::SendZc::new(fd, pending.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build()
        } else {
            opcode::Send::new(fd, pending.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build()
        };
        self.push(e.user_data(id.to_u64()));
        self.sends_queued = self.sends_queued.saturating_add(1);
        id
    }

    /// Queue a send of the unsent bytes of a held receive buffer; the request owns it until
    /// the final completion, which hands it back in
    /// [`Completion::held`](super::Completion::held). A buffer another ring lent is refused.
    pub fn send_held(&mut self, stream: &TcpStream, held: HeldBuf, op: T) -> Result<OpId, ForeignBuf> {
        self.check_owner(&held)?;
        let (bid, len, off) = (held.bid, held.len, held.off as usize);
        let id = self.ops.insert(Slot::new(Kind::Send, op, Owned::Held(held)));
        let data = self.bufs.slice(bid, len);
        let pending = data.get(off..).unwrap_or(&[]);
        // The buffer is lent to us and owned by this request's entry: the kernel cannot pick
        // it for a receive, and nothing gives it back before the final completion.
        let e = opcode::Send::new(Fd(stream.as_raw_fd()), pending.as_ptr(), pending.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.push(e.user_data(id.to_u64()));
        self.sends_queued = self.sends_queued.saturating_add(1);
        Ok(id)
    }

    /// Give a held receive buffer back to the kernel. A buffer another ring lent is refused
    /// (and stays out of both rings).
    pub fn release(&mut self, held: HeldBuf) -> Result<(), ForeignBuf> {
        self.check_owner(&held)?;
        self.bufs.give(held.bid);
        Ok(())
    }

    fn check_owner(&self, held: &HeldBuf) -> Result<(), ForeignBuf> {
        if held.ring == self.id {
            return Ok(());
        }
        let e = ForeignBuf { owner: held.ring, ring: self.id };
        warn!("{e}");
        Err(e)
    }

    /// Queue a connect of `stream` to `addr` (the address lives in the request's entry).
    pub fn connect(&mut self, stream: &TcpStream, addr: SocketAddr, op: T) -> OpId {
        let addr = Box::new(socket2::SockAddr::from(addr));
        let (ptr, len) = (addr.as_ptr().cast::<libc::sockaddr>(), addr.len());
        let id = self.ops.insert(Slot::new(Kind::Connect, op, Owned::Addr(addr)));
        self.push(opcode::Connect::new(Fd(stream.as_raw_fd()), ptr, len).build().user_data(id.to_u64()));
        id
    }

    /// Queue a one-shot poll for readability (the wake-up eventfd).
    pub fn poll_readable(&mut self, fd: &impl AsRawFd, op: T) -> OpId {
        let id = self.ops.insert(Slot::new(Kind::Poll, op, Owned::Nothing));
        let e = opcode::PollAdd::new(Fd(fd.as_raw_fd()), libc::POLLIN as u32).build();
        self.push(e.user_data(id.to_u64()));
        id
    }

    /// Ask the kernel to cancel a request; its final completion (usually ECANCELED) follows.
    pub fn cancel(&mut self, id: OpId) {
        if self.ops.get(id).is_some() {
            self.push(opcode::AsyncCancel::new(id.to_u64()).build().user_data(UNTRACKED));
        }
    }

    /// Close a descriptor through the ring (no system call of its own). Call it once no
    /// request uses the descriptor any more, or the socket stays open until they end.
    pub fn close(&mut self, fd: impl Into<OwnedFd>) {
        let raw = fd.into().into_raw_fd();
        self.push(opcode::Close::new(Fd(raw)).build().user_data(UNTRACKED));
    }
}

/// Set the `optlen` field of an SQE: for a multishot receive, its total byte limit (Linux
/// 6.17). Hand-written because io-uring 0.7 has no API for it: `RecvMulti` sets only `len`,
/// the per-buffer cap, and no opcode builder for receives touches `optlen`.
pub(super) fn with_optlen(e: squeue::Entry, value: u32) -> squeue::Entry {
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
        let ours = with_optlen(opcode::RecvMulti::new(Fd(3), BGID).build(), 0x1234_5678);
        assert_eq!(bytes(reference)[44..48], bytes(ours)[44..48]);
    }
}
