//! What a comparison produces, as written to results.json after every measured run: the runs
//! of each cell (tagged with their round), the aggregates, the verdicts, sweep points and
//! knees, and enough of the invocation to resume it.

use serde::{Deserialize, Serialize};

use ringpoll_load::histogram;

use crate::matrix::{LoadGen, Server, Workload};
use crate::stats::Interval;

/// One measured run of one cell.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Run {
    /// The paired round it belongs to (0-based); sweep points use 0.
    #[serde(default)]
    pub round: usize,
    /// Its position in the round when the round was anchored (every other run is the
    /// anchor's, see [`crate::plan::sequence`]); `None` in rounds without an anchor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<usize>,
    pub requests: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub errors: u64,
    /// Server process CPU (user + system) per request, µs.
    pub cpu_us_per_req: f64,
    /// Busy time of the server's pinned core (user+nice+system+irq+softirq from /proc/stat)
    /// per request, µs; absent when the server is not pinned.
    #[serde(default)]
    pub core_us_per_req: Option<f64>,
    /// Share of the window the server's core was busy (1.0 = all of it).
    #[serde(default)]
    pub core_busy: Option<f64>,
    /// Share of the window the hypervisor stole from the server's core.
    #[serde(default)]
    pub core_steal: Option<f64>,
    /// Share of the server's CPU time spent in user space.
    pub user_share: f64,
    /// Server syscalls per request (ringpoll's own counter; absent for peers).
    pub syscalls_per_req: Option<f64>,
    /// Server CPU utilisation over the window (1.0 = one core busy).
    pub server_util: f64,
    /// Server resident set size at the end of the window, KiB.
    #[serde(default)]
    pub rss_kib: u64,
    pub window_s: f64,
    /// Open loop: the rate asked of the load generator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_rate: Option<f64>,
    /// The load generator's latency histogram (µs; V2 + deflate, base64); wrk gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
    /// Measured in a slot of an interleaved block ([`crate::interleave`]): requests counted
    /// by the server, no latency figures.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interleaved: bool,
}

/// All runs of one (workload, server, load generator) combination.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cell {
    pub workload: Workload,
    pub server: Server,
    /// Row label: the server's name, plus the load generator when it is not ringpoll's.
    pub label: String,
    pub peer: bool,
    pub loadgen: LoadGen,
    pub runs: Vec<Run>,
    /// Per-field median over `runs`, except the latency percentiles, which come from the
    /// runs' histograms merged (when the load generator gave them).
    pub median: Run,
    /// The merged latency histogram of every run (µs; V2 + deflate, base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<String>,
    /// (max - min) / median of requests per second over the runs.
    pub rps_spread: f64,
    /// (max - min) / median of server CPU per request over the runs.
    pub cpu_spread: f64,
    /// Why the cell has no figures (server refused to start, load failed...).
    pub error: Option<String>,
}

/// Which cost a verdict compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The server process's own CPU time (utime + stime) per request.
    ProcessCpu,
    /// The pinned core's whole busy time per request (includes softirq work).
    CoreBusy,
}

impl Metric {
    #[must_use]
    pub const fn describe(self) -> &'static str {
        match self {
            Metric::ProcessCpu => "server process CPU per request",
            Metric::CoreBusy => "server core busy time per request",
        }
    }
}

/// `a` against `b` in one workload, on one metric.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Verdict {
    pub workload: String,
    pub a: String,
    pub b: String,
    pub metric: Metric,
    /// `None` with fewer than two paired rounds.
    pub interval: Option<Interval>,
    /// One of the comparisons `--target-ci` waits for (uring vs epoll, each vs the best peer).
    pub headline: bool,
    pub text: String,
    /// Rounds left out because the anchor runs beside a side of the ratio show that the host
    /// switched regime across it ([`crate::verdicts::SWITCH_STEP`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub left_out: usize,
    /// The same ratio over the rounds measured while the host was quiet and while it was busy
    /// ([`crate::verdicts::BUSY_STEP`]), when an anchored run had at least six of each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub states: Option<ByState>,
    /// How many of the verdict's paired rounds were measured while the host was busy
    /// (anchored rounds only; the rest of `interval.n` were quiet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<usize>,
}

