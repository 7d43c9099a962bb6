//! The lifecycle objects driven in memory: phases, deadlines, backpressure, retry, and random
//! event orders. No socket anywhere.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::stream::{Action, Env, StreamConfig, StreamConn, Timeouts};
use super::{CloseReason, Stats};
use crate::buf::Watermarks;
use crate::echo::Echo;
use crate::http::Http1;

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

struct Harness<P> {
    conn: StreamConn<P>,
    cfg: StreamConfig,
    t0: Instant,
    now: Instant,
    draining: bool,
    st: Stats,
    /// Everything written to the peer.
    wire: Vec<u8>,
    shut: bool,
}

impl<P: crate::Protocol> Harness<P> {
    fn new(cfg: StreamConfig) -> Self {
        let t0 = Instant::now();
        Self {
            conn: StreamConn::new(t0, &cfg),
            cfg,
            t0,
            now: t0,
            draining: false,
            st: Stats::default(),
            wire: Vec::new(),
            shut: false,
        }
    }

    fn env(&self) -> Env<'_> {
        Env { now: self.now, date: DATE, draining: self.draining, cfg: &self.cfg }
    }

    fn at(&mut self, offset: Duration) -> &mut Self {
        self.now = self.t0 + offset;
        self
    }

    fn data(&mut self, d: &[u8]) -> Action {
        let env = Env { now: self.now, date: DATE, draining: self.draining, cfg: &self.cfg };
        self.conn.on_data(d, &env, &mut self.st);
        self.settle()
    }

    fn eof(&mut self) -> Action {
        let env = Env { now: self.now, date: DATE, draining: self.draining, cfg: &self.cfg };
        self.conn.on_eof(&env, &mut self.st);
        self.settle()
    }

    /// Write up to `max` bytes of output (a socket that takes that much).
    fn write(&mut self, max: usize) -> Action {
        let n = self.conn.output().len().min(max);
        self.wire.extend_from_slice(&self.conn.output()[..n]);
        let env = Env { now: self.now, date: DATE, draining: self.draining, cfg: &self.cfg };
        self.conn.on_written(n, &env, &mut self.st);
        self.settle()
    }

    fn timer(&mut self) -> Action {
        let env = Env { now: self.now, date: DATE, draining: self.draining, cfg: &self.cfg };
        self.conn.on_timer(&env, &mut self.st);
        self.settle()
    }

    /// Run actions the way a transport does: a shutdown that succeeds, until the answer is
    /// `Continue` or `Close`.
    fn settle(&mut self) -> Action {
        loop {
            let env = Env { now: self.now, date: DATE, draining: self.draining, cfg: &self.cfg };
            match self.conn.next_action(&env, &mut self.st) {
                Action::ShutdownWrite => {
                    self.shut = true;
                    self.conn.on_shutdown_done(&env);
                }
                other => return other,
            }
        }
    }

    fn deadline(&self) -> Option<Duration> {
        self.conn.deadline(&self.env()).map(|d| d - self.t0)
    }

    fn wire_text(&self) -> String {
        String::from_utf8_lossy(&self.wire).into_owned()
    }
}

fn echo() -> Harness<Echo> {
    Harness::new(StreamConfig::echo())
}

fn http() -> Harness<Http1> {
    Harness::new(StreamConfig::http())
}

#[test]
fn echo_flushes_then_closes_on_eof() {
    let mut h = echo();
    assert!(h.conn.wants_read());
    assert_eq!(h.data(b"hello"), Action::Continue);
    assert_eq!(h.conn.output(), b"hello");
    assert_eq!(h.write(2), Action::Continue, "short write");
    assert_eq!(h.eof(), Action::Continue, "3 bytes still to send after the FIN");
    assert!(!h.conn.wants_read());
    assert_eq!(h.write(100), Action::Close(CloseReason::Normal));
    assert_eq!(h.wire, b"hello");
    assert!(!h.shut, "the peer already finished: close, no shutdown first");
    assert_eq!(h.st.closed_by(CloseReason::Normal), 1);
    assert_eq!((h.st.bytes_in, h.st.bytes_out, h.st.requests), (5, 5, 1));
}

