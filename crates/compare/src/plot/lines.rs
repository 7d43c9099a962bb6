//! Line charts: latency percentiles per server and the
//! sweeps (latency against achieved throughput; throughput and p99 against connections).

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::style::{err, fmt_log_tick, fmt_tick, grid, log_axis, Keyed, Palette};
use crate::results::{Cell, Results, SweepKind};

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

pub(super) fn panels<'a>(root: &Area<'a>, n: usize) -> Vec<Area<'a>> {
    let (rows, cols) = grid(n);
    root.split_evenly((rows, cols))
}

pub(super) fn legend<'a, CT: CoordTranslate>(chart: &mut ChartContext<'a, SVGBackend<'a>, CT>) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)
}

/// One line of `(x, y)` points in `col`, with markers and a legend entry.
pub(super) fn line<'a, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    pts: Vec<(f64, f64)>,
    col: RGBColor,
    label: &str,
) -> Result<()> {
    chart
        .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
        .map_err(err)?
        .label(label.to_string())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
    chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, col.filled()))).map_err(err)?;
    Ok(())
}

pub(super) fn figure<'a>(path: &'a Path, title: &str, n: usize) -> Result<Area<'a>> {
    let (rows, _) = grid(n);
    let root = SVGBackend::new(path, (1100, 320 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    root.titled(title, ("sans-serif", 22)).map_err(err)
}

/// Latency percentiles (log scale), one line per server, one panel per workload.
pub fn latency(r: &Results, path: &Path) -> Result<bool> {
    let names: Vec<String> =
        r.workload_names().into_iter().filter(|w| r.cells.iter().any(|c| c.ok() && &c.workload.name == w)).collect();
    if names.is_empty() {
        return Ok(false);
    }
    let pal = Palette::new(r);
    let root = figure(path, "latency percentiles (µs, log scale, merged histograms)", names.len())?;
    let pct = ["p50", "p90", "p99", "p99.9"];
    for (area, w) in panels(&root, names.len()).iter().zip(&names) {
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.ok() && &c.workload.name == w).collect();
        let pts = |c: &Cell| [c.median.p50_us, c.median.p90_us, c.median.p99_us, c.median.p999_us];
        let vals: Vec<f64> = cells.iter().flat_map(|c| pts(c)).filter(|v| *v > 0.0).collect();
        let (yr, keys) =
            log_axis(vals.iter().copied().fold(f64::MAX, f64::min), vals.iter().copied().fold(1.0, f64::max));
        let mut chart = ChartBuilder::on(area)
            .caption(w, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(Keyed::new(-0.4f64..3.4, vec![0.0, 1.0, 2.0, 3.0]), Keyed::new(yr, keys))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| pct.get(x.round() as usize).map_or(String::new(), |s| (*s).to_string()))
            .y_label_formatter(&|v| fmt_log_tick(*v))
            .y_desc("µs")
            .draw()
            .map_err(err)?;
        for c in cells {
            // wrk gives no p99.9: its line stops at p99.
            let line_pts: Vec<(f64, f64)> =
                pts(c).iter().enumerate().filter(|(_, v)| **v > 0.0).map(|(i, v)| (i as f64, v.log10())).collect();
            line(&mut chart, line_pts, pal.color(&c.label), &c.label)?;
        }
        legend(&mut chart)?;
    }
    root.present().map_err(err)?;
    Ok(true)
}

