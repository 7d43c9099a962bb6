//! The verdicts as a chart: for each workload and comparison, the ratio of CPU per request
//! with its 95% interval, against a marked 1.0 (same cost).

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::style::{err, fmt_tick, Keyed, Palette};
use crate::results::{Metric, Results};

/// One row per process-CPU verdict with an interval. Returns false when there is none.
pub fn verdicts(r: &Results, path: &Path) -> Result<bool> {
    let rows: Vec<_> =
        r.verdicts.iter().filter(|v| v.metric == Metric::ProcessCpu).filter_map(|v| Some((v, v.interval?))).collect();
    if rows.is_empty() {
        return Ok(false);
    }
    let pal = Palette::new(r);
    let lo = rows.iter().map(|(_, iv)| iv.lo).fold(1.0, f64::min).min(0.9) * 0.95;
    let hi = rows.iter().map(|(_, iv)| iv.hi).fold(1.0, f64::max).max(1.1) * 1.05;
    let labels: Vec<String> = rows.iter().map(|(v, _)| format!("{}: {} / {}", v.workload, v.a, v.b)).collect();
    let longest = labels.iter().map(String::len).max().unwrap_or(10) as u32;
    let n = rows.len();
    let root = SVGBackend::new(path, (1100, 22 * n as u32 + 120)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("CPU per request, ratio with 95% CI (left of 1.0: the first server is cheaper)", ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(longest * 7 + 20)
        .build_cartesian_2d(lo..hi, Keyed::new(-0.5f64..n as f64 - 0.5, (0..n).map(|i| i as f64).collect()))
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(8)
        .x_label_formatter(&|v| fmt_tick(*v))
        .y_label_formatter(&|v| labels.get(v.round() as usize).cloned().unwrap_or_default())
        .x_desc("ratio of server CPU per request over paired rounds (dashed: 1.0 = same cost)")
        .draw()
        .map_err(err)?;
    let one = BLACK.mix(0.6);
    chart
        .draw_series(DashedLineSeries::new(vec![(1.0, -0.5), (1.0, n as f64 - 0.5)], 6, 4, one.stroke_width(2)))
        .map_err(err)?;
    for (i, (v, iv)) in rows.iter().enumerate() {
        let y = i as f64;
        let col = pal.color(&v.a);
        chart.draw_series(LineSeries::new(vec![(iv.lo, y), (iv.hi, y)], col.stroke_width(3))).map_err(err)?;
        chart.draw_series(std::iter::once(Circle::new((iv.ratio, y), 5, col.filled()))).map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(true)
}
