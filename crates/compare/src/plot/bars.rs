//! Bar charts: one panel per workload, one bar per server (colour key across the top, so that
//! no server name has to fit under a bar).

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use super::style::{draw_legend, err, fmt_tick, grid, legend_height, Palette};
use crate::results::{Cell, Results};

/// Bars of `metric` per server, one panel per workload. Returns false when there is nothing
/// to draw.
pub fn bars(r: &Results, path: &Path, title: &str, unit: &str, metric: fn(&Cell) -> f64) -> Result<bool> {
    let names: Vec<String> =
        r.workload_names().into_iter().filter(|w| r.cells.iter().any(|c| c.ok() && &c.workload.name == w)).collect();
    if names.is_empty() {
        return Ok(false);
    }
    let pal = Palette::new(r);
    let labels: Vec<String> =
        pal.labels().iter().filter(|l| r.cells.iter().any(|c| c.ok() && &c.label == *l)).cloned().collect();
    let (rows, cols) = grid(names.len());
    let width = 1100;
    let lh = legend_height(&labels, width);
    let root = SVGBackend::new(path, (width, 300 * rows as u32 + 40 + lh)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let (top, panels) = root.split_vertically(lh);
    draw_legend(&top, &pal, &labels)?;
    for (area, w) in panels.split_evenly((rows, cols)).iter().zip(&names) {
        let cells: Vec<&Cell> = r.cells.iter().filter(|c| c.ok() && &c.workload.name == w).collect();
        let max = cells.iter().map(|c| metric(c)).fold(0.0, f64::max).max(1e-9) * 1.15;
        let n = cells.len();
        let mut chart = ChartBuilder::on(area)
            .caption(w, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(8)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n as f64, 0f64..max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(6)
            .y_label_formatter(&|v| fmt_tick(*v))
            .y_desc(unit)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(cells.iter().enumerate().map(|(i, c)| {
                Rectangle::new([(i as f64 + 0.12, 0.0), (i as f64 + 0.88, metric(c))], pal.color(&c.label).filled())
            }))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(true)
}
