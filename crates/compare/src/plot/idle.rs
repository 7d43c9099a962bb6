//! The idle-connection experiment: server CPU per round trip (`idle.svg`) and the round
//! trip's p50 and p99 (`idle-latency.svg`, log scale) against the idle connections held open,
//! one panel per count of active connections, one line per server. The idle counts are
//! evenly spaced categories (0, 200, 1000, 10000 would crowd a linear axis; 0 has no log).

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::lines::{figure, legend, line, panels};
use super::style::{err, fmt_log_tick, fmt_tick, linear_keys, log_axis, Keyed, Palette};
use crate::results::{Cell, Results};

/// Active counts in the run, ascending, and the idle counts (the categories of the x axis).
fn levels(r: &Results) -> (Vec<usize>, Vec<usize>) {
    let mut active: Vec<usize> = r.cells.iter().filter(|c| c.ok()).map(|c| c.workload.conns).collect();
    let mut idle: Vec<usize> = r.cells.iter().filter(|c| c.ok()).map(|c| c.workload.idle).collect();
    active.sort_unstable();
    active.dedup();
    idle.sort_unstable();
    idle.dedup();
    (active, idle)
}

fn x_axis(idle: &[usize]) -> Keyed {
    Keyed::new(-0.4f64..idle.len() as f64 - 0.6, (0..idle.len()).map(|i| i as f64).collect())
}

/// One server's points in one panel: (index of its idle count, value).
fn points(r: &Results, label: &str, active: usize, idle: &[usize], f: fn(&Cell) -> f64) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = r
        .cells
        .iter()
        .filter(|c| c.ok() && c.label == label && c.workload.conns == active && f(c) > 0.0)
        .filter_map(|c| Some((idle.iter().position(|&n| n == c.workload.idle)? as f64, f(c))))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

fn caption(active: usize) -> String {
    format!("{active} active connection{} (64 B echo)", if active == 1 { "" } else { "s" })
}

/// CPU µs per active round trip against idle connections.
pub fn idle(r: &Results, path: &Path) -> Result<bool> {
    let (active, idle) = levels(r);
    if active.is_empty() {
        return Ok(false);
    }
    let pal = Palette::new(r);
    let root = figure(path, "server CPU per active round trip against idle connections", active.len())?;
    for (area, &a) in panels(&root, active.len()).iter().zip(&active) {
        let ymax = r
            .cells
            .iter()
            .filter(|c| c.ok() && c.workload.conns == a)
            .map(|c| c.median.cpu_us_per_req)
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(caption(a), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x_axis(&idle), Keyed::new(0.0..ymax, linear_keys(ymax)))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| idle.get(x.round() as usize).map_or(String::new(), |n| fmt_tick(*n as f64)))
            .y_label_formatter(&|v| fmt_tick(*v))
            .x_desc("idle connections")
            .y_desc("CPU µs per round trip")
            .draw()
            .map_err(err)?;
        for l in pal.labels() {
            let pts = points(r, l, a, &idle, |c| c.median.cpu_us_per_req);
            if !pts.is_empty() {
                line(&mut chart, pts, pal.color(l), l)?;
            }
        }
        legend(&mut chart)?;
    }
    root.present().map_err(err)?;
    Ok(true)
}

/// Round-trip p50 (solid) and p99 (dashed) against idle connections, log scale.
pub fn idle_latency(r: &Results, path: &Path) -> Result<bool> {
    let (active, idle) = levels(r);
    if active.is_empty() {
        return Ok(false);
    }
    let pal = Palette::new(r);
    let root = figure(path, "round-trip p50 (solid) and p99 (dashed) against idle connections", active.len())?;
    for (area, &a) in panels(&root, active.len()).iter().zip(&active) {
        let vals: Vec<f64> = r
            .cells
            .iter()
            .filter(|c| c.ok() && c.workload.conns == a)
            .flat_map(|c| [c.median.p50_us, c.median.p99_us])
            .filter(|v| *v > 0.0)
            .collect();
        let (yr, keys) =
            log_axis(vals.iter().copied().fold(f64::MAX, f64::min), vals.iter().copied().fold(1.0, f64::max));
        let mut chart = ChartBuilder::on(area)
            .caption(caption(a), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x_axis(&idle), Keyed::new(yr, keys))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| idle.get(x.round() as usize).map_or(String::new(), |n| fmt_tick(*n as f64)))
            .y_label_formatter(&|v| fmt_log_tick(*v))
            .x_desc("idle connections")
            .y_desc("µs")
            .draw()
            .map_err(err)?;
        for l in pal.labels() {
            let p50: Vec<(f64, f64)> =
                points(r, l, a, &idle, |c| c.median.p50_us).into_iter().map(|(x, y)| (x, y.log10())).collect();
            if p50.is_empty() {
                continue;
            }
            line(&mut chart, p50, pal.color(l), l)?;
            let p99: Vec<(f64, f64)> =
                points(r, l, a, &idle, |c| c.median.p99_us).into_iter().map(|(x, y)| (x, y.log10())).collect();
            let col = pal.color(l);
            chart.draw_series(DashedLineSeries::new(p99, 5, 4, col.stroke_width(1))).map_err(err)?;
        }
        legend(&mut chart)?;
    }
    root.present().map_err(err)?;
    Ok(true)
}
