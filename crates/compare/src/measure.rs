//! Measuring one cell: start the server pinned to one CPU, drive it with the load generator
//! pinned to the other, and read the server's CPU time and syscall count over exactly the
//! load's measured window.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::matrix::{LoadGen, Proto, Server, Workload};
use crate::procs::{self, Proc};

/// How to run a cell.
#[derive(Clone, Debug)]
pub struct Setup {
    pub ringpoll: PathBuf,
    pub peers_dir: PathBuf,
    pub server_cpu: Option<usize>,
    pub load_cpu: Option<usize>,
    pub duration: Duration,
    pub warmup: Duration,
}

/// One measured run of one cell.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Run {
    pub requests: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub errors: u64,
    /// Server CPU (user + system) per request, microseconds.
    pub cpu_us_per_req: f64,
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
}

#[derive(Clone, Copy)]
struct Sample {
    at: f64,
    cpu: f64,
    user: f64,
    sys: f64,
    syscalls: Option<u64>,
    rss_kib: u64,
}

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Sample the server every 50 ms until stopped.
fn sampler(proc: &Proc, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Sample>> {
    let pid = proc.child.id();
    let metrics = proc.metrics;
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let at = now_s();
            if let (Ok(cpu), Ok((user, sys))) = (procs::cpu_total(pid), procs::cpu_times(pid)) {
                let syscalls = metrics.and_then(|m| procs::scrape_counter(m, "syscalls").ok());
                let rss_kib = procs::rss_kib(pid).unwrap_or(0);
                out.push(Sample { at, cpu, user, sys, syscalls, rss_kib });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        out
    })
}

/// The sample nearest to time `t`.
fn nearest(samples: &[Sample], t: f64) -> Option<Sample> {
    samples.iter().copied().min_by(|a, b| (a.at - t).abs().total_cmp(&(b.at - t).abs()))
}

/// Start the server under test for a workload.
pub fn start_server(setup: &Setup, server: &Server, w: &Workload, upstream: Option<&Proc>) -> Result<Proc> {
    let cpu = setup.server_cpu;
    match server {
        Server::Ringpoll { .. } | Server::RingpollSplice | Server::RingpollUringRelay { .. } => {
            let (backend, extra): (&str, &[&str]) = match server {
                Server::Ringpoll { backend } => (backend.as_str(), &[]),
                Server::RingpollUringRelay { relay } => ("uring", &["--uring-relay", relay.as_str()]),
                _ => ("epoll", &["--splice"]),
            };
            let mut cmd = procs::pinned(cpu, &setup.ringpoll);
            let mode = match w.proto {
                Proto::Echo => "echo",
                Proto::Http => "http",
                Proto::Proxy => "proxy",
            };
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--mode", mode, "--backend", backend]);
            cmd.args(["--metrics", "127.0.0.1:0"]);
            if cpu.is_none() {
                cmd.arg("--no-pin");
            }
            if let Some(up) = upstream {
                cmd.args(["--upstream", &up.addr.to_string()]);
            }
            cmd.args(extra);
            cmd.env("RINGPOLL_LOG", "warn");
            procs::spawn_announcing(cmd, &server.name(), true)
        }
        Server::TokioEcho | Server::MonoioEcho | Server::TokioHttp => {
            let bin = match server {
                Server::TokioEcho => "tokio-echo",
                Server::MonoioEcho => "monoio-echo",
                _ => "tokio-http",
            };
            let path = setup.peers_dir.join(bin);
            if !path.is_file() {
                bail!("{} not built (run bench-scripts/build-peers.sh)", path.display());
            }
            let mut cmd = procs::pinned(cpu, &path);
            cmd.args(["--listen", "127.0.0.1:0"]);
            procs::spawn_announcing(cmd, bin, false)
        }
        Server::Nginx => procs::spawn_nginx(
            cpu,
            "nginx",
            "http {\n access_log off;\n keepalive_requests 100000000;\n server {\n  listen 127.0.0.1:{PORT} reuseport;\n  \
             location / { default_type text/plain; return 200 \"Hello, World!\"; }\n }\n}\n",
            false,
        ),
        Server::NginxStream => {
            let up = upstream.context("the nginx stream proxy needs an upstream")?;
            let body = format!(
                "stream {{\n server {{\n  listen 127.0.0.1:{{PORT}} reuseport;\n  proxy_pass {};\n  tcp_nodelay on;\n }}\n}}\n",
                up.addr
            );
            procs::spawn_nginx(cpu, "nginx-stream", &body, true)
        }
    }
}

