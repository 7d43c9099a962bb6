//! L4 proxy over the readiness loop (being written).

use std::net::TcpStream;

use super::poller::{Event, Poller};
use super::{Core, Handler};

pub(crate) struct Proxies {
    live: usize,
}

impl Proxies {
    pub fn new() -> Self {
        Self { live: 0 }
    }
}

impl<P: Poller> Handler<P> for Proxies {
    fn accept(&mut self, _core: &mut Core<P>, stream: TcpStream) {
        drop(stream);
    }
    fn event(&mut self, _core: &mut Core<P>, _ev: Event) {}
    fn live(&self) -> usize {
        self.live
    }
    fn drain(&mut self, _core: &mut Core<P>) {}
    fn sweep(&mut self, _core: &mut Core<P>) {}
    fn close_all(&mut self, _core: &mut Core<P>) {}
}
