//! `run_load`: plan the run, spawn the load threads, draw the progress line, merge the
//! results into a [`Report`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use ringpoll_sys::poller::epoll::{Epoll, EpollEt};

use crate::config::{parse_target, LoadConfig, LoadPoller, Plan};
use crate::describe::describe_connect_error;
use crate::histogram::{self, latency_histogram, timeline_histogram};
use crate::report::{Errors, Latency, Report, StatusClasses, TimelineRow};
use crate::thread::{Live, Msg, ThreadOut, ThreadSpec};
use crate::worker::run_thread;

/// When nothing has connected after this long (and connects failed), the run stops early.
const DEAD_TARGET_AFTER: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(100);

/// Run a load test and return its report (what `--json` prints).
///
/// Fails when the configuration is invalid, the target cannot be resolved, a load thread
/// cannot start, or no connection could ever be established ("could not connect to ...").
pub fn run_load(cfg: LoadConfig) -> anyhow::Result<Report> {
    run_load_until(cfg, &AtomicBool::new(false))
}

/// [`run_load`], stopping early (with partial results, `interrupted: true`) once `stop` is set.
pub fn run_load_until(cfg: LoadConfig, stop: &AtomicBool) -> anyhow::Result<Report> {
    cfg.validate()?;
    let mode = cfg.effective_mode();
    let target = parse_target(&cfg.target)?;
    if cfg.connections + cfg.idle > 512 {
        if let Err(e) = ringpoll_sys::rlimit::raise_nofile_limit() {
            tracing::warn!("could not raise the open-file limit: {e}");
        }
    }
    let plan = Arc::new(Plan::new(&cfg, mode, &target, Instant::now()));
    let inner_stop = Arc::new(AtomicBool::new(false));
    let live: Arc<Vec<Live>> = Arc::new((0..cfg.threads).map(|_| Live::default()).collect());
    let (tx, rx) = mpsc::channel::<Msg>();

    let mut handles = Vec::with_capacity(cfg.threads);
    let (mut first, mut first_idle) = (0, cfg.connections);
    for i in 0..cfg.threads {
        let active = share(cfg.connections, cfg.threads, i);
        let idle = share(cfg.idle, cfg.threads, i);
        let spec = ThreadSpec {
            index: i,
            first,
            active,
            first_idle,
            idle,
            cpu: (!cfg.pin.is_empty()).then(|| cfg.pin[i % cfg.pin.len()]),
            budget: cfg.max_requests.map(|n| share64(n, cfg.threads as u64, i as u64)),
        };
        first += active;
        first_idle += idle;
        let poller = cfg.poller;
        let (plan, live, stop, tx) = (Arc::clone(&plan), Arc::clone(&live), Arc::clone(&inner_stop), tx.clone());
        let h = std::thread::Builder::new()
            .name(format!("ringpoll-load-{i}"))
            .spawn(move || match poller {
                LoadPoller::Epoll => run_thread::<Epoll>(&plan, spec, &live[i], &stop, &tx),
                LoadPoller::EpollEt => run_thread::<EpollEt>(&plan, spec, &live[i], &stop, &tx),
            })
            .context("spawning a load thread")?;
        handles.push(h);
    }
    drop(tx);

    let progress = cfg.progress.then(|| Progress::new(&cfg));
    let mut seconds: BTreeMap<u64, Histogram<u64>> = BTreeMap::new();
    let mut interrupted = false;
    let mut gave_up = false;
    let mut last_tick = Instant::now();
    let mut last_count = 0;
    let mut was_warm = false;
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Msg::Second { sec, hist }) => {
                let merged = seconds.entry(sec).or_insert_with(timeline_histogram);
                let _ = merged.add(&hist);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if stop.load(Ordering::Relaxed) && !inner_stop.load(Ordering::Relaxed) {
            interrupted = true;
            inner_stop.store(true, Ordering::Relaxed);
        }
        let elapsed = plan.epoch.elapsed();
        if !gave_up
            && elapsed >= DEAD_TARGET_AFTER
            && !live.iter().any(|l| l.connected.load(Ordering::Relaxed))
            && live.iter().any(|l| l.connect_failures.load(Ordering::Relaxed) > 0)
        {
            gave_up = true;
            inner_stop.store(true, Ordering::Relaxed);
        }
        if let Some(p) = &progress {
            if last_tick.elapsed() >= TICK {
                // During warm-up the rate of replies of any kind (nothing is counted yet);
                // from the window on, successful requests.
                let warm = elapsed < cfg.warmup;
                let count: u64 = live
                    .iter()
                    .map(|l| if warm { l.replies.load(Ordering::Relaxed) } else { l.requests.load(Ordering::Relaxed) })
                    .sum();
                if warm != was_warm || count < last_count {
                    last_count = 0;
                }
                let errors: u64 = live.iter().map(|l| l.errors.load(Ordering::Relaxed)).sum();
                let rps = (count - last_count) as f64 / last_tick.elapsed().as_secs_f64();
                p.update(&progress_line(elapsed, rps, errors, &cfg));
                last_count = count;
                was_warm = warm;
                last_tick = Instant::now();
            }
        }
    }
    if let Some(p) = progress {
        p.finish();
    }

    let mut outs = Vec::with_capacity(handles.len());
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(out)) => outs.push(out),
            Ok(Err(e)) => bail!("load thread {i}: {e}"),
            Err(_) => bail!("load thread {i} panicked"),
        }
    }
    if !outs.iter().any(|o| o.connected_ever) {
        let why = outs
            .iter()
            .find_map(|o| o.last_connect_error.as_ref())
            .map_or_else(|| "no connection completed before the run ended".to_string(), describe_connect_error);
        bail!("could not connect to {}: {why}", target.addr);
    }
    Ok(build_report(&cfg, &plan, outs, seconds, interrupted))
}

