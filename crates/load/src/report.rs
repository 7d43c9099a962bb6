//! The result of a load run: the one JSON object `--json` prints, and the wrk-like summary.
//!
//! Every field is documented in `crates/load/README.md`; the names are a contract (the
//! comparison harness parses them).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: u64,
    pub p75: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
    pub stdev: f64,
}

impl Latency {
    /// Summarise a histogram of microseconds (`None` when it is empty).
    #[must_use]
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        Some(Self {
            p50: h.value_at_quantile(0.50),
            p75: h.value_at_quantile(0.75),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: h.mean(),
            stdev: h.stdev(),
        })
    }
}

/// Errors by kind over the measured window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Errors {
    /// Failed connection attempts (refused, unreachable, connect timeout, ...).
    pub connect: u64,
    /// Connections lost while reading: resets, EOF with requests in flight, responses that
    /// cannot be framed, bytes nobody asked for.
    pub read: u64,
    /// Send failures (reset, broken pipe).
    pub write: u64,
    /// Connections whose oldest request went unanswered for `--timeout`.
    pub timeout: u64,
    /// Echo messages that came back with at least one wrong byte.
    pub mismatch: u64,
    /// HTTP responses whose status is not 2xx.
    pub status: u64,
}

impl Errors {
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.mismatch + self.status
    }

    pub fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.mismatch += o.mismatch;
        self.status += o.status;
    }
}

/// HTTP responses by status class (`other`: codes outside 200..=599).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusClasses {
    #[serde(rename = "2xx")]
    pub s2xx: u64,
    #[serde(rename = "3xx")]
    pub s3xx: u64,
    #[serde(rename = "4xx")]
    pub s4xx: u64,
    #[serde(rename = "5xx")]
    pub s5xx: u64,
    #[serde(default)]
    pub other: u64,
}

impl StatusClasses {
    pub fn count(&mut self, status: u16) {
        match status {
            200..=299 => self.s2xx += 1,
            300..=399 => self.s3xx += 1,
            400..=499 => self.s4xx += 1,
            500..=599 => self.s5xx += 1,
            _ => self.other += 1,
        }
    }

    pub fn add(&mut self, o: &StatusClasses) {
        self.s2xx += o.s2xx;
        self.s3xx += o.s3xx;
        self.s4xx += o.s4xx;
        self.s5xx += o.s5xx;
        self.other += o.other;
    }
}

/// One `--timeline` row: second `t` of the measured window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineRow {
    /// Seconds since the measured window started (0, 1, 2, ...).
    pub t: u64,
    /// Requests completed during that second (per second; the last row may be partial).
    pub rps: f64,
    /// Corrected p99 latency of the requests completed during that second.
    pub p99_us: u64,
}

/// The result of one load run (what `--json` prints).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub target: String,
    /// Resolved address connected to.
    pub addr: String,
    pub mode: String,
    pub connections: usize,
    pub threads: usize,
    /// Event loop of the load threads: `epoll` or `epoll-et`.
    #[serde(default)]
    pub poller: String,
    pub idle: usize,
    pub depth: usize,
    /// Echo: message size; http: request size on the wire.
    pub size: usize,
    pub rate_requested: Option<f64>,
    pub warmup_s: f64,
    /// Length of the measured window (shorter than asked when interrupted).
    pub duration_s: f64,
    /// Wall-clock start and end of the measured window (seconds since the Unix epoch), so
    /// that other tools can sample the server over exactly this window.
    #[serde(default)]
    pub window_start_unix_s: f64,
    #[serde(default)]
    pub window_end_unix_s: f64,
    /// Successful requests sent in the window (echo: every byte verified; http: 2xx).
    pub requests: u64,
    pub rps: f64,
    /// Open loop: how far `rps` fell short of `rate_requested`, in percent (0 when met).
    pub rate_shortfall_pct: Option<f64>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Open loop: from each request's intended send time; closed loop: from its send time.
    /// `None` (JSON `null`) when no request succeeded: there is no latency to report.
    pub latency_us: Option<Latency>,
    /// From the actual send time (equal to `latency_us` in closed loop).
    pub latency_uncorrected_us: Option<Latency>,
    /// The histogram behind `latency_us` (µs; HdrHistogram V2 + deflate, base64), so that
    /// runs can be merged as histograms (`ringpoll load merge`).
    #[serde(default)]
    pub latency_histogram: Option<String>,
    /// Open loop: the histogram behind `latency_uncorrected_us`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_uncorrected_histogram: Option<String>,
    pub errors: Errors,
    pub status: StatusClasses,
    pub idle_connected: usize,
    /// Connections established during the window (reconnects included).
    pub connects: u64,
    /// Requests still unanswered when the run ended (after the grace period).
    pub incomplete: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<TimelineRow>>,
    /// CPU time (user + system) of the load threads over the measured window.
    pub client_cpu_us: u64,
    pub client_cpu_us_per_request: f64,
    /// Socket and poller system calls of the load threads per request (those made through
    /// ringpoll's sys layer: recv, send, epoll, connect...).
    #[serde(default)]
    pub client_syscalls_per_request: f64,
    /// The run was cut short by Ctrl-C (or the caller's stop flag).
    pub interrupted: bool,
    /// The first error counted in the window, described (`null` when none).
    #[serde(default)]
    pub first_error: Option<String>,
}

