//! Upstream health end to end, on every backend and relay variant: an upstream killed under
//! load costs no client connection (passive health and the retry), comes back after the active
//! check's rise count; with no usable upstream clients are closed at once, counted and logged at
//! most once per second, and the start warns.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::proxy::{closed_port, expect_closed, metrics_addr, proxy_to, round_trip, wait_metrics};
use common::upstream::TestUpstream;
use common::*;

on_every_proxy_variant!(
    a_killed_upstream_fails_no_new_client_and_returns_after_the_rise_count,
    a_connect_that_times_out_is_retried_on_another_upstream,
    no_usable_upstream_closes_clients_at_once_counted_and_logged_once_a_second,
);

/// One client connection of the load: when it started, and how it ended.
type Outcome = (Instant, Result<u8, String>);

/// Client threads doing connect / echo / close in a loop until stopped (or a bound).
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<Outcome>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(proxy: SocketAddr, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, done) = (stop.clone(), done.clone());
                std::thread::spawn(move || {
                    let end = Instant::now() + Duration::from_secs(90);
                    for _ in 0..50_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > end {
                            break;
                        }
                        let started = Instant::now();
                        let r = round_trip(proxy, None, b"under load");
                        done.lock().unwrap().push((started, r));
                    }
                })
            })
            .collect();
        Self { stop, done, threads }
    }

    /// Connections finished that started after `t`.
    fn since(&self, t: Instant) -> usize {
        self.done.lock().unwrap().iter().filter(|(s, _)| *s > t).count()
    }

    fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let v = self.done.lock().unwrap().clone();
        v
    }
}

fn a_killed_upstream_fails_no_new_client_and_returns_after_the_rise_count(v: &str) {
    let a = TestUpstream::start(b'A');
    let mut b = TestUpstream::start(b'B');
    let passive = ["--max-fails", "1", "--fail-timeout", "2s", "--metrics", "127.0.0.1:0"];
    let mut active = passive.to_vec();
    active.extend(["--health-interval", "200ms", "--health-rise", "2"]);
    // Two proxies over the same upstreams, each under load: passive health alone, and with
    // active checks.
    let (pp, pa) = (proxy_to(v, &[a.addr, b.addr], &passive), proxy_to(v, &[a.addr, b.addr], &active));
    let (mp, ma) = (metrics_addr(&pp), metrics_addr(&pa));
    let (lp, la) = (Load::start(pp.addr, 1), Load::start(pa.addr, 1));
    assert!(eventually(IO_TIMEOUT, || a.served() >= 40 && b.served() >= 40), "{v}: both upstreams serve");

    b.kill();
    let killed = Instant::now();
    let b_addr = b.addr;
    // Passive alone: the first client to meet the dead B marks it down for the window; after
    // the window another one tries it, fails over again, and marks it down again.
    wait_metrics(mp, "B tried again after the passive window", |s| s.upstream("failures_total", b_addr) >= 2.0);
    // Active: the checks take B down (fall 3); it stays down past any passive window.
    wait_metrics(ma, "B down (active checks)", |s| s.upstream("up", b_addr) == 0.0);
    let (np, na) = (lp.since(killed), la.since(killed));
    assert!(
        eventually(Duration::from_secs(60), || lp.since(killed) >= np + 100 && la.since(killed) >= na + 100),
        "{v}: the load stalled after the kill"
    );
    let passive_outcomes = lp.stop();
    let served_while_down = b.served();

    b.restart();
    assert!(eventually(IO_TIMEOUT, || b.served() >= served_while_down + 10), "{v}: traffic never came back to B");
    let active_outcomes = la.stop();
    let checks_first = b.probes_before_first_data();
    assert!(checks_first >= Some(2), "{v}: B got clients after {checks_first:?} health checks (rise is 2)");
    wait_metrics(ma, "B up again", |s| s.upstream("up", b_addr) == 1.0);

    for (what, outcomes) in [("passive", passive_outcomes), ("active", active_outcomes)] {
        let failed: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
        let after: Vec<_> = failed.iter().filter(|(s, _)| *s > killed).collect();
        eprintln!(
            "{v} {what}: {} client connections, {} failed (in flight when B died), {} started after the kill",
            outcomes.len(),
            failed.len(),
            after.len()
        );
        assert!(after.is_empty(), "{v} {what}: connections started after the kill failed: {after:?}");
    }
}

fn no_usable_upstream_closes_clients_at_once_counted_and_logged_once_a_second(v: &str) {
    const CLIENTS: usize = 40;
    // Two upstreams nobody listens on: refused connects (one retry each), then, with active
    // checks, upstreams known down (no connect at all). A connect timeout far beyond the
    // client's read timeout: only "no upstream" can close the clients in time.
    for checks in [&[][..], &["--health-interval", "200ms"][..]] {
        let mut extra = vec!["--connect-timeout", "300s", "--metrics", "127.0.0.1:0"];
        extra.extend(checks);
        let mut px = proxy_to(v, &[closed_port(), closed_port()], &extra);
        let m = metrics_addr(&px);
        px.collect_stderr();
        let t0 = Instant::now();
        for _ in 0..CLIENTS {
            expect_closed(px.addr, b"anyone?", v);
        }
        let elapsed = t0.elapsed();
        wait_metrics(m, "the closes counted", |s| s.closed("upstream") == CLIENTS as f64);
        let (code, err) = px.terminate(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{v}: {err}");
        assert!(err.contains("no upstream answers"), "{v} {checks:?}: no start-up warning: {err}");
        let lines = err.lines().filter(|l| l.contains("no usable upstream")).count();
        let most = elapsed.as_secs() as usize + 1;
        assert!((1..=most).contains(&lines), "{v} {checks:?}: {lines} lines in {elapsed:?} about it: {err}");
    }
}

/// An address whose connects hang (a listener with a full accept queue drops SYNs), and what
/// keeps it so.
fn black_hole() -> (SocketAddr, Vec<socket2::Socket>) {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let fill = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    fill.connect_timeout(&addr.into(), IO_TIMEOUT).unwrap();
    (addr, vec![l, fill])
}

fn a_connect_that_times_out_is_retried_on_another_upstream(v: &str) {
    let a = TestUpstream::start(b'A');
    let (hole, _keep) = black_hole();
    // Passive health off: every other connection meets the hole, times out, and is retried.
    let extra = ["--connect-timeout", "300ms", "--max-fails", "0", "--metrics", "127.0.0.1:0"];
    let px = proxy_to(v, &[hole, a.addr], &extra);
    let m = metrics_addr(&px);
    for i in 0..6 {
        assert_eq!(round_trip(px.addr, None, b"t"), Ok(b'A'), "{v}: connection {i}");
    }
    wait_metrics(m, "the timed-out connects", |s| s.upstream("failures_total", hole) == 3.0);
    wait_metrics(m, "no pair left", |s| s.sum("proxy_pairs_open", &[]) == 0.0);
}