/// A verdict's ratio split by the host's state during its rounds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ByState {
    pub quiet: Interval,
    pub busy: Interval,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How the rounds of one workload went.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkloadProgress {
    pub workload: String,
    pub rounds: usize,
    /// Wall-clock seconds spent on the workload's rounds (over every resumed part).
    pub seconds: f64,
    /// Why the rounds stopped ("3 rounds as asked", "target ±5% reached", "--max-time").
    pub outcome: String,
    /// The widest interval (every comparison, both metrics), as a half width (0.05 = ±5%).
    #[serde(default)]
    pub widest: Option<f64>,
}

/// What a sweep point varied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepKind {
    /// Closed-loop run that finds a server's maximum rate (it sets the rate grid).
    Probe,
    /// Open loop at `value` requests/s.
    Rate,
    /// Closed loop with `value` connections.
    Conns,
}

/// One point of a sweep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepPoint {
    pub workload: String,
    pub label: String,
    pub kind: SweepKind,
    pub value: f64,
    /// `None` when the run failed (`error` says why).
    pub run: Option<Run>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A server's knee in a rate sweep: the highest achieved rate whose p99 stayed under the SLO.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Knee {
    pub workload: String,
    pub label: String,
    /// `None`: p99 was over the SLO even at the lowest rate.
    pub rps: Option<f64>,
    pub p99_us: Option<f64>,
    /// Highest rate achieved at any step.
    pub max_rps: f64,
}

/// The idle experiment: one server at one (active, idle) point, against the same server
/// with no idle connections and against epoll (computed by [`crate::idle::rows`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleRow {
    pub active: usize,
    pub idle: usize,
    pub label: String,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_us_per_req: f64,
    /// Against the same server with no idle connections (`None` at 0 idle, or without it).
    pub p50_vs_zero: Option<Interval>,
    pub p99_vs_zero: Option<Interval>,
    pub cpu_vs_zero: Option<Interval>,
    /// Against epoll at the same point (`None` for epoll itself, or without it).
    pub p50_vs_epoll: Option<Interval>,
    pub p99_vs_epoll: Option<Interval>,
}

/// Everything one comparison run produced (written as results.json).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    #[serde(default)]
    pub version: u32,
    pub suite: String,
    pub command: String,
    /// The arguments after `compare`, for `--resume`.
    #[serde(default)]
    pub argv: Vec<String>,
    pub machine: Machine,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Rounds asked for (the minimum with `--target-ci`).
    pub repeat: usize,
    #[serde(default)]
    pub target_ci: Option<f64>,
    #[serde(default)]
    pub max_time_s: Option<f64>,
    /// Seed of the per-round shuffles (kept so that a resumed run continues the same plan).
    #[serde(default)]
    pub seed: u64,
    pub server_cpu: Option<usize>,
    pub load_cpu: Option<usize>,
    /// `false` while the run goes on, and when it was interrupted.
    #[serde(default = "yes")]
    pub complete: bool,
    /// Why the run ended before its plan was done.
    #[serde(default)]
    pub stopped: Option<String>,
    #[serde(default)]
    pub progress: Vec<WorkloadProgress>,
    pub cells: Vec<Cell>,
    #[serde(default)]
    pub verdicts: Vec<Verdict>,
    /// How the verdicts' intervals were computed ([`crate::stats::METHOD`]; results written
    /// before this was recorded used the Student-t interval throughout).
    #[serde(default = "student_t_throughout")]
    pub interval_method: String,
    /// The server run between every two others in each round (`"epoll"`), when the rounds
    /// were anchored; results written before anchoring existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<String>,
    #[serde(default)]
    pub sweep: Vec<SweepPoint>,
    #[serde(default)]
    pub knees: Vec<Knee>,
    /// The idle experiment's rows (latency and CPU against zero idle and against epoll).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub idle: Vec<IdleRow>,
    /// `--slo` of a rate sweep, µs.
    #[serde(default)]
    pub slo_us: Option<f64>,
    /// Backends or peers that were skipped, with the reason.
    pub skipped: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub date_utc: String,
}

