//! Aggregating repeats, the stdout table, results.json and report.md.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::matrix::{LoadGen, Server, Workload};
use crate::measure::Run;

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
    /// Per-field median over `runs`.
    pub median: Run,
    /// (max - min) / median of requests per second over the repeats.
    pub rps_spread: f64,
    /// (max - min) / median of server CPU per request over the repeats.
    pub cpu_spread: f64,
    /// Why the cell has no figures (server refused to start, load failed...).
    pub error: Option<String>,
}

/// Everything one comparison run produced (written as results.json).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub suite: String,
    pub command: String,
    pub machine: Machine,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub repeat: usize,
    pub server_cpu: Option<usize>,
    pub load_cpu: Option<usize>,
    pub cells: Vec<Cell>,
    /// Backends or peers that were skipped, with the reason.
    pub skipped: Vec<String>,
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

fn median(mut v: Vec<f64>) -> f64 {
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

/// Field-wise median of several runs.
#[must_use]
pub fn median_run(runs: &[Run]) -> Run {
    let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let sys: Vec<f64> = runs.iter().filter_map(|r| r.syscalls_per_req).collect();
    Run {
        requests: m(|r| r.requests as f64) as u64,
        rps: m(|r| r.rps),
        p50_us: m(|r| r.p50_us),
        p90_us: m(|r| r.p90_us),
        p99_us: m(|r| r.p99_us),
        p999_us: m(|r| r.p999_us),
        max_us: m(|r| r.max_us),
        errors: runs.iter().map(|r| r.errors).sum(),
        cpu_us_per_req: m(|r| r.cpu_us_per_req),
        user_share: m(|r| r.user_share),
        syscalls_per_req: if sys.is_empty() { None } else { Some(median(sys)) },
        server_util: m(|r| r.server_util),
        rss_kib: m(|r| r.rss_kib as f64) as u64,
        window_s: m(|r| r.window_s),
    }
}

impl Cell {
    #[must_use]
    pub fn new(workload: Workload, server: Server, loadgen: LoadGen, runs: Vec<Run>, error: Option<String>) -> Self {
        let mut label = server.name();
        if loadgen == LoadGen::Wrk {
            label.push_str(" (wrk)");
        }
        let rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
        let cpu: Vec<f64> = runs.iter().map(|r| r.cpu_us_per_req).collect();
        Self {
            median: median_run(&runs),
            rps_spread: spread(&rps),
            cpu_spread: spread(&cpu),
            peer: server.is_peer(),
            workload,
            server,
            label,
            loadgen,
            runs,
            error,
        }
    }

    #[must_use]
    pub fn ok(&self) -> bool {
        self.error.is_none() && !self.runs.is_empty()
    }
}

/// The peer with the lowest CPU per request in a workload (same load generator as `cell`).
#[must_use]
pub fn best_peer<'a>(cells: &'a [Cell], workload: &str) -> Option<&'a Cell> {
    cells
        .iter()
        .filter(|c| c.peer && c.ok() && c.workload.name == workload && c.loadgen == LoadGen::Ringpoll)
        .min_by(|a, b| a.median.cpu_us_per_req.total_cmp(&b.median.cpu_us_per_req))
}

fn workloads(r: &Results) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for c in &r.cells {
        if !names.contains(&c.workload.name) {
            names.push(c.workload.name.clone());
        }
    }
    names
}

