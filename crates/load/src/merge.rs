//! `ringpoll load merge`: several `--json` reports taken at the same time against one server
//! (from several load machines, or several load processes) combined into one, as if one load
//! generator had produced them all: counts summed, latency percentiles taken from the merged
//! histogram (never averaged).

use anyhow::{bail, Context};

use crate::histogram::{self, latency_histogram};
use crate::report::{Latency, Report};

/// Combine reports of runs that overlapped in time against one server.
///
/// Counts, bytes, connections, threads and client CPU are summed; `rps` is the sum of the
/// rates (each over its own window); the window is the union of the windows; percentiles
/// come from the merged histograms. The timeline is dropped (per-second p99s cannot be
/// merged). Fails when a report has no histogram (made by an older `ringpoll load`) or the
/// reports mix echo and http.
pub fn merge_reports(reports: &[Report]) -> anyhow::Result<Report> {
    let Some(first) = reports.first() else { bail!("nothing to merge") };
    let mut corrected = latency_histogram();
    let mut uncorrected = latency_histogram();
    let mut out = Report {
        target: first.target.clone(),
        addr: first.addr.clone(),
        mode: first.mode.clone(),
        poller: first.poller.clone(),
        depth: first.depth,
        size: first.size,
        rate_requested: Some(0.0),
        warmup_s: first.warmup_s,
        window_start_unix_s: f64::MAX,
        window_end_unix_s: 0.0,
        ..Report::default()
    };
    let mut targets: Vec<&str> = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        if r.mode != first.mode {
            bail!("report {} is {} but report 1 is {}: only runs of one mode can be merged", i + 1, r.mode, first.mode);
        }
        let text = r
            .latency_histogram
            .as_deref()
            .with_context(|| format!("report {} has no latency_histogram (made by an older ringpoll load?)", i + 1))?;
        let h = histogram::decode(text).map_err(|e| anyhow::anyhow!("report {}: {e}", i + 1))?;
        histogram::merge_into(&mut corrected, &h);
        match r.latency_uncorrected_histogram.as_deref() {
            Some(u) => {
                let u = histogram::decode(u).map_err(|e| anyhow::anyhow!("report {}: {e}", i + 1))?;
                histogram::merge_into(&mut uncorrected, &u);
            }
            None => histogram::merge_into(&mut uncorrected, &h),
        }
        if !targets.contains(&r.target.as_str()) {
            targets.push(&r.target);
        }
        out.connections += r.connections;
        out.threads += r.threads;
        out.idle += r.idle;
        out.idle_connected += r.idle_connected;
        out.depth = out.depth.max(r.depth);
        out.warmup_s = out.warmup_s.max(r.warmup_s);
        out.duration_s = out.duration_s.max(r.duration_s);
        out.window_start_unix_s = out.window_start_unix_s.min(r.window_start_unix_s);
        out.window_end_unix_s = out.window_end_unix_s.max(r.window_end_unix_s);
        out.requests += r.requests;
        out.rps += r.rps;
        out.rate_requested = match (out.rate_requested, r.rate_requested) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        out.bytes_read += r.bytes_read;
        out.bytes_written += r.bytes_written;
        out.errors.add(&r.errors);
        out.status.add(&r.status);
        out.connects += r.connects;
        out.incomplete += r.incomplete;
        out.client_cpu_us += r.client_cpu_us;
        out.interrupted |= r.interrupted;
        if out.first_error.is_none() {
            out.first_error.clone_from(&r.first_error);
        }
    }
    out.target = targets.join(", ");
    if out.window_start_unix_s > out.window_end_unix_s {
        out.window_start_unix_s = 0.0;
    }
    out.rate_shortfall_pct =
        out.rate_requested.map(|r| if r > 0.0 { ((1.0 - out.rps / r) * 100.0).max(0.0) } else { 0.0 });
    let per = |total: f64| if out.requests > 0 { total / out.requests as f64 } else { 0.0 };
    out.client_cpu_us_per_request = per(out.client_cpu_us as f64);
    out.client_syscalls_per_request =
        per(reports.iter().map(|r| r.client_syscalls_per_request * r.requests as f64).sum());
    out.latency_us = Latency::from_histogram(&corrected);
    out.latency_uncorrected_us = Latency::from_histogram(&uncorrected);
    out.latency_histogram = Some(histogram::encode(&corrected));
    out.latency_uncorrected_histogram = out.rate_requested.is_some().then(|| histogram::encode(&uncorrected));
    Ok(out)
}

/// Overlap of the reports' windows as a share of the shortest one (1.0: fully concurrent).
/// Merging runs that did not overlap is allowed but the summed rate then means little.
#[must_use]
pub fn window_overlap(reports: &[Report]) -> f64 {
    let start = reports.iter().map(|r| r.window_start_unix_s).fold(f64::MIN, f64::max);
    let end = reports.iter().map(|r| r.window_end_unix_s).fold(f64::MAX, f64::min);
    let shortest = reports.iter().map(|r| r.window_end_unix_s - r.window_start_unix_s).fold(f64::MAX, f64::min);
    if shortest <= 0.0 || reports.is_empty() {
        return 0.0;
    }
    ((end - start) / shortest).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(values: &[u64], start: f64) -> Report {
        let mut h = latency_histogram();
        for &v in values {
            h.record(v).unwrap();
        }
        Report {
            mode: "http".into(),
            target: "http://127.0.0.1:1/".into(),
            requests: values.len() as u64,
            rps: values.len() as f64,
            duration_s: 1.0,
            window_start_unix_s: start,
            window_end_unix_s: start + 1.0,
            latency_us: Latency::from_histogram(&h),
            latency_uncorrected_us: Latency::from_histogram(&h),
            latency_histogram: Some(histogram::encode(&h)),
            connections: 2,
            ..Report::default()
        }
    }

    #[test]
    fn counts_add_and_percentiles_come_from_the_merged_histogram() {
        // 90 fast requests on one machine, 10 slow ones on the other: the merged p50 is fast
        // and the merged p99 is slow, which no average of the two reports' percentiles gives.
        let a = report(&[100; 90], 10.0);
        let b = report(&[10_000; 10], 10.5);
        let m = merge_reports(&[a, b]).unwrap();
        assert_eq!((m.requests, m.connections, m.rps), (100, 4, 100.0));
        let l = m.latency_us.unwrap();
        assert_eq!(l.p50, 100);
        assert!(l.p99 >= 9_990, "{l:?}");
        assert_eq!((m.window_start_unix_s, m.window_end_unix_s), (10.0, 11.5));
        assert_eq!(m.rate_requested, None);
        assert!((window_overlap(&[report(&[1], 10.0), report(&[1], 10.5)]) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn refuses_mixed_modes_and_missing_histograms() {
        let mut a = report(&[1], 0.0);
        let b = report(&[1], 0.0);
        a.mode = "echo".into();
        assert!(merge_reports(&[a.clone(), b.clone()]).unwrap_err().to_string().contains("one mode"));
        a.mode = "http".into();
        a.latency_histogram = None;
        assert!(merge_reports(&[b, a]).unwrap_err().to_string().contains("report 2 has no latency_histogram"));
    }
}
