//! What every chart shares: the palette, tick formatting, log axes with a tick per decade,
//! panel grids and the colour key.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::results::Results;

/// Distinct colours (Tableau 10, then 10 more that stay apart from them).
const PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(44, 160, 44),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 128, 128),
    RGBColor(255, 215, 0),
    RGBColor(75, 0, 130),
    RGBColor(0, 100, 0),
    RGBColor(255, 99, 71),
    RGBColor(70, 130, 180),
    RGBColor(210, 105, 30),
    RGBColor(0, 0, 0),
];

/// Series colours, assigned once per results file in order of first appearance.
pub struct Palette {
    labels: Vec<String>,
}

impl Palette {
    #[must_use]
    pub fn new(r: &Results) -> Self {
        let mut labels: Vec<String> = Vec::new();
        let all =
            r.cells.iter().filter(|c| c.ok()).map(|c| c.label.clone()).chain(r.sweep.iter().map(|p| p.label.clone()));
        for l in all {
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
        Self { labels }
    }

    #[must_use]
    pub fn color(&self, label: &str) -> RGBColor {
        let i = self.labels.iter().position(|l| l == label).unwrap_or(self.labels.len());
        PALETTE[i % PALETTE.len()]
    }

    #[must_use]
    pub fn labels(&self) -> &[String] {
        &self.labels
    }
}

/// A tick value: integers without decimals, large ones shortened (`250k`, `1.4M`).
#[must_use]
pub fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    if a >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if a >= 1e4 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 100.0 || (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.2}"))
    }
}

/// A log axis drawn on log10 values: the range (whole decades around `lo..hi`) and its key
/// points (every decade, plus 2x and 5x when the range is short).
#[must_use]
pub fn log_axis(lo: f64, hi: f64) -> (std::ops::Range<f64>, Vec<f64>) {
    let a = lo.max(1e-9).log10().floor();
    let b = hi.max(lo * 1.0001).log10().ceil().max(a + 1.0);
    let mut keys = Vec::new();
    let mut d = a;
    while d <= b + 1e-9 {
        keys.push(d);
        if b - a <= 2.0 && d < b {
            keys.push(d + 2f64.log10());
            keys.push(d + 5f64.log10());
        }
        d += 1.0;
    }
    (a..b, keys)
}

/// About five round tick values from 0 to `max` (steps of 1, 2 or 5 times a power of ten).
#[must_use]
pub fn linear_keys(max: f64) -> Vec<f64> {
    if max <= 0.0 {
        return vec![0.0];
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    (0..).map(|i| f64::from(i) * step).take_while(|v| *v <= max).collect()
}

/// Format a key point of [`log_axis`].
#[must_use]
pub fn fmt_log_tick(v: f64) -> String {
    fmt_tick((10f64.powf(v) * 1000.0).round() / 1000.0)
}

/// A linear f64 axis whose ticks are exactly `keys` (plotters' own axes choose their ticks
/// themselves; log axes here are drawn on log10 values with a tick at every decade).
#[derive(Clone, Debug)]
pub struct Keyed {
    range: std::ops::Range<f64>,
    keys: Vec<f64>,
}

impl Keyed {
    #[must_use]
    pub fn new(range: std::ops::Range<f64>, keys: Vec<f64>) -> Self {
        Self { range, keys }
    }
}

impl plotters::coord::ranged1d::Ranged for Keyed {
    type FormatOption = plotters::coord::ranged1d::NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        if span <= 0.0 {
            return (limit.0 + limit.1) / 2;
        }
        let t = (v - self.range.start) / span;
        limit.0 + (f64::from(limit.1 - limit.0) * t + 1e-3).floor() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        // Ticks and grid at the keys only (no light lines in between).
        if hint.max_num_points() == 0 || hint.weight().allow_light_points() {
            return Vec::new();
        }
        self.keys.iter().copied().filter(|k| self.range.contains(k) || *k == self.range.end).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

impl plotters::coord::ranged1d::ValueFormatter<f64> for Keyed {
    fn format(value: &f64) -> String {
        fmt_tick(*value)
    }
}

pub(super) fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("{e}")
}

/// Panels for `n` workloads: 2 columns.
pub(super) fn grid(n: usize) -> (usize, usize) {
    let cols = if n <= 1 { 1 } else { 2 };
    (n.div_ceil(cols).max(1), cols)
}

/// A row of colour keys across the top of a figure (one per series), wrapping as needed;
/// returns the height it needs for `width` pixels.
pub(super) fn legend_height(labels: &[String], width: u32) -> u32 {
    let per_row = (width / 150).max(1) as usize;
    20 * labels.len().div_ceil(per_row).max(1) as u32 + 8
}

pub(super) fn draw_legend(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    pal: &Palette,
    labels: &[String],
) -> Result<()> {
    let (w, _) = area.dim_in_pixel();
    let per_row = (w / 150).max(1) as usize;
    for (i, l) in labels.iter().enumerate() {
        let (x, y) = (10 + 150 * (i % per_row) as i32, 6 + 20 * (i / per_row) as i32);
        area.draw(&Rectangle::new([(x, y + 2), (x + 14, y + 14)], pal.color(l).filled())).map_err(err)?;
        area.draw(&Text::new(l.clone(), (x + 20, y + 1), ("sans-serif", 14))).map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_read_well() {
        assert_eq!(fmt_tick(1_400_000.0), "1.4M");
        assert_eq!(fmt_tick(250_000.0), "250k");
        assert_eq!(fmt_tick(1000.0), "1000");
        assert_eq!(fmt_tick(5.0), "5");
        assert_eq!(fmt_tick(2.5), "2.5");
        assert_eq!(fmt_tick(0.25), "0.25");
        let (range, keys) = log_axis(150.0, 40_000.0);
        assert_eq!((range.start, range.end), (2.0, 5.0));
        assert_eq!(keys.iter().map(|k| fmt_log_tick(*k)).collect::<Vec<_>>(), ["100", "1000", "10k", "100k"]);
        assert_eq!(linear_keys(130_000.0), vec![0.0, 50_000.0, 100_000.0]);
        let (_, keys) = log_axis(300.0, 900.0);
        assert_eq!(keys.iter().map(|k| fmt_log_tick(*k)).collect::<Vec<_>>(), ["100", "200", "500", "1000"]);
    }
}
