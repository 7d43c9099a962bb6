//! What the completion loop lends its handlers (the ring, counters, clock), the handler
//! interface, and the conversions between a connection's output buffer and a ring send's
//! owned bytes. Read by every part of the io_uring worker; it reads none of them but the tags
//! and the socket type.

use std::sync::Arc;
use std::time::Instant;

use ringpoll_proto::OutBuf;
use ringpoll_sys::uring::{Completion, SendBuf};

use super::fd::Fd;
use super::ops::{Op, Ring};
use crate::clock::Clock;
use crate::config::Config;
use crate::stats::Counters;

/// What the loop lends to a handler on every call.
pub(crate) struct Core {
    pub ring: Ring,
    pub cfg: Arc<Config>,
    pub stats: Counters,
    pub clock: Clock,
    /// Shutdown has started.
    pub draining: bool,
    /// Receive buffers held out of the ring to be sent as they are (echo, relay)...
    pub held: usize,
    /// ...at most this many (half the ring), so that buffers held for slow peers can never
    /// starve every receive.
    pub held_max: usize,
}

/// Per-connection logic plugged into the completion loop.
pub(crate) trait Handler {
    /// A new connection accepted on listener `listener` of the configuration.
    fn accept(&mut self, core: &mut Core, fd: Fd, listener: usize);
    /// A completion for one of the handler's requests.
    fn complete(&mut self, core: &mut Core, c: Completion<Op>);
    /// Every completion of this iteration was handled: queue the sends they produced.
    fn end_of_batch(&mut self, core: &mut Core);
    /// Live connections, including those waiting for their requests to end.
    fn live(&self) -> usize;
    /// Shutdown started: let the lifecycles decide with the drain in force.
    fn drain(&mut self, core: &mut Core);
    /// Run the deadlines that are due.
    fn timers(&mut self, core: &mut Core);
    /// When the next deadline is due.
    fn next_deadline(&self) -> Option<Instant>;
    /// The shutdown deadline passed: close everything now.
    fn close_all(&mut self, core: &mut Core);
    /// Once per loop iteration: publish what the handler counts beside `Core::stats`.
    fn publish(&mut self, _core: &mut Core) {}
}

/// An output buffer as the owned bytes of a ring send.
pub(crate) fn send_buf(buf: OutBuf) -> SendBuf {
    let (bytes, sent) = buf.into_parts();
    SendBuf::new(bytes, sent)
}

/// A send's bytes back from the ring, as they were given (advance them by the result).
pub(crate) fn out_buf(buf: SendBuf) -> OutBuf {
    let (bytes, sent) = buf.into_parts();
    OutBuf::from_parts(bytes, sent)
}