/// [`share`] for request counts.
fn share64(n: u64, t: u64, i: u64) -> u64 {
    n / t + u64::from(i < n % t)
}

/// Thread `i`'s share of `n` items over `t` threads.
fn share(n: usize, t: usize, i: usize) -> usize {
    n / t + usize::from(i < n % t)
}

fn build_report(
    cfg: &LoadConfig,
    plan: &Plan,
    outs: Vec<ThreadOut>,
    seconds: BTreeMap<u64, Histogram<u64>>,
    interrupted: bool,
) -> Report {
    let mut corrected = latency_histogram();
    let mut uncorrected = latency_histogram();
    let (mut errors, mut status) = (Errors::default(), StatusClasses::default());
    let (mut requests, mut bytes_read, mut bytes_written, mut connects) = (0, 0, 0, 0);
    let (mut cpu_us, mut syscalls, mut incomplete, mut idle_connected, mut end) = (0, 0, 0, 0, plan.warm_end);
    for o in &outs {
        histogram::merge_into(&mut corrected, &o.rec.corrected);
        histogram::merge_into(&mut uncorrected, o.rec.uncorrected.as_ref().unwrap_or(&o.rec.corrected));
        errors.add(&o.rec.errors);
        status.add(&o.rec.status);
        requests += o.rec.requests;
        bytes_read += o.rec.bytes_read;
        bytes_written += o.rec.bytes_written;
        connects += o.rec.connects;
        cpu_us += o.cpu_us;
        syscalls += o.syscalls;
        incomplete += o.incomplete;
        idle_connected += o.idle_connected;
        end = end.max(o.end);
    }
    let duration_s = (end - plan.warm_end) as f64 / 1e9;
    let rps = if duration_s > 0.0 { requests as f64 / duration_s } else { 0.0 };
    let timeline = cfg.timeline.then(|| {
        seconds
            .iter()
            .filter(|(&t, _)| (t as f64) < duration_s.max(1e-9))
            .map(|(&t, h)| {
                let width = (duration_s - t as f64).clamp(1e-3, 1.0);
                TimelineRow {
                    t,
                    rps: h.len() as f64 / width,
                    p99_us: if h.is_empty() { 0 } else { h.value_at_quantile(0.99) },
                }
            })
            .collect()
    });
    Report {
        target: cfg.target.clone(),
        addr: plan.addr.to_string(),
        mode: plan.mode.name().into(),
        connections: cfg.connections,
        threads: cfg.threads,
        poller: match cfg.poller {
            LoadPoller::Epoll => "epoll".into(),
            LoadPoller::EpollEt => "epoll-et".into(),
        },
        idle: cfg.idle,
        depth: cfg.depth,
        size: plan.msg_len,
        rate_requested: cfg.rate,
        warmup_s: cfg.warmup.as_secs_f64(),
        duration_s,
        window_start_unix_s: plan.epoch_unix_s + plan.warm_end as f64 / 1e9,
        window_end_unix_s: plan.epoch_unix_s + end as f64 / 1e9,
        requests,
        rps,
        rate_shortfall_pct: cfg.rate.map(|r| ((1.0 - rps / r) * 100.0).max(0.0)),
        bytes_read,
        bytes_written,
        latency_us: Latency::from_histogram(&corrected),
        latency_uncorrected_us: Latency::from_histogram(&uncorrected),
        latency_histogram: Some(histogram::encode(&corrected)),
        latency_uncorrected_histogram: cfg.rate.is_some().then(|| histogram::encode(&uncorrected)),
        errors,
        status,
        idle_connected,
        connects,
        incomplete,
        timeline,
        client_cpu_us: cpu_us,
        client_cpu_us_per_request: per_request(cpu_us, requests),
        client_syscalls_per_request: per_request(syscalls, requests),
        interrupted,
        first_error: outs.iter().find_map(|o| o.first_error.clone()),
    }
}

