//! The three handlers of a worker (echo, HTTP, proxy) and the dispatch of completions to them
//! by their tag.

use std::time::Instant;

use ringpoll_proto::{echo::Echo, http::Http1};
use ringpoll_sys::uring::Completion;

use super::core::{Core, Handler};
use super::fd::Fd;
use super::ops::{Kind, Op};
use super::proxy;
use super::stream;
use crate::config::Mode;

/// The three handlers of a worker.
pub(crate) struct Mux {
    pub echo: stream::Streams<Echo>,
    pub http: stream::Streams<Http1>,
    pub proxy: proxy::Proxies,
}

impl Mux {
    pub fn each(&mut self, mut f: impl FnMut(&mut dyn Handler)) {
        f(&mut self.echo);
        f(&mut self.http);
        f(&mut self.proxy);
    }

    pub fn live(&self) -> usize {
        self.echo.live() + self.http.live() + self.proxy.live()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        [self.echo.next_deadline(), self.http.next_deadline(), self.proxy.next_deadline()].into_iter().flatten().min()
    }

    pub fn accept(&mut self, core: &mut Core, s: Fd, listener: usize) {
        match core.cfg.listeners[listener].mode {
            Mode::Echo => self.echo.accept(core, s, listener),
            Mode::Http => self.http.accept(core, s, listener),
            Mode::Proxy => self.proxy.accept(core, s, listener),
        }
    }

    pub fn complete(&mut self, core: &mut Core, c: Completion<Op>) {
        match c.op {
            Op::Recv(Kind::Echo, _) | Op::Send(Kind::Echo, _) | Op::Ctl(Kind::Echo, _) => self.echo.complete(core, c),
            Op::Recv(Kind::Http, _) | Op::Send(Kind::Http, _) | Op::Ctl(Kind::Http, _) => self.http.complete(core, c),
            Op::Connect(_) | Op::RelayRecv(..) | Op::RelaySend(..) | Op::RelayCtl(..) => self.proxy.complete(core, c),
            Op::Accept(_) | Op::Waker => {}
        }
    }
}
