//! What each request on the worker's ring is for (the tag kept with it in the ring's op table),
//! and the ring type. A leaf: every part of the io_uring worker reads it.

use ringpoll_proto::relay::Side;
use ringpoll_sys::slab::Key;

/// The worker's ring, its requests tagged with [`Op`].
pub(crate) type Ring = ringpoll_sys::uring::Ring<Op>;

/// Which stream handler a request belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Echo,
    Http,
}

/// What a request is for: the tag kept with it in the ring's op table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// The multishot accept on listening socket `n`.
    Accept(usize),
    /// The poll on the wake-up eventfd (shutdown).
    Waker,
    /// A connection's multishot receive.
    Recv(Kind, Key),
    /// A connection's send (the request owns the buffer).
    Send(Kind, Key),
    /// A shutdown of a connection in the fixed file table (done through the ring).
    Ctl(Kind, Key),
    /// A proxy pair's connect to its upstream.
    Connect(Key),
    /// The multishot receive on one side of a proxy pair.
    RelayRecv(Key, Side),
    /// A send to one side of a proxy pair.
    RelaySend(Key, Side),
    /// A shutdown or SO_LINGER on one side of a proxy pair in the fixed file table.
    RelayCtl(Key, Side),
}