/// The fields of `ringpoll load --json` that the comparison reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LoadJson {
    requests: u64,
    rps: f64,
    duration_s: f64,
    latency_us: Percentiles,
    errors: std::collections::BTreeMap<String, u64>,
    window_start_unix_s: f64,
    window_end_unix_s: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// Measure one cell once.
pub fn measure(setup: &Setup, server: &Server, w: &Workload, loadgen: LoadGen) -> Result<Run> {
    // The proxy's upstream shares the load generator's CPU: only the proxy is measured.
    let upstream = if w.proto == Proto::Proxy {
        let mut cmd = procs::pinned(setup.load_cpu, &setup.ringpoll);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--mode", "echo", "--no-pin"]);
        cmd.env("RINGPOLL_LOG", "warn");
        Some(procs::spawn_announcing(cmd, "upstream echo", false)?)
    } else {
        None
    };
    let proc = start_server(setup, server, w, upstream.as_ref())?;
    std::thread::sleep(Duration::from_millis(200));

    let stop = Arc::new(AtomicBool::new(false));
    let samples = sampler(&proc, stop.clone());
    let started = now_s();
    let out = match loadgen {
        LoadGen::Ringpoll => run_ringpoll_load(setup, w, &proc),
        LoadGen::Wrk => run_wrk(setup, w, &proc),
    };
    let ended = now_s();
    stop.store(true, Ordering::Relaxed);
    let samples = samples.join().unwrap_or_default();
    let load = out?;

    let (t0, t1) = match (load.window_start_unix_s, load.window_end_unix_s) {
        (a, b) if a > 0.0 && b > a => (a, b),
        _ => {
            let span = if load.duration_s > 0.0 { load.duration_s } else { setup.duration.as_secs_f64() };
            (ended - span, ended)
        }
    };
    let (Some(a), Some(b)) = (nearest(&samples, t0), nearest(&samples, t1)) else {
        bail!("no CPU samples of {} (ran {:.1} s)", proc.name, ended - started);
    };
    let window = (b.at - a.at).max(1e-3);
    let cpu = (b.cpu - a.cpu).max(0.0);
    // Requests over the sampled window (it differs from the load's window by < 50 ms).
    let reqs = load.requests.max(1) as f64;
    let per_window = reqs * window / (t1 - t0).max(1e-3);
    let ticks = (b.user - a.user) + (b.sys - a.sys);
    Ok(Run {
        requests: load.requests,
        rps: load.rps,
        p50_us: load.latency_us.p50,
        p90_us: load.latency_us.p90,
        p99_us: load.latency_us.p99,
        p999_us: load.latency_us.p999,
        max_us: load.latency_us.max,
        errors: load.errors.values().sum(),
        cpu_us_per_req: cpu * 1e6 / per_window,
        user_share: if ticks > 0.0 { (b.user - a.user) / ticks } else { 0.0 },
        syscalls_per_req: match (a.syscalls, b.syscalls) {
            (Some(x), Some(y)) if y >= x => Some((y - x) as f64 / per_window),
            _ => None,
        },
        server_util: cpu / window,
        rss_kib: b.rss_kib,
        window_s: window,
    })
}

fn target(w: &Workload, proc: &Proc) -> String {
    match w.proto {
        Proto::Http => format!("http://{}/", proc.addr),
        Proto::Echo | Proto::Proxy => proc.addr.to_string(),
    }
}

