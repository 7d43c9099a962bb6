//! Open loop: the schedule is kept, and a server stall shows in the corrected latency only.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{http_server, ok_response};
use ringpoll_load::{run_load, LoadConfig};

#[test]
fn rate_2000_for_3s_sends_6000_and_a_stall_shows_only_when_corrected() {
    // Once, one second into the run, every connection stalls for 500 ms.
    let start = Instant::now();
    let stall: Mutex<Option<Instant>> = Mutex::new(None);
    let srv = http_server(move |_| {
        let now = Instant::now();
        let mut s = stall.lock().unwrap();
        if s.is_none() && now.duration_since(start) > Duration::from_secs(1) {
            *s = Some(now + Duration::from_millis(500));
        }
        let wait = s.map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        (ok_response(), wait)
    });
    let mut c = LoadConfig::new(srv.url("/"));
    c.duration = Duration::from_secs(3);
    c.connections = 4;
    c.rate = Some(2000.0);
    let r = run_load(c).unwrap();
    eprintln!("{}", r.summary());
    assert!((5700..=6300).contains(&r.requests), "requests {} (want 6000 ± 5%)", r.requests);
    assert_eq!(r.errors.total(), 0, "{r:#?}");
    assert!(r.rate_shortfall_pct.is_some_and(|s| s < 5.0), "{r:#?}");
    let (c999, u999) = (r.latency_us.unwrap().p999, r.latency_uncorrected_us.unwrap().p999);
    assert!(c999 >= 400_000, "corrected p99.9 {c999} us should reflect the 500 ms stall");
    assert!(u999 < c999 / 2, "uncorrected p99.9 {u999} us should not (corrected {c999})");
    assert!(r.latency_uncorrected_us.unwrap().max >= 400_000, "the stalled requests themselves are slow");
}
