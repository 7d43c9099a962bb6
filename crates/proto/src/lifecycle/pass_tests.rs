//! Completion transports that echo straight out of their receive buffer: the lifecycle counts
//! the passed-through bytes as received and pending, and keeps every rule (order, backpressure,
//! send deadline, closing) as if they had gone through the protocol's output.

use std::time::{Duration, Instant};

use super::stream::{Action, Env, StreamConfig, StreamConn};
use super::{CloseReason, Stats};
use crate::buf::Watermarks;
use crate::echo::Echo;
use crate::http::Http1;

const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

fn env(now: Instant, cfg: &StreamConfig) -> Env<'_> {
    Env { now, date: DATE, draining: false, cfg }
}

#[test]
fn passed_bytes_are_pending_until_sent_and_later_input_queues_behind_them() {
    let cfg = StreamConfig::echo();
    let t0 = Instant::now();
    let e = env(t0, &cfg);
    let mut st = Stats::default();
    let mut c: StreamConn<Echo> = StreamConn::new(t0, &cfg);
    assert!(c.may_pass_through());
    c.on_data_passed(10, &e, &mut st);
    assert_eq!((c.pending(), st.bytes_in, st.requests), (10, 10, 1));
    assert!(!c.may_pass_through(), "something is pending: later bytes must queue behind it");
    c.on_data(b"later", &e, &mut st);
    assert!(c.take_output().is_none(), "the passed bytes go first");
    assert!(c.on_passed_sent(4, 6, &e, &mut st), "short send: send the rest again");
    assert_eq!((c.pending(), st.bytes_out), (11, 4));
    assert!(!c.on_passed_sent(6, 0, &e, &mut st));
    let out = c.take_output().expect("now the queued bytes");
    assert_eq!(out.pending(), b"later");
    assert_eq!(c.next_action(&e, &mut st), Action::Continue);
    assert_eq!((st.bytes_in, st.bytes_out, st.requests), (15, 10, 2));
}

#[test]
fn only_a_pass_through_protocol_with_nothing_pending_passes() {
    let cfg = StreamConfig::http();
    let t0 = Instant::now();
    let mut st = Stats::default();
    let mut h: StreamConn<Http1> = StreamConn::new(t0, &cfg);
    assert!(!h.may_pass_through(), "HTTP answers, it does not echo");
    h.on_data_passed(5, &env(t0, &cfg), &mut st);
    assert_eq!((h.pending(), st.bytes_in), (0, 0), "refused: nothing counted");
    let cfg = StreamConfig::echo();
    let mut c: StreamConn<Echo> = StreamConn::new(t0, &cfg);
    c.on_data(b"queued", &env(t0, &cfg), &mut st);
    assert!(!c.may_pass_through(), "output queued ahead");
    c.on_eof(&env(t0, &cfg), &mut st);
    let _ = c.take_output();
    assert!(!c.may_pass_through(), "the peer finished");
}

#[test]
fn passed_bytes_count_for_backpressure() {
    let mut cfg = StreamConfig::echo();
    cfg.watermarks = Watermarks { high: 100, low: 20 };
    let t0 = Instant::now();
    let e = env(t0, &cfg);
    let mut st = Stats::default();
    let mut c: StreamConn<Echo> = StreamConn::new(t0, &cfg);
    assert_eq!(c.read_headroom(&cfg), Some(101));
    c.on_data_passed(150, &e, &mut st);
    assert!(!c.wants_read(), "above the high watermark: paused");
    assert_eq!(st.backpressure_pauses, 1);
    assert!(c.on_passed_sent(100, 50, &e, &mut st));
    assert!(!c.wants_read(), "50 pending, above the low watermark");
    assert!(!c.on_passed_sent(50, 0, &e, &mut st));
    assert!(c.wants_read(), "drained: reading resumes");
}

#[test]
fn passed_bytes_the_peer_does_not_take_meet_the_send_deadline() {
    let cfg = StreamConfig::echo();
    let send = cfg.timeouts.send.expect("echo has a send deadline");
    let t0 = Instant::now();
    let mut st = Stats::default();
    let mut c: StreamConn<Echo> = StreamConn::new(t0, &cfg);
    c.on_data_passed(64, &env(t0, &cfg), &mut st);
    assert_eq!(c.deadline(&env(t0, &cfg)), Some(t0 + send));
    let later = t0 + send + Duration::from_millis(1);
    c.on_timer(&env(later, &cfg), &mut st);
    assert_eq!(c.next_action(&env(later, &cfg), &mut st), Action::Close(CloseReason::SendTimeout));
    assert!(!c.on_passed_sent(64, 0, &env(later, &cfg), &mut st), "a late completion after the close");
    assert_eq!(c.pending(), 0);
}

#[test]
fn eof_waits_for_passed_bytes_then_closes_normally() {
    let cfg = StreamConfig::echo();
    let t0 = Instant::now();
    let e = env(t0, &cfg);
    let mut st = Stats::default();
    let mut c: StreamConn<Echo> = StreamConn::new(t0, &cfg);
    c.on_data_passed(8, &e, &mut st);
    c.on_eof(&e, &mut st);
    assert_eq!(c.next_action(&e, &mut st), Action::Continue, "8 bytes still to send");
    assert!(!c.on_passed_sent(8, 0, &e, &mut st));
    assert_eq!(c.next_action(&e, &mut st), Action::Close(CloseReason::Normal));
    assert_eq!((st.bytes_in, st.bytes_out), (8, 8));
}

#[test]
fn a_send_that_takes_nothing_is_an_error() {
    let cfg = StreamConfig::echo();
    let t0 = Instant::now();
    let e = env(t0, &cfg);
    let mut st = Stats::default();
    let mut c: StreamConn<Echo> = StreamConn::new(t0, &cfg);
    c.on_data_passed(8, &e, &mut st);
    assert!(!c.on_passed_sent(0, 8, &e, &mut st), "no spinning on a send that takes nothing");
    assert_eq!(c.next_action(&e, &mut st), Action::Close(CloseReason::Error));
}
