//! Helpers shared by the io_uring tests of this crate: an in-process server on 127.0.0.1:0
//! with one worker, its counters, and client sockets whose every operation has a timeout.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringpoll_server::{Backend, Config, Counters, Mode, Server};
use ringpoll_sys::testing::uring_refused;

pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// One worker, not pinned, on io_uring (or `backend`).
pub fn config_on(mode: Mode, backend: Backend) -> Config {
    let mut cfg = Config::new("127.0.0.1:0".parse().unwrap(), mode, backend);
    cfg.workers = 1;
    cfg.pin = false;
    cfg.shutdown_timeout = Duration::from_secs(5);
    cfg
}

pub fn config(mode: Mode) -> Config {
    config_on(mode, Backend::Uring)
}

/// Start an in-process server; `None` if the kernel refuses io_uring (a visible skip, or a
/// failure when io_uring is required).
pub fn start(cfg: Config) -> Option<Server> {
    let _ = ringpoll_sys::rlimit::raise_nofile_limit();
    match Server::start(cfg, None) {
        Ok(s) => Some(s),
        Err(e) if e.to_string().contains("io_uring is not available") => {
            uring_refused(&e.to_string());
            None
        }
        Err(e) => panic!("starting the uring server: {e}"),
    }
}

pub fn snapshot(server: &Server) -> Counters {
    server.counters()[0].snapshot()
}

pub fn stop(server: Server) -> Counters {
    server.shutdown_handle().trigger();
    let counters = server.join().expect("workers end cleanly");
    counters[0]
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Wait (bounded) until `f` holds for the published counters.
pub fn wait_counters(server: &Server, what: &str, f: impl Fn(&Counters) -> bool) -> Counters {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let c = snapshot(server);
        if f(&c) {
            return c;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}: {c:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
