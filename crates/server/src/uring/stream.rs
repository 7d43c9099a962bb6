//! Echo and HTTP over the completion loop: one socket and one protocol object per connection,
//! with at most one multishot receive and one send in flight.
//!
//! The behaviour matches [`crate::readiness::stream`]: output high/low watermarks pause and
//! resume reading (here by cancelling and re-arming the receive), a protocol close flushes,
//! shuts the write side and lingers, the peer's EOF goes to the protocol, idle connections
//! time out, and shutdown closes connections as they become idle. Closing cancels the
//! connection's requests and closes the socket once their completions are in, so that the
//! kernel drops its last reference and the peer sees the FIN at once.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::time::Instant;

use ringpoll_proto::{Ctx, OutBuf, Protocol};
use tracing::debug;

use super::{Core, Handler, Op};
use crate::clock::Clock;
use crate::readiness::stream::LINGER;
use crate::slab::{Key, Slab};
use crate::stats::Counters;
use crate::sys::socket;
use crate::sys::uring::{is_canceled, is_no_buffers, Completion, OpId};
use crate::CloseReason;

/// Smallest byte limit of a receive arm (a tiny headroom would mean tiny receives).
const MIN_RECV_LIMIT: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    /// The protocol asked to close: flush, then shut down the write side.
    Closing,
    /// Write side shut; discarding input until the peer's FIN or the deadline.
    Lingering {
        until: Instant,
    },
    /// Counted as closed; the socket closes once no request uses it any more.
    Closed,
}

struct Conn<Pr> {
    stream: TcpStream,
    proto: Pr,
    /// Where the protocol appends output, also while a send is in flight.
    out: OutBuf,
    /// The drained buffer of the last send, swapped in when `out` goes to the kernel: two
    /// allocations per connection, reused, none per request.
    spare: OutBuf,
    /// Bytes owned by the send in flight.
    sending: usize,
    send: Option<OpId>,
    recv: Option<OpId>,
    /// A cancel was queued for `recv` (backpressure, closing).
    recv_cancelled: bool,
    /// The kernel ended the multishot receive (ENOBUFS, CQ overflow): re-arming it counts.
    recv_ended: bool,
    /// The buffer ring ran dry for this connection: it waits in `Streams::starved`.
    starved: bool,
    phase: Phase,
    /// Reading is paused by the output high watermark.
    paused: bool,
    /// The peer has not sent FIN yet.
    read_open: bool,
    /// In `Streams::to_send`.
    queued: bool,
    last_active: Instant,
}

enum Next {
    Keep,
    Close(CloseReason),
    /// Already closed: free the slot once no request is in flight.
    Release,
}

pub(crate) struct Streams<Pr> {
    conns: Slab<Conn<Pr>>,
    /// Connections with output to send once the batch of completions is handled, so that
    /// everything one iteration produced for a connection goes out in one send.
    to_send: Vec<Key>,
    /// Connections whose receive ended with ENOBUFS, re-armed in order, at most as many per
    /// iteration as there are buffers: re-arming them all at once would mostly earn another
    /// ENOBUFS each (a storm of completions) while the few buffers go to a handful of them.
    starved: VecDeque<Key>,
}

impl<Pr: Protocol> Streams<Pr> {
    pub fn new() -> Self {
        Self { conns: Slab::new(), to_send: Vec::new(), starved: VecDeque::new() }
    }

