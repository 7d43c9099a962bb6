//! A connection's socket as the ring names it: a regular descriptor, or a slot of the ring's
//! fixed file table (a direct descriptor, `--uring-fixed-files`), which has no descriptor at
//! all. The few operations whose form differs between the two are here: a regular descriptor
//! is shut down or set to reset with one system call, a fixed one only through the ring (a
//! request whose completion comes later).

use std::io;
use std::net::{SocketAddr, TcpStream};

use ringpoll_sys::socket;
use ringpoll_sys::uring::{FixedFd, OpId, RingFd, Target};
use tracing::debug;

use super::ops::{Op, Ring};

/// One connection's socket.
#[derive(Debug)]
pub(crate) enum Fd {
    Plain(TcpStream),
    Fixed(FixedFd),
}

impl RingFd for Fd {
    fn target(&self) -> Target {
        match self {
            Fd::Plain(s) => s.target(),
            Fd::Fixed(f) => f.target(),
        }
    }
}

/// What became of a request to shut down or reset a socket.
#[derive(Debug)]
pub(crate) enum Done {
    /// Done now (a regular descriptor).
    Now(io::Result<()>),
    /// Queued on the ring: its completion, tagged with the op given, says how it went.
    Queued(OpId),
}

impl Fd {
    /// The peer's address and ours; `None` for a fixed descriptor (no descriptor to ask).
    pub fn addresses(&self) -> Option<io::Result<(SocketAddr, SocketAddr)>> {
        match self {
            Fd::Plain(s) => Some(socket::addresses(s)),
            Fd::Fixed(_) => None,
        }
    }

    /// Shut down the write side (FIN after the queued bytes).
    pub fn shutdown_write(&self, ring: &mut Ring, op: Op) -> Done {
        match self {
            Fd::Plain(s) => Done::Now(socket::shutdown_write(s)),
            Fd::Fixed(f) => Done::Queued(ring.shutdown_write(f, op)),
        }
    }

    /// Make the close reset the peer (SO_LINGER 0).
    pub fn set_linger_zero(&self, ring: &mut Ring, op: Op) -> Done {
        match self {
            Fd::Plain(s) => Done::Now(socket::set_linger_zero(s)),
            Fd::Fixed(f) => Done::Queued(ring.set_linger_zero(f, op)),
        }
    }

    /// Close it through the ring. Call once no request uses it any more, so that the kernel
    /// drops its last reference and the peer sees the FIN (or reset) at once.
    pub fn close(self, ring: &mut Ring) {
        match self {
            Fd::Plain(s) => ring.close(s),
            Fd::Fixed(f) => ring.close_fixed(f),
        }
    }

    /// Close it at once, outside the ring's order (a connection no request ever used).
    pub fn close_now(self, ring: &mut Ring) {
        match self {
            Fd::Plain(s) => {
                if let Err(e) = socket::close(s) {
                    debug!("close: {e}");
                }
            }
            Fd::Fixed(f) => ring.close_fixed(f),
        }
    }
}
