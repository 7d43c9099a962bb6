//! One socket of a proxy pair on the completion loop: its requests (a multishot receive, at
//! most one send, a shutdown or SO_LINGER done through the ring) and the bytes waiting to be
//! sent to it, either a receive buffer held out of the ring (the zero-copy relay) or an output
//! buffer. Everything that moves bytes to this socket goes through here.

use ringpoll_proto::relay::Side;
use ringpoll_proto::OutBuf;
use ringpoll_sys::slab::Key;
use ringpoll_sys::uring::{is_canceled, Completion, HeldBuf, OpId};
use tracing::{debug, warn};

use super::core::{out_buf, send_buf, Core};
use super::fd::Fd;
use super::ops::Op;

/// One socket of a pair and the requests on it.
#[derive(Default)]
pub(crate) struct Sock {
    pub fd: Option<Fd>,
    pub recv: Option<OpId>,
    /// A cancel was queued for `recv` (backpressure, closing).
    pub recv_cancelled: bool,
    /// The kernel ended the multishot receive (ENOBUFS, byte limit): re-arming it counts.
    pub recv_ended: bool,
    /// The buffer ring ran dry for this socket: it waits in `Proxies::starved`.
    pub starved: bool,
    /// A shutdown or SO_LINGER queued on the ring (a fixed descriptor's).
    pub ctl: Option<OpId>,
    /// The send in flight to this socket, and the bytes it carries.
    send: Option<OpId>,
    sending: usize,
    /// Zero-copy relay: a receive buffer to send next, as it is (before `out`).
    held: Option<HeldBuf>,
    /// Bytes for this socket not yet handed to the kernel.
    pub out: OutBuf,
    /// The drained buffer of the last send, swapped in when `out` goes to the kernel.
    spare: OutBuf,
}

/// What the final completion of a send to a socket came to.
pub(crate) struct Sent {
    /// Bytes the peer took.
    pub n: usize,
    /// The socket failed (an error, or a send that took nothing of a non-empty buffer).
    pub failed: bool,
}

impl Sock {
    /// A socket with nothing in flight.
    pub fn new(fd: Fd) -> Self {
        Self { fd: Some(fd), ..Self::default() }
    }

    /// Bytes are waiting to be handed to the kernel.
    pub fn has_output(&self) -> bool {
        self.held.is_some() || !self.out.is_empty()
    }

    /// Nothing in flight and nothing waiting: received bytes may be sent to this socket
    /// straight from their receive buffer without overtaking any.
    pub fn is_clear(&self) -> bool {
        self.send.is_none() && !self.has_output()
    }

    /// A send can start now.
    pub fn wants_send(&self) -> bool {
        self.send.is_none() && self.has_output()
    }

    /// No request uses the socket.
    pub fn idle(&self) -> bool {
        self.recv.is_none() && self.send.is_none() && self.ctl.is_none()
    }

    /// Queue a held receive buffer to be sent next, as it is.
    pub fn hold(&mut self, h: HeldBuf) {
        debug_assert!(self.held.is_none());
        self.held = Some(h);
    }

    /// Take the held buffer that is not in flight (the pair closes).
    pub fn take_held(&mut self) -> Option<HeldBuf> {
        self.held.take()
    }

    /// Cancel what is in flight (the pair closes).
    pub fn cancel(&mut self, core: &mut Core) {
        if let (Some(id), false) = (self.recv, self.recv_cancelled) {
            core.ring.cancel(id);
            self.recv_cancelled = true;
        }
        if let Some(id) = self.send {
            core.ring.cancel(id);
        }
    }

    /// Hand the next output to the kernel unless a send is already in flight.
    pub fn start_send(&mut self, core: &mut Core, key: Key, side: Side) {
        let Some(fd) = &self.fd else { return };
        if self.send.is_some() {
            return;
        }
        let op = Op::RelaySend(key, side);
        if let Some(h) = self.held.take() {
            self.sending = h.len();
            core.stats.uring_held_sends += 1;
            match core.ring.send_held(fd, h, op) {
                Ok(id) => self.send = Some(id),
                Err(foreign) => warn!("{foreign}"),
            }
        } else if !self.out.is_empty() {
            let buf = std::mem::replace(&mut self.out, std::mem::take(&mut self.spare));
            self.sending = buf.len();
            self.send = Some(core.ring.send(fd, send_buf(buf), op));
        }
    }

    /// The final completion of this socket's send: account for what went out and send the
    /// rest of a short send again first (unless `resend` is false: the pair closed). A held
    /// buffer that is done with comes back for the caller to release.
    pub fn on_send(
        &mut self,
        core: &mut Core,
        key: Key,
        side: Side,
        c: Completion<Op>,
        resend: bool,
    ) -> (Sent, Option<HeldBuf>) {
        let Completion { result, sent, held, .. } = c;
        self.send = None;
        let carried = std::mem::take(&mut self.sending);
        let (n, failed) = match &result {
            // A stream socket never accepts nothing from a non-empty send; do not spin.
            Ok(n) => ((*n as usize).min(carried), *n == 0 && carried > 0),
            Err(e) if is_canceled(e) => (0, false),
            Err(e) => {
                debug!("proxy {side:?} send: {e}");
                (0, true)
            }
        };
        let resend = resend && !failed;
        let op = Op::RelaySend(key, side);
        if let Some(buf) = sent {
            let mut buf = out_buf(buf);
            buf.advance(n);
            if buf.is_empty() {
                self.spare = buf;
            } else if let (true, Some(fd)) = (resend, &self.fd) {
                self.sending = buf.len();
                self.send = Some(core.ring.send(fd, send_buf(buf), op));
            }
        }
        let mut done_with = None;
        if let Some(mut h) = held {
            h.advance(n);
            match (&self.fd, resend && !h.is_empty()) {
                (Some(fd), true) => {
                    self.sending = h.len();
                    match core.ring.send_held(fd, h, op) {
                        Ok(id) => self.send = Some(id),
                        Err(foreign) => warn!("{foreign}"),
                    }
                }
                _ => done_with = Some(h),
            }
        }
        (Sent { n, failed }, done_with)
    }
}