    /// Bring a connection's requests in line with its state after anything happened to it.
    fn settle(&mut self, core: &mut Core, key: Key) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.next(core, key) {
            Next::Keep => {
                if conn.send.is_none() && !conn.out.is_empty() && !conn.queued {
                    conn.queued = true;
                    self.to_send.push(key);
                }
            }
            Next::Close(reason) => self.close(core, key, reason),
            Next::Release => self.release_if_done(core, key),
        }
    }

    /// Count the close, cancel what is in flight; the socket closes when that has ended.
    fn close(&mut self, core: &mut Core, key: Key, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.phase == Phase::Closed {
            return;
        }
        conn.phase = Phase::Closed;
        reason.count(&mut core.stats);
        if let Some(id) = conn.recv {
            if !conn.recv_cancelled {
                core.ring.cancel(id);
                conn.recv_cancelled = true;
            }
        }
        if let Some(id) = conn.send {
            core.ring.cancel(id);
        }
        self.release_if_done(core, key);
    }

    fn release_if_done(&mut self, core: &mut Core, key: Key) {
        if self.conns.get(key).is_some_and(|c| c.phase == Phase::Closed && c.recv.is_none() && c.send.is_none()) {
            if let Some(conn) = self.conns.remove(key) {
                core.ring.close(OwnedFd::from(conn.stream));
            }
        }
    }

    fn on_recv(&mut self, core: &mut Core, key: Key, c: &Completion<Op>) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if !c.more {
            conn.recv = None;
            conn.recv_ended = !conn.recv_cancelled;
            conn.recv_cancelled = false;
        }
        match &c.result {
            Ok(0) => {
                conn.recv_ended = false;
                conn.on_eof(&mut core.stats, &core.clock);
            }
            Ok(_) => conn.on_data(core.ring.data(c), &mut core.stats, &core.clock),
            Err(e) if is_no_buffers(e) => {
                core.stats.uring_enobufs += 1;
                if !conn.starved {
                    conn.starved = true;
                    self.starved.push_back(key);
                }
            }
            Err(e) if is_canceled(e) => conn.recv_ended = false,
            Err(e) => {
                debug!("recv: {e}");
                conn.recv_ended = false;
                if conn.phase != Phase::Closed {
                    // During a lingering close an error just ends it.
                    let reason = if matches!(conn.phase, Phase::Lingering { .. }) {
                        CloseReason::Normal
                    } else {
                        CloseReason::Error
                    };
                    self.close(core, key, reason);
                    return;
                }
            }
        }
        self.settle(core, key);
    }

    fn on_send(&mut self, core: &mut Core, key: Key, c: Completion<Op>) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        conn.send = None;
        conn.sending = 0;
        let mut buf = c.sent.unwrap_or_default();
        let mut failed = false;
        match c.result {
            Ok(n) => {
                let n = (n as usize).min(buf.len());
                core.stats.bytes_out += n as u64;
                buf.advance(n);
                conn.last_active = core.clock.now();
                // A stream socket never accepts nothing from a non-empty send; do not spin.
                failed = n == 0 && !buf.is_empty();
            }
            Err(e) if is_canceled(&e) => {}
            Err(e) => {
                debug!("send: {e}");
                failed = true;
            }
        }
        if conn.phase == Phase::Closed {
            self.release_if_done(core, key);
            return;
        }
        if failed {
            self.close(core, key, CloseReason::Error);
            return;
        }
        if buf.is_empty() {
            conn.spare = buf;
        } else {
            // Short send: the rest goes before anything produced since.
            conn.sending = buf.len();
            conn.send = Some(core.ring.send(&conn.stream, buf, Op::Send(key)));
        }
        self.settle(core, key);
    }
}

impl<Pr: Protocol> Conn<Pr> {
    fn is_idle(&self) -> bool {
        self.phase == Phase::Open && self.out.is_empty() && self.sending == 0 && self.proto.is_idle()
    }

    fn on_data(&mut self, data: &[u8], stats: &mut Counters, clock: &Clock) {
        self.last_active = clock.now();
        if self.phase != Phase::Open || !self.read_open {
            return; // closing, lingering or closed: input is discarded
        }
        stats.bytes_in += data.len() as u64;
        let p = self.proto.on_data(data, self.out.writer(), &Ctx::new(clock.date()));
        stats.requests += u64::from(p.requests);
        if p.close {
            self.phase = Phase::Closing;
        }
    }

    fn on_eof(&mut self, stats: &mut Counters, clock: &Clock) {
        self.read_open = false;
        self.last_active = clock.now();
        if self.phase == Phase::Open {
            let p = self.proto.on_eof(self.out.writer(), &Ctx::new(clock.date()));
            stats.requests += u64::from(p.requests);
            if p.close {
                self.phase = Phase::Closing;
            }
        }
    }

