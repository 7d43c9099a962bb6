//! What the readiness loop lends its handlers (the poller, counters, clock, scratch buffer),
//! the handler interface, and the token layout. A leaf: the loop and the handlers import it.

use std::sync::Arc;
use std::time::Instant;

use ringpoll_sys::poller::{Event, Mode, Poller, Token};
use ringpoll_sys::slab::Key;
use ringpoll_sys::socket;
use tracing::debug;

use crate::clock::Clock;
use crate::config::Config;
use crate::stats::Counters;
use crate::RateLimit;

/// Reserved token: the worker's wake-up eventfd (shutdown).
pub(crate) const WAKER: Token = u64::MAX;
/// Listening socket `j` has token `LISTENER0 - j`.
pub(crate) const LISTENER0: Token = u64::MAX - 1;
/// At most this many listening sockets per worker.
pub(crate) const MAX_SOCKETS: u64 = 1 << 16;

/// Which handler a connection token belongs to (bits 29-30 of the slot index; bit 31 is the
/// proxy's side bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Echo = 0,
    Http = 1,
    Proxy = 2,
}

const KIND_SHIFT: u32 = 29;
const KIND_MASK: u32 = 0b11 << KIND_SHIFT;
/// Bit of the slot index that says which side of a proxy pair an event is for.
pub(crate) const SIDE_BIT: u32 = 1 << 31;

/// The token for connection `key` of handler `kind` (`side`: the proxy's upstream socket).
pub(crate) fn token(kind: Kind, key: Key, upstream_side: bool) -> Token {
    let index = key.index | ((kind as u32) << KIND_SHIFT) | if upstream_side { SIDE_BIT } else { 0 };
    Key { index, generation: key.generation }.to_u64()
}

/// Split a connection token: (handler, key, upstream side).
pub(crate) fn split(token: Token) -> (Option<Kind>, Key, bool) {
    let k = Key::from_u64(token);
    let kind = match (k.index & KIND_MASK) >> KIND_SHIFT {
        0 => Some(Kind::Echo),
        1 => Some(Kind::Http),
        2 => Some(Kind::Proxy),
        _ => None,
    };
    let key = Key { index: k.index & !(KIND_MASK | SIDE_BIT), generation: k.generation };
    (kind, key, k.index & SIDE_BIT != 0)
}

/// What the loop lends to a handler on every call.
pub(crate) struct Core<P> {
    pub poller: P,
    pub cfg: Arc<Config>,
    pub stats: Counters,
    /// Per-worker receive buffer: connections hold no receive buffer of their own.
    pub scratch: Vec<u8>,
    pub clock: Clock,
    /// Shutdown has started.
    pub draining: bool,
    /// Edge mode: tokens left readable (budget exhausted) to revisit without an event.
    pub requeue: Vec<Token>,
    pub log_limit: RateLimit,
}

impl<P: Poller> Core<P> {
    /// In edge mode nothing re-reports a descriptor the loop left ready: remember it.
    pub fn revisit_if_edge(&mut self, token: Token) {
        if P::MODE == Mode::Edge {
            self.requeue.push(token);
        }
    }

    /// Close a socket the poller does not watch (counted).
    pub fn close(&mut self, s: std::net::TcpStream) {
        if let Err(e) = socket::close(s) {
            debug!("close: {e}");
        }
    }

    /// Stop watching and close a socket (both counted).
    pub fn forget(&mut self, s: std::net::TcpStream) {
        use std::os::fd::AsRawFd;
        if let Err(e) = self.poller.delete(s.as_raw_fd()) {
            debug!("deregistering fd {}: {e}", s.as_raw_fd());
        }
        if let Err(e) = socket::close(s) {
            debug!("close: {e}");
        }
    }
}

/// Per-connection logic plugged into the loop.
pub(crate) trait Handler<P: Poller> {
    /// A new connection (non-blocking) accepted on listener `listener` of the configuration.
    fn accept(&mut self, core: &mut Core<P>, stream: std::net::TcpStream, listener: usize);
    /// A readiness event (or an edge-mode revisit) for one of the handler's tokens.
    fn event(&mut self, core: &mut Core<P>, ev: Event);
    /// Shutdown started: pick up what is already received, then let the lifecycles decide.
    fn drain(&mut self, core: &mut Core<P>);
    /// Run the deadlines that are due.
    fn timers(&mut self, core: &mut Core<P>);
    /// When the next deadline is due.
    fn next_deadline(&self) -> Option<Instant>;
    /// The shutdown deadline passed: close everything now.
    fn close_all(&mut self, core: &mut Core<P>);
    /// Once per loop iteration: publish what the handler counts beside `Core::stats`.
    fn publish(&mut self, _core: &mut Core<P>) {}
}
