//! SVG plots (plotters), written to be read at a glance: one colour per series from a fixed
//! palette (the same server has the same colour in every chart), tick labels that do not
//! collide or get clipped, log axes labelled in every decade, integer ticks without `.0`,
//! and a chart of the verdicts themselves.

mod bars;
mod idle;
mod lines;
mod style;
mod verdict;

use std::path::Path;

use anyhow::Result;

use crate::results::Results;

pub use bars::bars;
pub use idle::{idle, idle_latency};
pub use lines::{conns, curves, latency};
pub use style::{fmt_log_tick, fmt_tick, linear_keys, log_axis, Keyed, Palette};
pub use verdict::verdicts;

/// Every chart for `r` into `dir`; returns the file names.
pub fn write_all(r: &Results, dir: &Path) -> Result<Vec<String>> {
    let mut plots = Vec::new();
    let mut add = |name: &str, f: &dyn Fn(&Path) -> Result<bool>| -> Result<()> {
        if f(&dir.join(name))? {
            plots.push(name.to_string());
        }
        Ok(())
    };
    if r.suite == "idle" {
        add("idle.svg", &|p| idle(r, p))?;
        add("idle-latency.svg", &|p| idle_latency(r, p))?;
    } else if r.suite == "sweep-rate" {
        add("curves.svg", &|p| curves(r, p))?;
    } else if r.suite == "sweep-conns" {
        add("conns.svg", &|p| conns(r, p, false))?;
        add("conns-p99.svg", &|p| conns(r, p, true))?;
    } else {
        add("verdicts.svg", &|p| verdicts(r, p))?;
        add("throughput.svg", &|p| bars(r, p, "requests per second (higher is better)", "req/s", |c| c.median.rps))?;
        add("cpu.svg", &|p| {
            bars(r, p, "server CPU µs per request (lower is better)", "µs", |c| c.median.cpu_us_per_req)
        })?;
        add("latency.svg", &|p| latency(r, p))?;
    }
    Ok(plots)
}