fn per_request(total: u64, requests: u64) -> f64 {
    if requests > 0 {
        total as f64 / requests as f64
    } else {
        0.0
    }
}

/// The live line: warm-up is shown as such (its rate is not measured), then the window.
fn progress_line(elapsed: Duration, rps: f64, errors: u64, cfg: &LoadConfig) -> String {
    let e = elapsed.as_secs_f64();
    let warm = cfg.warmup.as_secs_f64();
    if e < warm {
        format!("warm-up {e:.1}s/{warm:.1}s (not measured)  {rps:.0} replies/s")
    } else {
        let limit = match cfg.max_requests {
            Some(n) => format!(" (until {n} requests)"),
            None => format!("/{:.1}s", cfg.duration.as_secs_f64()),
        };
        format!("{:.1}s{limit}  {rps:.0} req/s  {errors} errors", e - warm)
    }
}

/// The live line on stderr (only drawn on a terminal).
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn new(cfg: &LoadConfig) -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr_with_hz(10));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(format!("connecting to {}", cfg.target));
        Self { bar }
    }

    fn update(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
        self.bar.tick();
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_is_shown_as_such() {
        let mut cfg = LoadConfig::new("127.0.0.1:1");
        cfg.warmup = Duration::from_secs(2);
        let line = progress_line(Duration::from_millis(500), 1234.0, 0, &cfg);
        assert_eq!(line, "warm-up 0.5s/2.0s (not measured)  1234 replies/s");
        let line = progress_line(Duration::from_millis(3500), 99.0, 2, &cfg);
        assert_eq!(line, "1.5s/10.0s  99 req/s  2 errors");
        cfg.max_requests = Some(500);
        assert!(progress_line(Duration::from_secs(3), 1.0, 0, &cfg).contains("(until 500 requests)"));
    }

    #[test]
    fn shares_add_up() {
        for (n, t) in [(64, 1), (64, 3), (5, 2), (0, 4)] {
            assert_eq!((0..t).map(|i| share(n, t, i)).sum::<usize>(), n);
            assert_eq!((0..t as u64).map(|i| share64(n as u64, t as u64, i)).sum::<u64>(), n as u64);
        }
    }
}