/// A percentile the load generator did not report (wrk has no p99.9) shows as `-`.
fn fmt_us(v: f64) -> String {
    if v > 0.0 {
        format!("{v:.0}")
    } else {
        "-".into()
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

/// One table per workload; `md` selects Markdown, else aligned text.
#[must_use]
pub fn table(r: &Results, md: bool) -> String {
    let mut out = String::new();
    let head = [
        "server",
        "req/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "CPU µs/req",
        "syscalls/req",
        "user %",
        "CPU vs best peer",
        "req/s vs best peer",
        "spread",
    ];
    for w in workloads(r) {
        let best = best_peer(&r.cells, &w);
        if md {
            let _ = writeln!(out, "\n#### {w}\n");
            let _ = writeln!(out, "| {} |", head.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
        } else {
            let _ = writeln!(out, "\n{w}");
            let _ = writeln!(
                out,
                "  {:<14} {:>10} {:>8} {:>8} {:>9} {:>10} {:>12} {:>6} {:>9} {:>9} {:>7}",
                "server",
                "req/s",
                "p50us",
                "p99us",
                "p99.9us",
                "cpu us/req",
                "syscalls/req",
                "user%",
                "cpu/best",
                "rps/best",
                "spread"
            );
        }
        for c in r.cells.iter().filter(|c| c.workload.name == w) {
            let label = if c.peer { format!("{} (peer)", c.label) } else { c.label.clone() };
            if let Some(e) = &c.error {
                if md {
                    let _ = writeln!(out, "| {label} | {} |{}", e.replace('|', "/"), " |".repeat(head.len() - 2));
                } else {
                    let _ = writeln!(out, "  {label:<14} skipped: {e}");
                }
                continue;
            }
            let m = &c.median;
            let (cpu_ratio, rps_ratio) = match best {
                Some(b) if b.median.cpu_us_per_req > 0.0 && b.median.rps > 0.0 => (
                    format!("{:.2}x", m.cpu_us_per_req / b.median.cpu_us_per_req),
                    format!("{:.2}x", m.rps / b.median.rps),
                ),
                _ => ("-".into(), "-".into()),
            };
            let spread = format!("±{:.0}%", 50.0 * c.rps_spread.max(c.cpu_spread));
            if md {
                let _ = writeln!(
                    out,
                    "| {label} | {:.0} | {} | {} | {} | {:.2} | {} | {:.0} | {cpu_ratio} | {rps_ratio} | {spread} |",
                    m.rps,
                    fmt_us(m.p50_us),
                    fmt_us(m.p99_us),
                    fmt_us(m.p999_us),
                    m.cpu_us_per_req,
                    fmt_opt(m.syscalls_per_req),
                    m.user_share * 100.0
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {label:<14} {:>10.0} {:>8} {:>8} {:>9} {:>10.2} {:>12} {:>6.0} {:>9} {:>9} {:>7}",
                    m.rps,
                    fmt_us(m.p50_us),
                    fmt_us(m.p99_us),
                    fmt_us(m.p999_us),
                    m.cpu_us_per_req,
                    fmt_opt(m.syscalls_per_req),
                    m.user_share * 100.0,
                    cpu_ratio,
                    rps_ratio,
                    spread
                );
            }
        }
    }
    out
}

/// The Markdown report: how it was produced, then the tables and plots.
#[must_use]
pub fn markdown(r: &Results, plots: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# ringpoll comparison ({})\n", r.suite);
    let _ = writeln!(out, "- command: `{}`", r.command);
    let _ = writeln!(
        out,
        "- machine: {} CPUs, {}, Linux {}, {}",
        r.machine.cpus, r.machine.cpu_model, r.machine.kernel, r.machine.date_utc
    );
    let pin = |c: Option<usize>| c.map_or_else(|| "not pinned".to_string(), |c| format!("CPU {c}"));
    let _ = writeln!(
        out,
        "- server: one worker, {}; load generator (`ringpoll load -t1`): {}",
        pin(r.server_cpu),
        pin(r.load_cpu)
    );
    let _ = writeln!(
        out,
        "- each cell: {:.1} s measured after {:.1} s warm-up, {} repeat(s) run in rounds over the whole matrix; figures are medians, `spread` is half the max-min range over repeats",
        r.duration_s, r.warmup_s, r.repeat
    );
    let _ = writeln!(
        out,
        "- CPU µs/req: server utime+stime over the load's measured window / requests; syscalls/req: the server's own counter (ringpoll only); user %: user share of server CPU"
    );
    let _ = writeln!(
        out,
        "- ratios compare each row with the peer (reference server) using the least CPU per request in that workload"
    );
    if !r.skipped.is_empty() {
        let _ = writeln!(out, "- skipped: {}", r.skipped.join("; "));
    }
    out.push_str(&table(r, true));
    for p in plots {
        let _ = writeln!(out, "\n![{p}]({p})");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{main_workloads, Server};

    fn run(rps: f64, cpu: f64) -> Run {
        Run { rps, cpu_us_per_req: cpu, requests: 10, syscalls_per_req: Some(2.0), ..Run::default() }
    }

    #[test]
    fn medians_and_spreads() {
        let c = Cell::new(
            main_workloads()[0].clone(),
            Server::Ringpoll { backend: "epoll".into() },
            LoadGen::Ringpoll,
            vec![run(100.0, 3.0), run(300.0, 1.0), run(200.0, 2.0)],
            None,
        );
        assert_eq!(c.median.rps, 200.0);
        assert_eq!(c.median.cpu_us_per_req, 2.0);
        assert!((c.rps_spread - 1.0).abs() < 1e-9);
        assert_eq!(c.median.syscalls_per_req, Some(2.0));
    }

    #[test]
    fn ratios_are_against_the_cheapest_peer() {
        let w = main_workloads()[0].clone();
        let cells = vec![
            Cell::new(
                w.clone(),
                Server::Ringpoll { backend: "epoll".into() },
                LoadGen::Ringpoll,
                vec![run(100.0, 2.0)],
                None,
            ),
            Cell::new(w.clone(), Server::TokioEcho, LoadGen::Ringpoll, vec![run(90.0, 4.0)], None),
            Cell::new(w.clone(), Server::MonoioEcho, LoadGen::Ringpoll, vec![run(95.0, 2.5)], None),
        ];
        assert_eq!(best_peer(&cells, &w.name).unwrap().label, "monoio");
        let r = Results {
            suite: "main".into(),
            command: "ringpoll compare".into(),
            machine: Machine::default(),
            duration_s: 1.0,
            warmup_s: 0.0,
            repeat: 1,
            server_cpu: Some(0),
            load_cpu: Some(1),
            cells,
            skipped: vec![],
        };
        let t = table(&r, false);
        assert!(t.contains("0.80x"), "epoll CPU ratio 2.0/2.5: {t}");
        let md = markdown(&r, &["throughput.svg".into()]);
        assert!(md.contains("| epoll | 100 |") && md.contains("![throughput.svg](throughput.svg)"), "{md}");
    }
}