    /// The state machine's tail, as in the readiness handler: watermarks, the closing
    /// sequence, and whether a receive should be in flight.
    fn next(&mut self, core: &mut Core, key: Key) -> Next {
        match self.phase {
            Phase::Closed => return Next::Release,
            Phase::Lingering { .. } if !self.read_open => return Next::Close(CloseReason::Normal),
            _ => {}
        }
        let pending = self.out.len() + self.sending;
        let was_paused = self.paused;
        self.paused = !core.cfg.watermarks.may_read(pending, self.paused);
        if self.paused && !was_paused {
            core.stats.backpressure_pauses += 1;
        }
        if self.phase == Phase::Closing && pending == 0 {
            if !self.read_open {
                return Next::Close(CloseReason::Normal);
            }
            if let Err(e) = socket::shutdown_write(&self.stream) {
                debug!("shutdown: {e}");
                return Next::Close(CloseReason::Error);
            }
            self.phase = Phase::Lingering { until: core.clock.now() + LINGER };
        }
        if self.phase == Phase::Open && !self.read_open && pending == 0 {
            return Next::Close(CloseReason::Normal); // peer finished, nothing left to send
        }
        if core.draining && self.is_idle() {
            return Next::Close(CloseReason::Normal);
        }
        let want_recv = match self.phase {
            Phase::Open => self.read_open && !self.paused,
            Phase::Lingering { .. } => self.read_open,
            Phase::Closing | Phase::Closed => false,
        };
        match self.recv {
            None if want_recv && !self.starved => {
                if std::mem::take(&mut self.recv_ended) {
                    core.stats.uring_rearms += 1;
                }
                // Open: at most the watermark headroom per arm, so that data already on its
                // way cannot overshoot the high watermark. Lingering: discard without limit.
                let limit = match self.phase {
                    Phase::Open => (core.cfg.watermarks.high + 1).saturating_sub(pending).max(MIN_RECV_LIMIT),
                    _ => 0,
                };
                let limit = u32::try_from(limit).unwrap_or(u32::MAX);
                self.recv = Some(core.ring.recv_multi(&self.stream, Op::Recv(key), limit));
            }
            Some(id) if !want_recv && !self.recv_cancelled => {
                core.ring.cancel(id);
                self.recv_cancelled = true;
            }
            _ => {}
        }
        Next::Keep
    }

    /// Hand `out` to the kernel unless a send is already in flight.
    fn start_send(&mut self, core: &mut Core, key: Key) {
        if self.phase == Phase::Closed || self.send.is_some() || self.out.is_empty() {
            return;
        }
        let buf = std::mem::replace(&mut self.out, std::mem::take(&mut self.spare));
        self.sending = buf.len();
        self.send = Some(core.ring.send(&self.stream, buf, Op::Send(key)));
    }
}

impl<Pr: Protocol> Handler for Streams<Pr> {
    fn accept(&mut self, core: &mut Core, stream: TcpStream) {
        let key = self.conns.insert(Conn {
            stream,
            proto: Pr::new(&ringpoll_proto::Limits::NONE),
            out: OutBuf::new(),
            spare: OutBuf::new(),
            sending: 0,
            send: None,
            recv: None,
            recv_cancelled: false,
            recv_ended: false,
            starved: false,
            phase: Phase::Open,
            paused: false,
            read_open: true,
            queued: false,
            last_active: core.clock.now(),
        });
        self.settle(core, key);
    }

    fn complete(&mut self, core: &mut Core, c: Completion<Op>) {
        match c.op {
            Op::Recv(key) => self.on_recv(core, key, &c),
            Op::Send(key) => self.on_send(core, key, c),
            _ => {}
        }
    }

    fn end_of_batch(&mut self, core: &mut Core) {
        for _ in 0..usize::from(core.cfg.uring.buf_count).min(self.starved.len()) {
            let Some(key) = self.starved.pop_front() else { break };
            if let Some(conn) = self.conns.get_mut(key) {
                conn.starved = false;
                self.settle(core, key);
            }
        }
        let mut keys = std::mem::take(&mut self.to_send);
        for key in keys.drain(..) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.queued = false;
                conn.start_send(core, key);
            }
        }
        self.to_send = keys;
    }

    fn live(&self) -> usize {
        self.conns.len()
    }

    fn drain(&mut self, core: &mut Core) {
        for key in self.conns.keys() {
            self.settle(core, key);
        }
    }

    fn sweep(&mut self, core: &mut Core) {
        let now = core.clock.now();
        let idle = core.cfg.idle_timeout;
        let mut expired = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            let linger = match c.phase {
                Phase::Lingering { until } => Some(until),
                _ => None,
            };
            let open = matches!(c.phase, Phase::Open | Phase::Closing);
            if let Some(reason) = crate::sweep_verdict(linger, open, c.last_active, now, idle) {
                expired.push((key, reason));
            }
        }
        for (key, reason) in expired {
            self.close(core, key, reason);
        }
    }

    fn close_all(&mut self, core: &mut Core) {
        for key in self.conns.keys() {
            self.close(core, key, CloseReason::Shutdown);
        }
    }
}
