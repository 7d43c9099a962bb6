//! Active health checks of upstream groups, and the start-up probe.
//!
//! One thread per process connects to every checked upstream each `interval` (a TCP connect
//! within `timeout`, as HAProxy's `check` without a protocol). `fall` consecutive failures
//! mark an upstream down, `rise` consecutive successes bring it back. The state goes to the
//! group's [`HealthBoard`], which workers read with a relaxed atomic load: no lock and no
//! message on their hot path.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringpoll_proto::upstream::HealthBoard;
use tracing::{info, warn};

/// Active checking of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveCheck {
    pub interval: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Connect timeout of one check.
    pub timeout: Duration,
}

/// What the checker needs about one group.
#[derive(Clone, Debug)]
pub struct CheckedGroup {
    pub name: String,
    pub upstreams: Vec<SocketAddr>,
    pub check: ActiveCheck,
    pub board: Arc<HealthBoard>,
}

/// Rise/fall bookkeeping of one upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Streak {
    ok: u32,
    failed: u32,
}

impl Streak {
    /// Record one check; returns the new state if it changes.
    fn record(&mut self, ok: bool, up: bool, check: &ActiveCheck) -> Option<bool> {
        if ok {
            self.ok = self.ok.saturating_add(1);
            self.failed = 0;
            (!up && self.ok >= check.rise.max(1)).then_some(true)
        } else {
            self.failed = self.failed.saturating_add(1);
            self.ok = 0;
            (up && self.failed >= check.fall.max(1)).then_some(false)
        }
    }
}

fn answers(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// A group as the start-up probe sees it: its name, its upstreams, and its board when active
/// checks will keep it up to date.
pub type Probed = (String, Vec<SocketAddr>, Option<Arc<HealthBoard>>);

/// At start: connect once to every upstream of each group and warn about a group none of whose
/// upstreams answers (the server starts anyway: they may come up later). Groups with active
/// checks start with the probe's verdict on their board.
pub fn startup_probe(groups: &[Probed], timeout: Duration) {
    for (name, ups, board) in groups {
        let results: Vec<bool> = ups.iter().map(|&a| answers(a, timeout)).collect();
        if !results.iter().any(|&ok| ok) {
            let list: Vec<String> = ups.iter().map(ToString::to_string).collect();
            warn!(
                "upstream group {name}: no upstream answers ({}); clients will be closed until one does",
                list.join(", ")
            );
        }
        if let Some(board) = board {
            for (i, ok) in results.iter().enumerate() {
                board.set(i, *ok);
            }
        }
    }
}

/// The running checker; stops (promptly) when dropped.
pub struct Checker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// Start checking `groups` (nothing to start if empty).
pub fn spawn(groups: Vec<CheckedGroup>) -> std::io::Result<Option<Checker>> {
    if groups.is_empty() {
        return Ok(None);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::Builder::new().name("ringpoll-health".into()).spawn(move || run(&groups, &flag))?;
    Ok(Some(Checker { stop, handle: Some(handle) }))
}

fn run(groups: &[CheckedGroup], stop: &AtomicBool) {
    let mut streaks: Vec<Vec<Streak>> = groups.iter().map(|g| vec![Streak::default(); g.upstreams.len()]).collect();
    let mut next: Vec<Instant> = groups.iter().map(|g| Instant::now() + g.check.interval).collect();
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        for (gi, g) in groups.iter().enumerate() {
            if now < next[gi] {
                continue;
            }
            next[gi] = now + g.check.interval;
            for (i, &addr) in g.upstreams.iter().enumerate() {
                let ok = answers(addr, g.check.timeout);
                let up = g.board.is_up(i);
                if let Some(new) = streaks[gi][i].record(ok, up, &g.check) {
                    g.board.set(i, new);
                    if new {
                        info!("upstream {addr} (group {}) is up again ({} checks passed)", g.name, g.check.rise);
                    } else {
                        warn!("upstream {addr} (group {}) is down ({} checks failed)", g.name, g.check.fall);
                    }
                }
            }
        }
        let wake = next.iter().min().copied().unwrap_or(now + Duration::from_secs(1));
        std::thread::park_timeout(wake.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const CHECK: ActiveCheck =
        ActiveCheck { interval: Duration::from_millis(20), rise: 2, fall: 3, timeout: Duration::from_millis(500) };

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut s = Streak::default();
        assert_eq!(s.record(false, true, &CHECK), None);
        assert_eq!(s.record(false, true, &CHECK), None);
        assert_eq!(s.record(true, true, &CHECK), None, "a success resets the failures");
        assert_eq!(s.record(false, true, &CHECK), None);
        assert_eq!(s.record(false, true, &CHECK), None);
        assert_eq!(s.record(false, true, &CHECK), Some(false), "third consecutive failure");
        assert_eq!(s.record(true, false, &CHECK), None);
        assert_eq!(s.record(true, false, &CHECK), Some(true), "second consecutive success");
    }

    #[test]
    fn the_checker_follows_an_upstream_going_and_coming_back() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let board = Arc::new(HealthBoard::new(1));
        let group = CheckedGroup { name: "t".into(), upstreams: vec![addr], check: CHECK, board: board.clone() };
        let checker = spawn(vec![group]).unwrap().unwrap();
        let wait = |want: bool| {
            let end = Instant::now() + Duration::from_secs(20);
            while board.is_up(0) != want && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
            board.is_up(0) == want
        };
        assert!(wait(true));
        drop(l); // connects are refused from now on
        assert!(wait(false), "marked down after `fall` failures");
        let l2 = TcpListener::bind(addr);
        if let Ok(_l2) = l2 {
            assert!(wait(true), "back after `rise` successes");
        }
        drop(checker);
    }
}
