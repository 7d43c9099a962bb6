//! One load connection: its state, its in-flight requests, and what it does with the bytes
//! that come back (echo verification or HTTP framing). No system calls here; the worker
//! does the I/O.

use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;

use ringpoll_proto::client::{pattern, FrameError, ResponseFramer};

use crate::config::{LoadMode, Plan};
use crate::stats::{Outcome, Recorder, Slot};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for its reconnect timer (backoff).
    Waiting,
    Connecting,
    Open,
    /// The run is over for this connection.
    Done,
}

/// Why a connection is being dropped.
#[derive(Debug)]
pub enum Lost {
    /// The server closed the connection.
    Eof,
    /// The last response said `Connection: close`.
    ServerClose,
    Read(io::Error),
    Write(io::Error),
    Frame(FrameError),
    /// Bytes arrived with no request in flight.
    Unexpected,
    Timeout,
    Connect(io::Error),
    /// The poller refused to register or re-arm the socket.
    Poller(io::Error),
}

impl Lost {
    /// One line for the report's `first_error`.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Lost::Eof => "connection closed by the server with requests in flight".into(),
            Lost::ServerClose => "server sent Connection: close with requests in flight".into(),
            Lost::Read(e) => format!("read: {}", crate::describe::describe_connect_error(e)),
            Lost::Write(e) => format!("write: {}", crate::describe::describe_connect_error(e)),
            Lost::Frame(e) => format!("read: {e}"),
            Lost::Unexpected => "read: bytes received with no request in flight".into(),
            Lost::Timeout => "request timed out".into(),
            Lost::Connect(e) => format!("connect: {}", crate::describe::describe_connect_error(e)),
            Lost::Poller(e) => format!("poller: {e}"),
        }
    }
}

/// First reconnect delay after a failure; doubles up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: u64 = 10_000_000;
pub const MAX_BACKOFF: u64 = 1_000_000_000;

/// Spacing of the echo streams' starting offsets, so that bytes delivered to the wrong
/// connection do not match the pattern.
const STREAM_SPACING: u64 = 7919;

#[derive(Debug)]
pub struct Conn {
    pub stream: Option<TcpStream>,
    pub state: State,
    /// Bumped at every (re)connect: stale events carry an old generation.
    pub generation: u32,
    /// An `--idle` connection: connects and never sends.
    pub idle: bool,
    /// Stream offsets: bytes queued for sending, and sent so far.
    pub queued: u64,
    pub sent: u64,
    /// Echo: stream offset of the next byte expected back.
    pub received: u64,
    /// Echo: bytes of the oldest in-flight message still to come, and whether any of its
    /// bytes were wrong.
    front_left: usize,
    front_bad: bool,
    pub framer: ResponseFramer,
    /// In-flight requests, oldest first (capacity `depth`, allocated once).
    pub slots: VecDeque<Slot>,
    /// Open loop: index of the next request of this connection's schedule, and the schedule's
    /// phase (ns since the epoch).
    pub next_k: u64,
    pub phase: f64,
    /// Pending timer (reconnect or next scheduled send), 0 = none.
    pub timer_at: u64,
    pub backoff: u64,
    /// When the current connect started.
    pub since: u64,
    /// A response completed on this connection since it was (re)opened.
    pub served: bool,
    /// HTTP requests the server will not answer on the last connection because an earlier
    /// response said `Connection: close`: sent again, first, on the next one (RFC 9112
    /// section 9.3.2), keeping their intended start so that the delay counts in their latency.
    pub retry: Vec<Slot>,
}

impl Conn {
    #[must_use]
    pub fn new(global_index: usize, idle: bool, plan: &Plan) -> Self {
        // Http streams start at a request boundary (offset 0 of the repeated request).
        let base = if plan.mode == LoadMode::Echo { global_index as u64 * STREAM_SPACING } else { 0 };
        // Open loop: connection g starts g/R seconds in, so sends are spread evenly.
        let phase = plan.interval_ns.map_or(0.0, |i| global_index as f64 * i / plan.connections as f64);
        Self {
            stream: None,
            state: State::Waiting,
            generation: 0,
            idle,
            queued: base,
            sent: base,
            received: base,
            front_left: plan.msg_len,
            front_bad: false,
            framer: ResponseFramer::new(),
            slots: VecDeque::with_capacity(if idle { 0 } else { plan.depth }),
            retry: Vec::new(),
            next_k: 0,
            phase,
            timer_at: 0,
            backoff: MIN_BACKOFF,
            since: 0,
            served: false,
        }
    }