impl Machine {
    #[must_use]
    pub fn probe() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let date_utc = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Self { kernel, cpu_model, cpus, date_utc }
    }
}

#[must_use]
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> f64 {
    let m = median(v.to_vec());
    if v.len() < 2 || m == 0.0 {
        return 0.0;
    }
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    (hi - lo) / m
}

/// The runs' histograms merged, when every run has one.
#[must_use]
pub fn merged_histogram(runs: &[Run]) -> Option<hdrhistogram::Histogram<u64>> {
    let mut h = histogram::latency_histogram();
    // The slots of interleaved blocks measure no latency: only the other runs count.
    let timed: Vec<&Run> = runs.iter().filter(|r| !r.interleaved).collect();
    for r in &timed {
        let one = histogram::decode(r.histogram.as_deref()?).ok()?;
        histogram::merge_into(&mut h, &one);
    }
    (!timed.is_empty()).then_some(h)
}

/// Field-wise median of several runs; latency percentiles from the merged histogram when
/// every run that measured latency has one (a percentile of medians is not a percentile).
#[must_use]
pub fn median_run(runs: &[Run]) -> Run {
    let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let opt = |f: fn(&Run) -> Option<f64>| {
        let v: Vec<f64> = runs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(v))
    };
    // Latency comes from the runs that measured it (not the slots of interleaved blocks).
    let timed: Vec<&Run> = runs.iter().filter(|r| !r.interleaved).collect();
    let lat = |f: fn(&Run) -> f64| median(timed.iter().map(|r| f(r)).collect());
    let mut out = Run {
        round: 0,
        slot: None,
        requests: m(|r| r.requests as f64) as u64,
        rps: m(|r| r.rps),
        p50_us: lat(|r| r.p50_us),
        p90_us: lat(|r| r.p90_us),
        p99_us: lat(|r| r.p99_us),
        p999_us: lat(|r| r.p999_us),
        max_us: timed.iter().map(|r| r.max_us).fold(0.0, f64::max),
        errors: runs.iter().map(|r| r.errors).sum(),
        cpu_us_per_req: m(|r| r.cpu_us_per_req),
        core_us_per_req: opt(|r| r.core_us_per_req),
        core_busy: opt(|r| r.core_busy),
        core_steal: opt(|r| r.core_steal),
        user_share: m(|r| r.user_share),
        syscalls_per_req: opt(|r| r.syscalls_per_req),
        server_util: m(|r| r.server_util),
        rss_kib: m(|r| r.rss_kib as f64) as u64,
        window_s: m(|r| r.window_s),
        offered_rate: opt(|r| r.offered_rate),
        histogram: None,
        interleaved: false,
    };
    if let Some(h) = merged_histogram(runs).filter(|h| !h.is_empty()) {
        out.p50_us = h.value_at_quantile(0.50) as f64;
        out.p90_us = h.value_at_quantile(0.90) as f64;
        out.p99_us = h.value_at_quantile(0.99) as f64;
        out.p999_us = h.value_at_quantile(0.999) as f64;
        out.max_us = h.max() as f64;
    }
    out
}

impl Cell {
    #[must_use]
    pub fn new(workload: Workload, server: Server, loadgen: LoadGen, runs: Vec<Run>, error: Option<String>) -> Self {
        let mut label = server.name();
        if loadgen == LoadGen::Wrk {
            label.push_str(" (wrk)");
        }
        let mut c = Self {
            median: Run::default(),
            histogram: None,
            rps_spread: 0.0,
            cpu_spread: 0.0,
            peer: server.is_peer(),
            workload,
            server,
            label,
            loadgen,
            runs,
            error,
        };
        c.refresh();
        c
    }

    /// Recompute the aggregates after runs were added.
    pub fn refresh(&mut self) {
        let rps: Vec<f64> = self.runs.iter().map(|r| r.rps).collect();
        let cpu: Vec<f64> = self.runs.iter().map(|r| r.cpu_us_per_req).collect();
        self.median = median_run(&self.runs);
        self.histogram = merged_histogram(&self.runs).map(|h| histogram::encode(&h));
        self.rps_spread = spread(&rps);
        self.cpu_spread = spread(&cpu);
    }