#[test]
fn http_close_shuts_down_lingers_and_discards() {
    let mut h = http();
    let first = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGET /junk HTTP/1.1\r\n";
    h.data(first);
    assert!(!h.conn.wants_read(), "closing: nothing more is read until the output is out");
    assert_eq!(h.write(usize::MAX), Action::Continue);
    assert!(h.shut, "FIN after the response");
    assert!(h.conn.wants_read(), "lingering: read and drop");
    assert_eq!(h.deadline(), Some(secs(2)), "the linger deadline");
    assert_eq!(h.data(b"more junk"), Action::Continue);
    assert_eq!(h.st.bytes_in, first.len() as u64, "lingering input is not counted as served bytes");
    assert_eq!(h.eof(), Action::Close(CloseReason::Normal));
    assert!(h.wire_text().contains("Connection: close"));

    let mut h = http();
    h.data(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    h.write(usize::MAX);
    assert_eq!(h.at(secs(1)).timer(), Action::Continue, "still lingering");
    assert_eq!(h.at(secs(2)).timer(), Action::Close(CloseReason::Normal), "linger over");
}

#[test]
fn backpressure_pauses_reading_with_hysteresis() {
    let mut cfg = StreamConfig::echo();
    cfg.watermarks = Watermarks { high: 100, low: 20 };
    let mut h = Harness::<Echo>::new(cfg);
    assert_eq!(h.conn.read_headroom(&h.cfg), Some(101));
    h.data(&[1; 150]);
    assert!(!h.conn.wants_read(), "150 pending > high");
    assert_eq!(h.st.backpressure_pauses, 1);
    h.write(100);
    assert!(!h.conn.wants_read(), "50 pending > low");
    h.write(30);
    assert!(h.conn.wants_read(), "20 pending = low: resumed");
    assert_eq!(h.st.backpressure_pauses, 1);
}

#[test]
fn a_silent_http_connection_closes_at_the_head_deadline_without_a_response() {
    let mut h = http();
    assert_eq!(h.deadline(), Some(secs(10)));
    assert_eq!(h.at(secs(9)).timer(), Action::Continue);
    assert_eq!(h.at(secs(10)).timer(), Action::Close(CloseReason::HeaderTimeout));
    assert!(h.wire.is_empty());
}

#[test]
fn a_trickled_head_gets_408_at_the_head_deadline() {
    let mut h = http();
    let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: 1234567890\r\n\r\n";
    for (i, b) in head[..20].iter().enumerate() {
        h.at(secs(3) + Duration::from_millis(500) * i as u32);
        assert_eq!(h.data(std::slice::from_ref(b)), Action::Continue);
        assert_eq!(h.deadline(), Some(secs(13)), "counted from the first byte, not moved by later ones");
    }
    assert_eq!(h.at(secs(13)).timer(), Action::Continue, "408 queued, closing");
    assert!(h.conn.output().starts_with(b"HTTP/1.1 408 Request Timeout\r\n"));
    assert_eq!(h.write(usize::MAX), Action::Continue);
    assert!(h.shut);
    assert_eq!(h.eof(), Action::Close(CloseReason::HeaderTimeout));
    assert_eq!(h.st.closed_by(CloseReason::HeaderTimeout), 1);
}

#[test]
fn keepalive_and_body_deadlines() {
    let mut h = http();
    h.at(secs(1)).data(GET);
    h.at(secs(2)).write(usize::MAX);
    assert_eq!(h.deadline(), Some(secs(62)), "keep-alive from the end of the response");
    h.at(secs(30)).data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab");
    assert_eq!(h.deadline(), Some(secs(90)), "body: between reads");
    h.at(secs(80)).data(b"cd");
    assert_eq!(h.deadline(), Some(secs(140)));
    assert_eq!(h.at(secs(140)).timer(), Action::Continue);
    assert!(h.conn.output().starts_with(b"HTTP/1.1 408"));

    let mut h = http();
    h.at(secs(1)).data(GET);
    h.at(secs(2)).write(usize::MAX);
    assert_eq!(h.at(secs(62)).timer(), Action::Close(CloseReason::KeepaliveTimeout));
}

#[test]
fn empty_lines_move_no_deadline_between_requests() {
    // After a response: a peer sending "\r\n" every second is still closed at the keep-alive
    // deadline, counted from the end of the response.
    let mut h = http();
    h.at(secs(1)).data(GET);
    h.at(secs(2)).write(usize::MAX);
    for s in 3..62 {
        assert_eq!(h.at(secs(s)).data(b"\r\n"), Action::Continue);
        assert_eq!(h.deadline(), Some(secs(62)), "at {s} s");
    }
    assert_eq!(h.at(secs(62)).timer(), Action::Close(CloseReason::KeepaliveTimeout));
    assert!(h.wire_text().ends_with("Hello, World!"), "no response to empty lines");

    // Before any request: the head deadline from the accept.
    let mut h = http();
    for s in 0..10 {
        h.at(secs(s)).data(b"\n");
        assert_eq!(h.deadline(), Some(secs(10)));
    }
    assert_eq!(h.at(secs(10)).timer(), Action::Close(CloseReason::HeaderTimeout));
    assert!(h.wire.is_empty());

    // While draining, the grace counts from the last response too.
    let mut h = http();
    h.at(secs(1)).data(GET);
    h.write(usize::MAX);
    h.draining = true;
    h.at(Duration::from_millis(1500)).data(b"\r\n");
    assert_eq!(h.deadline(), Some(secs(2)));
    assert_eq!(h.at(secs(2)).timer(), Action::Close(CloseReason::Normal));
}

#[test]
fn a_peer_that_never_reads_is_closed_at_the_send_deadline() {
    let mut h = echo();
    h.at(secs(5)).data(&[7; 64]);
    assert_eq!(h.deadline(), Some(secs(65)));
    h.at(secs(30)).write(10);
    assert_eq!(h.deadline(), Some(secs(90)), "progress moves it");
    h.at(secs(60)).data(&[8; 10]);
    assert_eq!(h.deadline(), Some(secs(90)), "input does not");
    assert_eq!(h.at(secs(90)).timer(), Action::Close(CloseReason::SendTimeout));
}

#[test]
fn echo_idle_timeout() {
    let mut h = echo();
    h.at(secs(10)).data(b"x");
    h.write(1);
    assert_eq!(h.deadline(), Some(secs(310)));
    assert_eq!(h.at(secs(310)).timer(), Action::Close(CloseReason::Idle));
}

#[test]
fn deadlines_off_means_none() {
    let cfg = StreamConfig { timeouts: Timeouts::NONE, ..StreamConfig::http() };
    let mut h = Harness::<Http1>::new(cfg);
    h.data(b"GET / HT");
    assert_eq!(h.deadline(), None);
    assert_eq!(h.at(secs(100_000)).timer(), Action::Continue);
}

#[test]
fn draining_answers_with_close_and_gives_quiet_connections_a_grace() {
    let mut h = http();
    h.at(secs(1)).data(GET);
    h.write(usize::MAX);
    h.draining = true;
    assert_eq!(h.deadline(), Some(secs(2)), "served and quiet: closes after the grace");
    // The next request was already on its way: it is answered, with Connection: close.
    h.at(Duration::from_millis(1500)).data(GET);
    assert!(String::from_utf8_lossy(h.conn.output()).contains("Connection: close\r\n"));
    h.write(usize::MAX);
    assert!(h.shut);

    let mut quiet = http();
    quiet.at(secs(1)).data(GET);
    quiet.write(usize::MAX);
    quiet.draining = true;
    assert_eq!(quiet.at(secs(2)).timer(), Action::Close(CloseReason::Normal));

    // Accepted, nothing sent yet: the head deadline, not the grace.
    let mut fresh = http();
    fresh.draining = true;
    assert_eq!(fresh.deadline(), Some(secs(10)));
}

#[test]
fn completion_transports_hold_the_output_until_the_send_completes() {
    let mut h = echo();
    h.data(b"abcdef");
    let buf = h.conn.take_output().expect("output to send");
    assert_eq!(buf.pending(), b"abcdef");
    h.data(b"gh");
    assert!(h.conn.take_output().is_none(), "one send in flight");
    assert_eq!(h.conn.pending(), 8);
    let cfg = h.cfg;
    let env = Env { now: h.now, date: DATE, draining: false, cfg: &cfg };
    let mut st = Stats::default();
    let rest = h.conn.on_send_done(buf, 4, &env, &mut st).expect("short send: the rest goes first");
    assert_eq!(rest.pending(), b"ef");
    assert_eq!(h.conn.pending(), 4);
    assert!(h.conn.on_send_done(rest, 2, &env, &mut st).is_none());
    assert_eq!(h.conn.take_output().map(|b| b.pending().to_vec()), Some(b"gh".to_vec()));
    assert_eq!(st.bytes_out, 6);

    let mut h = echo();
    h.data(b"abc");
    let buf = h.conn.take_output().unwrap();
    let cfg = h.cfg;
    let env = Env { now: h.now, date: DATE, draining: false, cfg: &cfg };
    assert!(h.conn.on_send_done(buf, 0, &env, &mut Stats::default()).is_none());
    assert_eq!(h.settle(), Action::Close(CloseReason::Error), "a send that took nothing is an error");
}

#[test]
fn errors_close_at_once_except_while_lingering() {
    let mut h = echo();
    h.data(b"abc");
    h.conn.on_error();
    assert!(!h.conn.wants_read());
    assert_eq!(h.settle(), Action::Close(CloseReason::Error));
    assert!(h.conn.is_closed());
    assert_eq!(h.data(b"late"), Action::Continue, "events after the close are ignored");
    assert_eq!(h.st.closed_total(), 1);

    let mut h = http();
    h.data(b"GET / HTTP/1.0\r\n\r\n");
    h.write(usize::MAX);
    h.conn.on_error();
    assert_eq!(h.settle(), Action::Close(CloseReason::Normal), "a reset while lingering ends it normally");
}

/// HTTP through the lifecycle answers the same bytes however the input is split.
#[test]
fn http_output_is_independent_of_the_split() {
    let stream: Vec<u8> = [
        GET,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    let run = |cuts: &[usize]| {
        let mut h = http();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
            h.data(&stream[last..c]);
            last = c;
        }
        h.write(usize::MAX);
        (h.wire, h.shut, h.st.requests)
    };
    let whole = run(&[]);
    assert!(whole.1, "the last request closes");
    assert_eq!(whole.2, 4);
    for i in 1..stream.len() {
        assert_eq!(run(&[i]), whole, "split at {i}");
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Data(Vec<u8>),
    Write(usize),
    Eof,
    Tick(u64),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 1..300).prop_map(Ev::Data),
        4 => (0usize..400).prop_map(Ev::Write),
        1 => Just(Ev::Eof),
        1 => (0u64..400).prop_map(Ev::Tick),
    ]
}