    /// Intended send time of the next scheduled request (open loop).
    #[inline]
    #[must_use]
    pub fn next_intended(&self, interval: f64) -> u64 {
        (self.phase + self.next_k as f64 * interval) as u64
    }

    /// Forget the connection's stream state (it was dropped); returns the requests that were
    /// in flight.
    pub fn reset(&mut self, plan: &Plan) -> usize {
        let lost = self.slots.len();
        self.slots.clear();
        self.retry.clear();
        self.framer.reset();
        // A new echo stream continues at the send offset (any offset will do); an http one
        // starts again at a request boundary.
        if plan.mode == LoadMode::Http {
            self.sent = 0;
        }
        self.queued = self.sent;
        self.received = self.sent;
        self.front_left = plan.msg_len;
        self.front_bad = false;
        self.served = false;
        lost
    }

    /// Bytes received; completes requests into `rec`. An error means the connection has to go.
    #[inline]
    pub fn on_bytes(&mut self, data: &[u8], plan: &Plan, now: u64, rec: &mut Recorder) -> Result<(), Lost> {
        match plan.mode {
            LoadMode::Echo => self.on_echo(data, plan.msg_len, now, rec),
            LoadMode::Http => self.on_http(data, now, rec),
        }
    }

    fn on_echo(&mut self, mut data: &[u8], size: usize, now: u64, rec: &mut Recorder) -> Result<(), Lost> {
        while !data.is_empty() {
            if self.slots.is_empty() {
                return Err(Lost::Unexpected);
            }
            let n = self.front_left.min(data.len());
            let (piece, rest) = data.split_at(n);
            if pattern::mismatches(self.received, piece) != 0 {
                self.front_bad = true;
            }
            self.received += n as u64;
            self.front_left -= n;
            data = rest;
            if self.front_left == 0 {
                if let Some(slot) = self.slots.pop_front() {
                    rec.complete(slot, now, if self.front_bad { Outcome::Mismatch } else { Outcome::Echoed });
                }
                self.front_left = size;
                self.front_bad = false;
                self.served = true;
            }
        }
        Ok(())
    }

    fn on_http(&mut self, data: &[u8], now: u64, rec: &mut Recorder) -> Result<(), Lost> {
        let slots = &mut self.slots;
        let mut unexpected = false;
        let mut close = false;
        let r = self.framer.feed_all(data, |resp| {
            match slots.pop_front() {
                Some(slot) => rec.complete(slot, now, Outcome::Status(resp.status)),
                None => unexpected = true,
            }
            close |= resp.close;
        });
        if r.as_ref().is_ok_and(|&n| n > 0) {
            self.served = true;
        }
        if unexpected {
            return Err(Lost::Unexpected);
        }
        r.map_err(Lost::Frame)?;
        if close {
            return Err(Lost::ServerClose);
        }
        Ok(())
    }

    /// The server announced the close (`Connection: close`): the requests behind that response
    /// were never processed; keep them to send again on the next connection.
    pub fn keep_unanswered(&mut self) {
        self.retry = self.slots.drain(..).collect();
    }

    /// The server closed its side: completes a read-until-close response.
    pub fn on_eof(&mut self, plan: &Plan, now: u64, rec: &mut Recorder) -> Lost {
        if plan.mode == LoadMode::Http {
            match self.framer.on_eof() {
                Ok(Some(resp)) => {
                    if let Some(slot) = self.slots.pop_front() {
                        rec.complete(slot, now, Outcome::Status(resp.status));
                        self.served = true;
                    }
                }
                Ok(None) => {}
                Err(e) => return Lost::Frame(e),
            }
        }
        Lost::Eof
    }

    /// Queue one request (its bytes are sent by the worker from the stream offsets).
    #[inline]
    pub fn queue(&mut self, slot: Slot, msg_len: usize) {
        self.slots.push_back(slot);
        self.queued += msg_len as u64;
    }