fn run_ringpoll_load(setup: &Setup, w: &Workload, proc: &Proc) -> Result<LoadJson> {
    let mut cmd = procs::pinned(setup.load_cpu, &setup.ringpoll);
    cmd.arg("load").arg("--json");
    cmd.args(["-t", "1", "-c", &w.conns.to_string(), "--depth", &w.depth.to_string()]);
    cmd.args(["-d", &format!("{}ms", setup.duration.as_millis())]);
    // Idle connections are opened at the start: leave them time to connect before the window.
    let warmup = setup.warmup.max(Duration::from_millis(500 + w.idle as u64 / 5));
    cmd.args(["--warmup", &format!("{}ms", warmup.as_millis())]);
    if w.proto != Proto::Http {
        cmd.args(["--mode", "echo", "--size", &w.size.to_string()]);
    }
    if w.idle > 0 {
        cmd.args(["--idle", &w.idle.to_string()]);
    }
    cmd.arg(target(w, proc));
    let out = cmd.stdin(Stdio::null()).output().context("running ringpoll load")?;
    if !out.status.success() {
        bail!("ringpoll load against {} failed: {}", proc.name, String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing ringpoll load --json output: {}", String::from_utf8_lossy(&out.stdout)))
}

/// wrk (HTTP only): parse its summary; the whole run is the window.
fn run_wrk(setup: &Setup, w: &Workload, proc: &Proc) -> Result<LoadJson> {
    let wrk = procs::find_program("wrk").context("wrk is not installed")?;
    let mut cmd = procs::pinned(setup.load_cpu, &wrk);
    let secs = setup.duration.as_secs().max(1);
    cmd.args(["-t1", &format!("-c{}", w.conns), &format!("-d{secs}s"), "--latency"]).arg(target(w, proc));
    let start = now_s();
    let out = cmd.stdin(Stdio::null()).output().context("running wrk")?;
    let end = now_s();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_wrk(&text, start, end)
}

fn parse_wrk(text: &str, start: f64, end: f64) -> Result<LoadJson> {
    fn dur_us(s: &str) -> Option<f64> {
        let (num, mult) = if let Some(v) = s.strip_suffix("us") {
            (v, 1.0)
        } else if let Some(v) = s.strip_suffix("ms") {
            (v, 1e3)
        } else if let Some(v) = s.strip_suffix('s') {
            (v, 1e6)
        } else if let Some(v) = s.strip_suffix('m') {
            (v, 60e6)
        } else {
            return None;
        };
        num.parse::<f64>().ok().map(|v| v * mult)
    }
    let mut j = LoadJson::default();
    for line in text.lines().map(str::trim) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["Requests/sec:", v] => j.rps = v.parse().unwrap_or(0.0),
            [n, "requests", "in", d, ..] => {
                j.requests = n.parse().unwrap_or(0);
                j.duration_s = dur_us(d.trim_end_matches(',')).map_or(0.0, |u| u / 1e6);
            }
            ["50%", v] => j.latency_us.p50 = dur_us(v).unwrap_or(0.0),
            ["90%", v] => j.latency_us.p90 = dur_us(v).unwrap_or(0.0),
            ["99%", v] => j.latency_us.p99 = dur_us(v).unwrap_or(0.0),
            ["Latency", _avg, _stdev, max, ..] => j.latency_us.max = dur_us(max).unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                j.errors.insert("status".into(), n.parse().unwrap_or(0));
            }
            _ => {}
        }
    }
    if j.requests == 0 {
        bail!("could not parse wrk output: {text}");
    }
    // wrk connects before its clock starts; the run's tail is the window.
    j.window_end_unix_s = end;
    j.window_start_unix_s = (end - j.duration_s).max(start);
    Ok(j)
}

/// Probe whether a ringpoll backend can run here (io_uring may be refused by the kernel).
pub fn backend_available(ringpoll: &std::path::Path, backend: &str) -> Result<(), String> {
    let mut cmd = Command::new(ringpoll);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--no-pin", "--backend", backend]);
    cmd.env("RINGPOLL_LOG", "error");
    procs::spawn_announcing(cmd, backend, false).map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_parsed() {
        let text = "Running 5s test @ http://127.0.0.1:8080/\n  1 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   512.00us  100.00us   5.20ms   90.00%\n    Req/Sec   120.00k     5.00k  130.00k    80.00%\n  Latency Distribution\n     50%  500.00us\n     75%  600.00us\n     90%  700.00us\n     99%    1.20ms\n  600000 requests in 5.00s, 80.00MB read\nRequests/sec: 120000.00\nTransfer/sec:     16.00MB\n";
        let j = parse_wrk(text, 100.0, 106.0).unwrap();
        assert_eq!(j.requests, 600_000);
        assert!((j.rps - 120_000.0).abs() < 1e-6);
        assert!((j.latency_us.p50 - 500.0).abs() < 1e-6);
        assert!((j.latency_us.p99 - 1200.0).abs() < 1e-6);
        assert!((j.latency_us.max - 5200.0).abs() < 1e-6);
        assert_eq!(j.window_start_unix_s, 101.0);
    }

    #[test]
    fn nearest_sample_is_picked() {
        let s = |at| Sample { at, cpu: at, user: 0.0, sys: 0.0, syscalls: None, rss_kib: 0 };
        let v = vec![s(1.0), s(1.05), s(1.1)];
        assert_eq!(nearest(&v, 1.06).unwrap().at, 1.05);
        assert!(nearest(&[], 1.0).is_none());
    }
}