proptest! {
    /// Echo under random events and time: what reaches the wire is a prefix of what was sent,
    /// memory stays bounded by the watermark plus one read, and once the peer finishes and the
    /// output drains the connection closes (normally, or by a deadline that was due).
    #[test]
    fn echo_random_events(events in proptest::collection::vec(ev(), 0..150)) {
        let mut cfg = StreamConfig::echo();
        cfg.watermarks = Watermarks { high: 512, low: 128 };
        let mut h = Harness::<Echo>::new(cfg);
        let mut sent = Vec::new();
        let mut t = 0u64;
        let mut closed = None;
        for e in events {
            let a = match e {
                Ev::Data(d) => {
                    if !h.conn.wants_read() { continue; }
                    sent.extend_from_slice(&d);
                    h.data(&d)
                }
                Ev::Write(n) => h.write(n),
                Ev::Eof => { if !h.conn.wants_read() { continue; } h.eof() }
                Ev::Tick(s) => { t += s; h.at(secs(t)).timer() }
            };
            prop_assert!(h.conn.pending() <= 512 + 300);
            if let Action::Close(r) = a { closed = Some(r); break; }
        }
        prop_assert!(sent.starts_with(&h.wire));
        if closed.is_none() {
            // The peer finishes and reads everything.
            if h.conn.wants_read() { h.eof(); }
            for _ in 0..100 {
                if let Action::Close(r) = h.write(usize::MAX) { closed = Some(r); break; }
                if h.conn.is_closed() { break; }
                if h.conn.wants_read() { h.eof(); }
            }
            if closed.is_none() && !h.conn.is_closed() {
                t += 10_000;
                if let Action::Close(r) = h.at(secs(t)).timer() { closed = Some(r); }
            }
            prop_assert!(closed.is_some() || h.conn.is_closed(), "the connection must end");
        }
        prop_assert_eq!(h.st.closed_total(), 1);
        if closed == Some(CloseReason::Normal) {
            prop_assert_eq!(&h.wire, &sent, "a normal close delivered every byte");
        }
    }
}
