//! Interleaved blocks: the servers of a workload all run at once, each driven by its own load
//! generator, and the load generators take turns: one runs while every other is paused
//! (SIGSTOP), for a slot of a fraction of a second, then the next. Each slot's cost is read on
//! the server side: its CPU time over the slot and its own request counter.
//!
//! Why: on a shared host the cost of one request drifts on every time scale, and the drift
//! between two measurements grows with the time between them. Measured on this project's
//! 2-vCPU VM (docs/BENCHMARKS.md, "How reproducible the verdicts are"), two adjacent windows
//! of one running server differ by about 3% whether they are 0.2 s or 4 s long, so the
//! shorter the slot, the more paired slots per minute at the same noise; and a run that
//! restarts the server and its load every time (1.75 s per run, 1 s of it measured) adds
//! more noise of its own (about 6% between a run and the anchor runs beside it). A slot
//! here needs no start, no connection set-up and no warm-up, so a round of eleven slots
//! takes about six seconds instead of twenty.
//!
//! Every round gets its own processes ([`BLOCK_ROUNDS`]), started in a shuffled order, so that
//! what one process's start-up leaves behind (its memory layout, where its connections
//! landed) varies from round to round, as the rounds' interval assumes, rather than weighing
//! on every round alike. Starting them (all at once, each load generator running until its
//! server has answered) takes about half a second, a round of eleven slots about 6.5 s.
//!
//! A slot measures cost, not latency: while paused, a load generator's requests in flight
//! wait, so its latencies mean nothing. The comparison's latency figures come from its
//! ordinary rounds ([`crate::rounds`] measures the first round of an interleaved workload the
//! ordinary way).

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cpustat;
use crate::matrix::{LoadGen, Net, Proto, Server, Workload};
use crate::measure::{self, Setup};
use crate::procs::{self, Proc};
use crate::results::Run;

/// Rounds measured by one set of server processes before they are restarted: every round
/// its own processes. Two processes of one server differ by up to about 1% in cost per
/// request (their memory layout, where their connections landed); with one set kept for
/// several rounds that difference weighed on all of them alike, and the rounds' interval,
/// which counts every round as an independent draw, was too narrow for it: in a null test
/// (epoll against two more epoll servers), 3 of 12 intervals excluded 1.0 with ten rounds
/// per set (docs/BENCHMARKS.md, "How reproducible the verdicts are").
pub const BLOCK_ROUNDS: usize = 1;

/// Time after resuming a load generator before the slot's window opens (the requests held
/// while it was paused complete, and it settles to its own pace).
pub const SETTLE: Duration = Duration::from_millis(100);

/// The measured window of one slot.
pub const SLOT: Duration = Duration::from_millis(400);

/// How long a new block's servers may take to answer their load generators' first requests.
const WARM_LIMIT: Duration = Duration::from_secs(10);

/// Whether a workload can be measured in interleaved blocks with these servers: closed-loop
/// echo or HTTP over loopback, without idle connections, every server one of ringpoll's (its
/// own request counter is read), every load generator ringpoll's.
#[must_use]
pub fn eligible(w: &Workload, servers: &[(&Server, LoadGen)]) -> bool {
    matches!(w.proto, Proto::Echo | Proto::Http)
        && w.net == Net::Loopback
        && w.rate.is_none()
        && w.idle == 0
        && !servers.is_empty()
        && servers.iter().all(|(s, g)| {
            matches!(s, Server::Ringpoll { .. } | Server::RingpollVariant { .. }) && *g == LoadGen::Ringpoll
        })
}

/// One server of a block and the load generator driving it.
struct Member {
    server: Proc,
    load: Child,
    /// The server's CPU core (for the core's busy time).
    core: Option<usize>,
}

impl Member {
    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.load.id()).unwrap_or(i32::MAX))
    }

    fn signal(&self, sig: Signal) -> Result<()> {
        kill(self.pid(), sig).with_context(|| format!("{sig} to the load generator of {}", self.server.name))
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; continuing it first only means that nothing
        // ever sees it stopped on its way out.
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.load.kill();
        let _ = self.load.wait();
        // `server` (a Proc) terminates its process when dropped.
    }
}

/// The servers of one workload, running together, with their paused load generators.
pub struct Block {
    members: Vec<Member>,
    w: Workload,
    /// Rounds measured so far by this block.
    pub rounds: usize,
}

/// What is read at each end of a slot.
struct Reading {
    at: Instant,
    cpu: f64,
    user: f64,
    sys: f64,
    /// Requests answered so far (echo: bytes received / message size).
    requests: f64,
    syscalls: Option<u64>,
    core: Option<cpustat::CoreTimes>,
    /// The core's idle time (cpuidle residency), when the kernel reports it.
    idle: Option<f64>,
}

impl Block {
    /// Start every server of `servers` (in the order `order` gives, a permutation of their
    /// indices, so that none is always the first) and its load generator, let them all run
    /// until each has answered (so that its connections are up), and pause each.
    pub fn start(setup: &Setup, w: &Workload, servers: &[&Server], order: &[usize]) -> Result<Self> {
        let mut started: Vec<Option<Member>> = servers.iter().map(|_| None).collect();
        for &k in order {
            let server = measure::start_server(setup, servers[k], w, None)?;
            if server.metrics.is_none() {
                bail!("{} has no metrics endpoint to count its requests", server.name);
            }
            // The load runs until the block ends (it is killed then): a day is "until killed".
            let mut cmd = measure::load_command(setup, w, &server, Duration::from_secs(86_400), Duration::ZERO);
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            let load = cmd.spawn().with_context(|| format!("starting the load generator of {}", server.name))?;
            started[k] = Some(Member { server, load, core: setup.server_cpu });
        }
        let members: Vec<Member> = started.into_iter().collect::<Option<_>>().context("order is not a permutation")?;
        let mut block = Self { members, w: w.clone(), rounds: 0 };
        let n = block.members.len();
        let first: Vec<f64> = (0..n).map(|k| block.read(k).map(|r| r.requests)).collect::<Result<_>>()?;
        let deadline = Instant::now() + WARM_LIMIT;
        let mut waiting: Vec<usize> = (0..n).collect();
        std::thread::sleep(Duration::from_millis(200));
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for k in waiting {
                if block.read(k)?.requests > first[k] {
                    block.members[k].signal(Signal::SIGSTOP)?;
                } else {
                    still.push(k);
                }
            }
            if let Some(&k) = still.first().filter(|_| Instant::now() >= deadline) {
                bail!("{} answered no request in {} s", block.members[k].server.name, WARM_LIMIT.as_secs());
            }
            waiting = still;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(block)
    }

