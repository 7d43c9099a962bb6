//! An in-test upstream for the proxy tests: a tagged echo server that counts, at the upstream,
//! the connections that carried data (apart from the proxy's start-up probe and its health
//! checks, which connect and close without a byte), can be killed (its listener closes and
//! every open connection is reset, as when the process dies) and brought back on its address.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{set_linger_zero, IO_TIMEOUT};

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    next: AtomicU64,
    /// Connections that sent data, in total, and open now.
    served: AtomicUsize,
    open: AtomicUsize,
    /// Connections that closed without sending anything (probes, health checks).
    probes: AtomicUsize,
    /// (accept order, carried data) of every connection since the last (re)start.
    log: Mutex<Vec<(u64, bool)>>,
    /// Open connections (clones), to reset them when the upstream is killed.
    conns: Mutex<HashMap<u64, TcpStream>>,
}

struct Running {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

/// A tagged echo upstream: on a connection that sends data it answers the tag byte, then
/// echoes everything until EOF.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub tag: u8,
    seen: Arc<Seen>,
    running: Option<Running>,
}

impl TestUpstream {
    pub fn start(tag: u8) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let mut u = Self { addr, tag, seen: Arc::default(), running: None };
        u.run(l);
        u
    }

    /// An upstream on an address nobody listens on yet (see [`TestUpstream::restart`]).
    pub fn stopped(tag: u8) -> Self {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        Self { addr, tag, seen: Arc::default(), running: None }
    }

    fn run(&mut self, l: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, flag, tag) = (self.seen.clone(), stop.clone(), self.tag);
        let accept = std::thread::spawn(move || {
            while let Ok((s, _)) = l.accept() {
                if flag.load(Ordering::Acquire) {
                    set_linger_zero(&s);
                    return;
                }
                let id = seen.next.fetch_add(1, Ordering::Relaxed);
                if let Ok(c) = s.try_clone() {
                    seen.conns.lock().unwrap().insert(id, c);
                }
                let seen = seen.clone();
                std::thread::spawn(move || serve(s, id, tag, &seen));
            }
        });
        self.running = Some(Running { stop, accept });
    }

    /// Stop as a killed process would: the listener closes (connects are refused from now on)
    /// and every open connection is reset.
    pub fn kill(&mut self) {
        let Some(r) = self.running.take() else { return };
        r.stop.store(true, Ordering::Release);
        // Wake the accept thread; it sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        r.accept.join().unwrap();
        for (_, c) in self.seen.conns.lock().unwrap().drain() {
            set_linger_zero(&c);
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Listen on the same address again; the accept log starts afresh.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "already running");
        self.seen.log.lock().unwrap().clear();
        let l = TcpListener::bind(self.addr).unwrap_or_else(|e| panic!("listening on {} again: {e}", self.addr));
        self.run(l);
    }

    /// Connections that carried data, in total.
    pub fn served(&self) -> usize {
        self.seen.served.load(Ordering::SeqCst)
    }

    /// Connections that carried data and are open now.
    pub fn open(&self) -> usize {
        self.seen.open.load(Ordering::SeqCst)
    }

    /// Connections that closed without data (the proxy's probe and health checks).
    pub fn probes(&self) -> usize {
        self.seen.probes.load(Ordering::SeqCst)
    }

    /// Since the last (re)start: how many connections without data were accepted before the
    /// first one with data (`None`: no data yet). Connections still undecided (open, silent)
    /// count as neither.
    pub fn probes_before_first_data(&self) -> Option<usize> {
        let mut log = self.seen.log.lock().unwrap().clone();
        log.sort_unstable();
        let first = log.iter().position(|&(_, data)| data)?;
        Some(first)
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(mut s: TcpStream, id: u64, tag: u8, seen: &Seen) {
    let _ = s.set_read_timeout(Some(IO_TIMEOUT * 3));
    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = vec![0u8; 16 * 1024];
    let n = s.read(&mut buf).unwrap_or(0);
    let data = n > 0;
    seen.log.lock().unwrap().push((id, data));
    if data {
        // Counted before the answer: a client that got its answer sees the count.
        seen.served.fetch_add(1, Ordering::SeqCst);
        seen.open.fetch_add(1, Ordering::SeqCst);
        let mut first = vec![tag];
        first.extend_from_slice(&buf[..n]);
        if s.write_all(&first).is_ok() {
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        seen.open.fetch_sub(1, Ordering::SeqCst);
    } else {
        seen.probes.fetch_add(1, Ordering::SeqCst);
    }
    seen.conns.lock().unwrap().remove(&id);
}