/// wrk's unit style: `95.21us`, `10.53ms`, `1.20s`.
#[must_use]
pub fn fmt_us(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.2}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// Binary units: `12.34MB`.
#[must_use]
pub fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2}{}", UNITS[u])
}

impl Report {
    /// The `Running 10s test @ ...` header wrk prints before the run (`Running 1000
    /// requests @ ...` with `-n`), and the warm-up, which is not measured.
    #[must_use]
    pub fn header_for(cfg: &crate::config::LoadConfig) -> String {
        let what = match cfg.max_requests {
            Some(n) if cfg.duration >= std::time::Duration::from_secs(3600) => format!("{n} requests"),
            Some(n) => format!("{n} requests (at most {}s)", trim_f(cfg.duration.as_secs_f64())),
            None => format!("{}s test", trim_f(cfg.duration.as_secs_f64())),
        };
        let mut s =
            format!("Running {what} @ {}\n  {} threads and {} connections", cfg.target, cfg.threads, cfg.connections);
        if !cfg.warmup.is_zero() {
            s.push_str(&format!(" (after a {}s warm-up, not measured)", trim_f(cfg.warmup.as_secs_f64())));
        }
        s
    }

    /// The wrk-like human summary.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  mode {}, depth {}, {} B per request{}{}",
            self.mode,
            self.depth,
            self.size,
            if self.idle > 0 {
                format!(", {} idle connections ({} connected)", self.idle, self.idle_connected)
            } else {
                String::new()
            },
            if self.warmup_s > 0.0 { format!(", after a {}s warm-up", trim_f(self.warmup_s)) } else { String::new() },
        );
        match &self.latency_us {
            Some(l) => self.latency_lines(&mut s, l),
            None => {
                let _ =
                    writeln!(s, "  No successful requests: {} errors, so no latency to report", self.errors.total());
            }
        }
        let _ = writeln!(
            s,
            "  {} successful requests in {:.2}s, {} read, {} written",
            self.requests,
            self.duration_s,
            fmt_bytes(self.bytes_read as f64),
            fmt_bytes(self.bytes_written as f64)
        );
        let e = &self.errors;
        if e.connect + e.read + e.write + e.timeout > 0 {
            let _ = writeln!(
                s,
                "  Socket errors: connect {}, read {}, write {}, timeout {}",
                e.connect, e.read, e.write, e.timeout
            );
        }
        if e.mismatch > 0 {
            let _ = writeln!(s, "  Echo mismatches: {} messages came back with wrong bytes", e.mismatch);
        }
        if e.status > 0 {
            let st = &self.status;
            let _ = writeln!(
                s,
                "  Non-2xx responses: {} (3xx {}, 4xx {}, 5xx {}, other {})",
                e.status, st.s3xx, st.s4xx, st.s5xx, st.other
            );
        }
        if let Some(first) = &self.first_error {
            let _ = writeln!(s, "  First error: {first}");
        }
        if self.incomplete > 0 {
            let _ = writeln!(s, "  Unanswered at the end: {} requests", self.incomplete);
        }
        if let Some(rows) = &self.timeline {
            let _ = writeln!(s, "  Timeline:     t      req/s     p99");
            for r in rows {
                let _ = writeln!(s, "            {:>4}s {:>10.0} {:>10}", r.t, r.rps, fmt_us(r.p99_us as f64));
            }
        }
        let _ = writeln!(s, "Requests/sec: {:>10.2}", self.rps);
        if let (Some(asked), Some(short)) = (self.rate_requested, self.rate_shortfall_pct) {
            let _ = writeln!(s, "Requested:    {asked:>10.2}  ({short:.1}% short)");
        }
        let secs = self.duration_s.max(1e-9);
        let _ = writeln!(s, "Transfer/sec: {:>10}", fmt_bytes(self.bytes_read as f64 / secs));
        let _ = writeln!(
            s,
            "Client CPU:   {:>10.2} us/request, {:.2} syscalls/request",
            self.client_cpu_us_per_request, self.client_syscalls_per_request
        );
        if self.interrupted {
            let _ = writeln!(s, "(interrupted: partial results)");
        }
        s
    }
}