/// `--sweep rate`: corrected p99 against achieved throughput, one line per server, one
/// panel per workload, log latency axis, the SLO marked.
pub fn curves(r: &Results, path: &Path) -> Result<bool> {
    let names = r.workload_names();
    let pts_of = |w: &str, label: &str| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = r
            .sweep
            .iter()
            .filter(|p| p.workload == w && p.label == label && p.kind == SweepKind::Rate)
            .filter_map(|p| p.run.as_ref().filter(|x| x.p99_us > 0.0).map(|x| (x.rps, x.p99_us)))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    if !r.sweep.iter().any(|p| p.kind == SweepKind::Rate && p.run.is_some()) {
        return Ok(false);
    }
    let pal = Palette::new(r);
    let slo = r.slo_us.unwrap_or(1000.0);
    let root = figure(path, "p99 latency (corrected) against achieved throughput, open loop", names.len())?;
    for (area, w) in panels(&root, names.len()).iter().zip(&names) {
        let all: Vec<(f64, f64)> = pal.labels().iter().flat_map(|l| pts_of(w, l)).collect();
        let xmax = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05;
        let lo = all.iter().map(|p| p.1).fold(slo, f64::min);
        let hi = all.iter().map(|p| p.1).fold(slo, f64::max);
        let (yr, keys) = log_axis(lo, hi);
        let mut chart = ChartBuilder::on(area)
            .caption(w, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, Keyed::new(yr, keys))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_labels(6)
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| fmt_log_tick(*v))
            .x_desc("achieved req/s")
            .y_desc("p99 µs")
            .draw()
            .map_err(err)?;
        let grey = BLACK.mix(0.5);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, slo.log10()), (xmax, slo.log10())],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(err)?
            .label(format!("SLO {}", fmt_tick(slo)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey.stroke_width(1)));
        for l in pal.labels() {
            let pts: Vec<(f64, f64)> = pts_of(w, l).into_iter().map(|(x, y)| (x, y.log10())).collect();
            if !pts.is_empty() {
                line(&mut chart, pts, pal.color(l), l)?;
            }
        }
        legend(&mut chart)?;
    }
    root.present().map_err(err)?;
    Ok(true)
}

/// `--sweep conns`: throughput (or p99 when `p99`) against connections (log axis).
pub fn conns(r: &Results, path: &Path, p99: bool) -> Result<bool> {
    let names = r.workload_names();
    if !r.sweep.iter().any(|p| p.kind == SweepKind::Conns && p.run.is_some()) {
        return Ok(false);
    }
    let pal = Palette::new(r);
    let title = if p99 {
        "p99 latency against connections (closed loop)"
    } else {
        "throughput against connections (closed loop)"
    };
    let root = figure(path, title, names.len())?;
    let value = |x: &crate::results::Run| if p99 { x.p99_us } else { x.rps };
    for (area, w) in panels(&root, names.len()).iter().zip(&names) {
        let pts_of = |label: &str| -> Vec<(f64, f64)> {
            r.sweep
                .iter()
                .filter(|p| &p.workload == w && p.label == label && p.kind == SweepKind::Conns)
                .filter_map(|p| p.run.as_ref().filter(|x| value(x) > 0.0).map(|x| (p.value.log10(), value(x))))
                .collect()
        };
        let all: Vec<(f64, f64)> = pal.labels().iter().flat_map(|l| pts_of(l)).collect();
        let (xr, xkeys) = log_axis(1.0, all.iter().map(|p| 10f64.powf(p.0)).fold(10.0, f64::max));
        let ymax = all.iter().map(|p| p.1).fold(1.0, f64::max);
        let (yr, ykeys) = if p99 {
            log_axis(all.iter().map(|p| p.1).fold(f64::MAX, f64::min), ymax)
        } else {
            (0.0..ymax * 1.1, super::style::linear_keys(ymax * 1.1))
        };
        let y_coord = Keyed::new(yr, ykeys);
        let mut chart = ChartBuilder::on(area)
            .caption(w, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(Keyed::new(xr, xkeys), y_coord)
            .map_err(err)?;
        let (yfmt, ydesc): (fn(&f64) -> String, &str) =
            if p99 { (|v| fmt_log_tick(*v), "p99 µs") } else { (|v| fmt_tick(*v), "req/s") };
        chart
            .configure_mesh()
            .y_labels(6)
            .x_label_formatter(&|v| fmt_log_tick(*v))
            .y_label_formatter(&yfmt)
            .x_desc("connections")
            .y_desc(ydesc)
            .draw()
            .map_err(err)?;
        for l in pal.labels() {
            let pts: Vec<(f64, f64)> =
                pts_of(l).into_iter().map(|(x, y)| (x, if p99 { y.log10() } else { y })).collect();
            if !pts.is_empty() {
                line(&mut chart, pts, pal.color(l), l)?;
            }
        }
        legend(&mut chart)?;
    }
    root.present().map_err(err)?;
    Ok(true)
}