    /// The server and load of member `k` are still running.
    fn check(&mut self, k: usize) -> Result<()> {
        let m = &mut self.members[k];
        if let Some(st) = m.server.child.try_wait().context("waiting for the server")? {
            bail!("{} exited ({st})", m.server.name);
        }
        if let Some(st) = m.load.try_wait().context("waiting for the load generator")? {
            bail!("the load generator of {} exited ({st})", m.server.name);
        }
        Ok(())
    }

    fn read(&mut self, k: usize) -> Result<Reading> {
        self.check(k)?;
        let m = &self.members[k];
        let pid = m.server.child.id();
        let metrics = m.server.metrics.context("no metrics endpoint")?;
        let requests = match self.w.proto {
            Proto::Http => procs::scrape_counter(metrics, "requests_total")? as f64,
            _ => procs::scrape_counter(metrics, "received_bytes_total")? as f64 / self.w.size.max(1) as f64,
        };
        let at = Instant::now();
        let idle = m.core.and_then(cpustat::idle_residency);
        let cpu = procs::cpu_total(pid)?;
        let (user, sys) = procs::cpu_times(pid)?;
        let core = m.core.map(cpustat::read).transpose()?;
        let syscalls = procs::scrape_counter(metrics, "syscalls_total").ok();
        Ok(Reading { at, cpu, user, sys, requests, syscalls, core, idle })
    }

    /// Measure member `k` for one slot: resume its load generator, let it settle, read the
    /// server over [`SLOT`], pause it again.
    pub fn slot(&mut self, k: usize) -> Result<Run> {
        self.members[k].signal(Signal::SIGCONT)?;
        let measured = (|| {
            std::thread::sleep(SETTLE);
            let a = self.read(k)?;
            std::thread::sleep(SLOT);
            let b = self.read(k)?;
            Ok::<_, anyhow::Error>((a, b))
        })();
        self.members[k].signal(Signal::SIGSTOP)?;
        let (a, b) = measured?;
        let name = &self.members[k].server.name;
        let requests = b.requests - a.requests;
        if requests < 1.0 {
            bail!("{name} answered no request in a {} ms slot", SLOT.as_millis());
        }
        let window = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let cpu = (b.cpu - a.cpu).max(0.0);
        let ticks = (b.user - a.user) + (b.sys - a.sys);
        // The core's busy time: the window less its idle time where cpuidle says (to the
        // microsecond) how long that was, else /proc/stat's 10 ms ticks (±2.5% of a slot).
        let core = match (a.core, b.core, a.idle, b.idle) {
            (Some(x), Some(y), Some(i), Some(j)) if j >= i => {
                let steal = (y.steal - x.steal).max(0.0);
                Some(((window - (j - i) - steal).max(0.0), steal, window))
            }
            (Some(x), Some(y), ..) if y.total > x.total => {
                Some((y.busy - x.busy, y.steal - x.steal, y.total - x.total))
            }
            _ => None,
        };
        let rss_kib = procs::rss_kib(self.members[k].server.child.id()).unwrap_or(0);
        let user_share = measure::user_share(a.user, b.user, ticks);
        Ok(Run {
            requests: requests.round() as u64,
            rps: requests / window,
            rss_kib,
            interleaved: true,
            ..measure::costs(requests, window, cpu, user_share, measure::delta(a.syscalls, b.syscalls), core)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::main_workloads;

    #[test]
    fn only_closed_loop_echo_and_http_over_loopback_against_ringpoll_alone_are_interleaved() {
        let epoll = Server::Ringpoll { backend: "epoll".into() };
        let variant =
            Server::RingpollVariant { name: "b".into(), backend: "uring".into(), args: vec!["--x".into()], bin: None };
        let w = |n: &str| main_workloads().into_iter().find(|w| w.name == n).unwrap();
        let own = [(&epoll, LoadGen::Ringpoll), (&variant, LoadGen::Ringpoll)];
        assert!(eligible(&w("echo-64B-c512"), &own));
        assert!(eligible(&w("echo-16KiB-c64"), &own));
        assert!(eligible(&w("http-pipe16-c64"), &own));
        assert!(!eligible(&w("proxy-64B-c64"), &own), "a proxy counts no requests of its own");
        assert!(!eligible(&w("echo-64B-c512").over_veth(), &own));
        assert!(!eligible(&Workload { rate: Some(1000), ..w("http-c64") }, &own), "open loop");
        assert!(!eligible(&Workload { idle: 100, ..w("echo-64B-c64") }, &own));
        assert!(!eligible(&w("http-c64"), &[(&epoll, LoadGen::Ringpoll), (&Server::Nginx, LoadGen::Ringpoll)]));
        assert!(!eligible(&w("http-c64"), &[(&epoll, LoadGen::Wrk)]));
        assert!(!eligible(&w("http-c64"), &[]));
    }
}