    #[must_use]
    pub fn ok(&self) -> bool {
        self.error.is_none() && !self.runs.is_empty()
    }

    /// The run of round `round`, if measured (the first one, for an anchor).
    #[must_use]
    pub fn run_of(&self, round: usize) -> Option<&Run> {
        self.runs.iter().find(|r| r.round == round)
    }

    /// Whether the run at `slot` of round `round` is measured (a run recorded without a
    /// slot stands for the whole round).
    #[must_use]
    pub fn has_run(&self, round: usize, slot: Option<usize>) -> bool {
        self.runs.iter().any(|r| r.round == round && (r.slot.is_none() || r.slot == slot))
    }
}

fn student_t_throughout() -> String {
    "Student-t interval on the per-round log ratios".into()
}

impl Results {
    /// Write results.json atomically (a temporary file renamed over it), so that an
    /// interruption at any moment leaves the previous complete file.
    pub fn save(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let tmp = dir.join(".results.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join("results.json"))
            .with_context(|| format!("writing {}/results.json", dir.display()))
    }

    pub fn load(dir: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let p = dir.join("results.json");
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a ringpoll compare results file", p.display()))
    }

    /// Workload names in the order they were first run.
    #[must_use]
    pub fn workload_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for c in &self.cells {
            if !names.contains(&c.workload.name) {
                names.push(c.workload.name.clone());
            }
        }
        for p in &self.sweep {
            if !names.contains(&p.workload) {
                names.push(p.workload.clone());
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::main_workloads;

    fn run(rps: f64, cpu: f64, latencies: &[u64]) -> Run {
        let mut h = histogram::latency_histogram();
        for &v in latencies {
            h.record(v).unwrap();
        }
        Run {
            rps,
            cpu_us_per_req: cpu,
            requests: 10,
            syscalls_per_req: Some(2.0),
            p99_us: h.value_at_quantile(0.99) as f64,
            histogram: Some(histogram::encode(&h)),
            ..Run::default()
        }
    }

    #[test]
    fn medians_spreads_and_percentiles_of_the_merged_histogram() {
        // Run 1: 99 fast requests and one slow; runs 2 and 3 all fast. The median of the
        // runs' p99s is fast; the p99 of all 300 requests is too (1 slow in 300), and p999 is
        // the slow one, which only the merged histogram can say.
        let fast = [100u64; 99];
        let mut one = fast.to_vec();
        one.push(50_000);
        let c = Cell::new(
            main_workloads()[0].clone(),
            Server::Ringpoll { backend: "epoll".into() },
            LoadGen::Ringpoll,
            vec![run(100.0, 3.0, &one), run(300.0, 1.0, &[100; 100]), run(200.0, 2.0, &[100; 100])],
            None,
        );
        assert_eq!(c.median.rps, 200.0);
        assert_eq!(c.median.cpu_us_per_req, 2.0);
        assert!((c.rps_spread - 1.0).abs() < 1e-9);
        assert_eq!(c.median.syscalls_per_req, Some(2.0));
        assert_eq!(c.median.p99_us, 100.0);
        assert!(c.median.p999_us >= 49_000.0, "{:?}", c.median);
        assert!(c.histogram.is_some());
    }

    #[test]
    fn the_slots_of_interleaved_blocks_count_in_costs_but_not_in_latency() {
        // One run that measured latency, two slots that did not (no histogram, no percentiles).
        let slot = |rps, cpu| Run { rps, cpu_us_per_req: cpu, requests: 5, interleaved: true, ..Run::default() };
        let c = Cell::new(
            main_workloads()[0].clone(),
            Server::Ringpoll { backend: "epoll".into() },
            LoadGen::Ringpoll,
            vec![run(100.0, 3.0, &[700; 100]), slot(300.0, 1.0), slot(200.0, 2.0)],
            None,
        );
        assert_eq!((c.median.rps, c.median.cpu_us_per_req), (200.0, 2.0), "costs over all three");
        assert_eq!(c.median.p99_us, 700.0, "latency from the run alone: {:?}", c.median);
        let h = histogram::decode(c.histogram.as_deref().unwrap()).unwrap();
        assert_eq!(h.len(), 100, "the merged histogram holds the run's requests only");
    }
}