impl Report {
    /// wrk's latency block: average, deviation, maximum, then the distribution (with the
    /// uncorrected column in open loop).
    fn latency_lines(&self, s: &mut String, l: &Latency) {
        let _ = writeln!(s, "  Latency     Avg        Stdev      Max");
        let _ = writeln!(s, "              {:<10} {:<10} {}", fmt_us(l.mean), fmt_us(l.stdev), fmt_us(l.max as f64));
        let corrected = self.rate_requested.is_some();
        let _ = writeln!(s, "  Latency Distribution{}", if corrected { " (corrected; uncorrected)" } else { "" });
        let u = self.latency_uncorrected_us.unwrap_or(*l);
        for (name, c, uc) in [
            ("50%", l.p50, u.p50),
            ("75%", l.p75, u.p75),
            ("90%", l.p90, u.p90),
            ("99%", l.p99, u.p99),
            ("99.9%", l.p999, u.p999),
            ("99.99%", l.p9999, u.p9999),
        ] {
            if corrected {
                let _ = writeln!(s, "  {name:>7}  {:>10}  {:>10}", fmt_us(c as f64), fmt_us(uc as f64));
            } else {
                let _ = writeln!(s, "  {name:>7}  {:>10}", fmt_us(c as f64));
            }
        }
    }
}

fn trim_f(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_look_like_wrk() {
        assert_eq!(fmt_us(95.214), "95.21us");
        assert_eq!(fmt_us(10_530.0), "10.53ms");
        assert_eq!(fmt_us(1_200_000.0), "1.20s");
        assert_eq!(fmt_bytes(1536.0), "1.50KB");
        assert_eq!(trim_f(10.0), "10");
        assert_eq!(trim_f(0.25), "0.25");
    }

    #[test]
    fn json_round_trips_with_status_class_names() {
        let mut r = Report { mode: "http".into(), ..Report::default() };
        r.status.count(204);
        r.status.count(503);
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["status"]["2xx"], 1);
        assert_eq!(j["status"]["5xx"], 1);
        assert!(j.get("timeline").is_none());
        let back: Report = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn empty_histogram_has_no_latency() {
        let h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        assert_eq!(Latency::from_histogram(&h), None);
    }

    #[test]
    fn zero_successes_say_so_without_latency_figures() {
        let mut r = Report { mode: "echo".into(), duration_s: 1.0, ..Report::default() };
        r.errors.mismatch = 1512;
        let text = r.summary();
        assert!(text.contains("No successful requests: 1512 errors"), "{text}");
        assert!(!text.contains("Latency") && !text.contains("us\n"), "{text}");
        let j = serde_json::to_value(&r).unwrap();
        assert!(j["latency_us"].is_null(), "{j}");
    }
}