    /// The bytes to send next, at most `max` (a contiguous run of the source).
    #[inline]
    pub fn outgoing<'p>(&self, plan: &'p Plan) -> &'p [u8] {
        let left = usize::try_from(self.queued - self.sent).unwrap_or(usize::MAX);
        match plan.mode {
            LoadMode::Echo => pattern::slice(self.sent, left),
            LoadMode::Http => {
                let off = (self.sent % plan.msg_len as u64) as usize;
                let avail = &plan.requests[off..];
                &avail[..left.min(avail.len())]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_target, LoadConfig};
    use crate::stats::Recorder;
    use std::time::Instant;

    fn plan(mode: LoadMode, size: usize, depth: usize) -> Plan {
        let mut cfg = LoadConfig::new("127.0.0.1:1");
        cfg.size = size;
        cfg.depth = depth;
        Plan::new(&cfg, mode, &parse_target("127.0.0.1:1").unwrap(), Instant::now())
    }

    fn send_all(c: &mut Conn, p: &Plan) -> Vec<u8> {
        let mut out = Vec::new();
        while c.sent < c.queued {
            let b = c.outgoing(p);
            out.extend_from_slice(b);
            c.sent += b.len() as u64;
        }
        out
    }

    #[test]
    fn echo_round_trip_in_odd_pieces_verifies() {
        let p = plan(LoadMode::Echo, 100, 3);
        let mut c = Conn::new(5, false, &p);
        let mut rec = Recorder::new(0, false, false);
        for _ in 0..3 {
            c.queue(Slot::default(), p.msg_len);
        }
        let wire = send_all(&mut c, &p);
        assert_eq!(wire.len(), 300);
        for piece in wire.chunks(7) {
            c.on_bytes(piece, &p, 10_000, &mut rec).unwrap();
        }
        assert_eq!((rec.requests, rec.errors.mismatch), (3, 0));
        assert!(c.slots.is_empty());
        // More bytes than asked for.
        assert!(matches!(c.on_bytes(b"x", &p, 0, &mut rec), Err(Lost::Unexpected)));
    }

    #[test]
    fn one_bad_byte_is_one_mismatched_message() {
        let p = plan(LoadMode::Echo, 64, 4);
        let mut c = Conn::new(0, false, &p);
        let mut rec = Recorder::new(0, false, false);
        for _ in 0..4 {
            c.queue(Slot::default(), p.msg_len);
        }
        let mut wire = send_all(&mut c, &p);
        wire[130] ^= 1;
        c.on_bytes(&wire, &p, 1, &mut rec).unwrap();
        assert_eq!((rec.requests, rec.errors.mismatch), (3, 1), "the bad message is an error, not a request");
    }

    #[test]
    fn http_requests_are_sent_from_the_shared_buffer() {
        let p = plan(LoadMode::Http, 64, 20);
        let mut c = Conn::new(0, false, &p);
        for _ in 0..20 {
            c.queue(Slot::default(), p.msg_len);
        }
        let wire = send_all(&mut c, &p);
        let one = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n";
        assert_eq!(wire, one.repeat(20));
        let mut rec = Recorder::new(0, false, false);
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        c.on_bytes(&resp.repeat(19), &p, 1, &mut rec).unwrap();
        assert_eq!(rec.requests, 19);
        let r = c.on_bytes(b"HTTP/1.1 503 No\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", &p, 1, &mut rec);
        assert!(matches!(r, Err(Lost::ServerClose)));
        assert_eq!((rec.requests, rec.errors.status, rec.status.s5xx), (19, 1, 1));
        let r = c.on_bytes(resp, &p, 1, &mut rec);
        assert!(matches!(r, Err(Lost::Unexpected)));
    }

    #[test]
    fn every_http_stream_starts_at_a_request_boundary() {
        let p = plan(LoadMode::Http, 64, 2);
        let mut c = Conn::new(7, false, &p);
        c.queue(Slot::default(), p.msg_len);
        assert!(c.outgoing(&p).starts_with(b"GET / "));
        // Dropped after a partial send: the next connection sends whole requests again.
        c.sent += 5;
        c.reset(&p);
        c.queue(Slot::default(), p.msg_len);
        assert!(c.outgoing(&p).starts_with(b"GET / "));
        assert_eq!(c.outgoing(&p).len(), p.msg_len);
    }
}
