//! SVG plots (plotters): one panel per workload, one bar or line per server.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::report::{Cell, Results};

fn workloads(r: &Results) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for c in r.cells.iter().filter(|c| c.ok()) {
        if !names.contains(&c.workload.name) {
            names.push(c.workload.name.clone());
        }
    }
    names
}

fn grid(n: usize) -> (usize, usize) {
    let cols = if n <= 1 { 1 } else { 2 };
    (n.div_ceil(cols).max(1), cols)
}

fn color(label: &str, peer: bool) -> RGBColor {
    match label {
        "epoll" => RGBColor(31, 119, 180),
        "uring" => RGBColor(214, 39, 40),
        "poll" => RGBColor(255, 127, 14),
        "select" => RGBColor(148, 103, 189),
        "epoll-lt" => RGBColor(44, 160, 44),
        "epoll-et" => RGBColor(23, 190, 207),
        _ if peer => RGBColor(127, 127, 127),
        _ => RGBColor(188, 189, 34),
    }
}

/// Bars of `metric` per server, one panel per workload.
pub fn bars(r: &Results, path: &Path, title: &str, unit: &str, metric: fn(&Cell) -> f64) -> Result<()> {
    let names = workloads(r);
    let (rows, cols) = grid(names.len());
    let root = SVGBackend::new(path, (1100, 300 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| anyhow!("{e}"))?;
    for (area, w) in root.split_evenly((rows, cols)).iter().zip(&names) {
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.ok() && &c.workload.name == w).collect();
        let max = cells.iter().map(|c| metric(c)).fold(0.0, f64::max).max(1e-9) * 1.15;
        let labels: Vec<String> = cells.iter().map(|c| c.label.clone()).collect();
        let mut chart = ChartBuilder::on(area)
            .caption(w, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(60)
            .build_cartesian_2d((0..cells.len()).into_segmented(), 0f64..max)
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(unit)
            .x_labels(cells.len().max(1))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .draw_series(cells.iter().enumerate().map(|(i, c)| {
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), metric(c))],
                    color(&c.label, c.peer).filled(),
                );
                bar.set_margin(0, 0, 6, 6);
                bar
            }))
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Latency percentiles (log scale), one line per server, one panel per workload.
pub fn latency(r: &Results, path: &Path) -> Result<()> {
    let names = workloads(r);
    let (rows, cols) = grid(names.len());
    let root = SVGBackend::new(path, (1100, 300 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let root = root.titled("latency percentiles (µs, log scale)", ("sans-serif", 22)).map_err(|e| anyhow!("{e}"))?;
    let pct = ["p50", "p90", "p99", "p99.9"];
    for (area, w) in root.split_evenly((rows, cols)).iter().zip(&names) {
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.ok() && &c.workload.name == w).collect();
        let pts = |c: &Cell| [c.median.p50_us, c.median.p90_us, c.median.p99_us, c.median.p999_us];
        let hi = cells.iter().flat_map(|c| pts(c)).fold(1.0, f64::max) * 1.5;
        let lo = cells.iter().flat_map(|c| pts(c)).filter(|v| *v > 0.0).fold(hi, f64::min).max(1.0) / 1.5;
        let mut chart = ChartBuilder::on(area)
            .caption(w, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..3.0, (lo..hi).log_scale())
            .map_err(|e| anyhow!("{e}"))?;
        chart
            .configure_mesh()
            .x_labels(4)
            .x_label_formatter(&|x| pct.get(x.round() as usize).map_or(String::new(), |s| (*s).to_string()))
            .y_desc("µs")
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
        for c in cells {
            let col = color(&c.label, c.peer);
            let line: Vec<(f64, f64)> = pts(c).iter().enumerate().map(|(i, v)| (i as f64, v.max(lo))).collect();
            chart
                .draw_series(LineSeries::new(line.clone(), col.stroke_width(2)))
                .map_err(|e| anyhow!("{e}"))?
                .label(c.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
            chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, col.filled()))).map_err(|e| anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// The idle-connection experiment: CPU µs per active round trip against idle connections.
pub fn idle(r: &Results, path: &Path) -> Result<()> {
    let mut servers: Vec<String> = Vec::new();
    for c in r.cells.iter().filter(|c| c.ok()) {
        if !servers.contains(&c.label) {
            servers.push(c.label.clone());
        }
    }
    let max_idle = r.cells.iter().map(|c| c.workload.idle).max().unwrap_or(0).max(1) as f64;
    let max_cpu =
        r.cells.iter().filter(|c| c.ok()).map(|c| c.median.cpu_us_per_req).fold(0.0, f64::max).max(1e-9) * 1.15;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("server CPU per active round trip vs idle connections (64 active, 64 B echo)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_idle * 1.05, 0f64..max_cpu)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("idle connections")
        .y_desc("server CPU µs per round trip")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for s in servers {
        let mut pts: Vec<(f64, f64)> = r
            .cells
            .iter()
            .filter(|c| c.ok() && c.label == s)
            .map(|c| (c.workload.idle as f64, c.median.cpu_us_per_req))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let col = color(&s, false);
        chart
            .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(s)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled()))).map_err(|e| anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
