//! Every chart rendered from fixed results files (tests/fixtures, made by make.py), and the
//! SVG text checked for what made the old plots hard to read: series sharing a colour, text
//! overlapping other text or clipped at the edge, log axes without labels in some decades,
//! integer ticks written `1400000.0`, bar charts with empty slots, and a verdict chart
//! without its 1.0 mark.

use std::path::{Path, PathBuf};

use ringpoll_compare::plot::{self, Palette};
use ringpoll_compare::results::Results;
use ringpoll_compare::verdicts;

fn fixture(name: &str) -> Results {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{name}.json"));
    let mut r: Results = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    r.verdicts = verdicts::compute(&r);
    if let Some(slo) = r.slo_us {
        r.knees = verdicts::knees(&r, slo);
    }
    r
}

fn render(name: &str) -> (Results, PathBuf, Vec<String>) {
    let r = fixture(name);
    let dir = std::env::temp_dir().join(format!("ringpoll-plots-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = plot::write_all(&r, &dir).unwrap();
    (r, dir, files)
}

/// A `<text>` element: its approximate box (plotters' anchors and rotations applied).
#[derive(Debug)]
struct TextBox {
    text: String,
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let i = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let j = tag[i..].find('"')? + i;
    Some(tag[i..j].to_string())
}

fn texts(svg: &str) -> Vec<TextBox> {
    let mut out = Vec::new();
    for piece in svg.split("<text").skip(1) {
        let Some(close) = piece.find('>') else { continue };
        let tag = &piece[..close];
        let text = piece[close + 1..].split("</text>").next().unwrap_or("").trim().to_string();
        let num = |n: &str| attr(tag, n).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let (x, y, size) = (num("x"), num("y"), num("font-size"));
        // Average glyph width of a sans-serif font, a little generous.
        let w = 0.56 * size * text.chars().count() as f64;
        let h = size;
        let (mut x0, mut x1) = match attr(tag, "text-anchor").as_deref() {
            Some("end") => (x - w, x),
            Some("middle") => (x - w / 2.0, x + w / 2.0),
            _ => (x, x + w),
        };
        let (mut y0, mut y1) = match attr(tag, "dy").as_deref() {
            Some("0.76em") => (y, y + h),
            Some("0.5ex") => (y - h / 2.0, y + h / 2.0),
            _ => (y - h, y),
        };
        if attr(tag, "transform").is_some_and(|t| t.starts_with("rotate(270") || t.starts_with("rotate(90")) {
            // Turned a quarter around (x, y): the box turns with it.
            let (cx, cy) = (x, y);
            let (a0, a1, b0, b1) = (x0 - cx, x1 - cx, y0 - cy, y1 - cy);
            x0 = cx + b0.min(b1);
            x1 = cx + b0.max(b1);
            y0 = cy - a1.max(a0);
            y1 = cy - a0.min(a1);
        }
        out.push(TextBox { text, x0, y0, x1, y1 });
    }
    out
}

fn size(svg: &str) -> (f64, f64) {
    let tag = &svg[svg.find("<svg").unwrap()..];
    let tag = &tag[..tag.find('>').unwrap()];
    (attr(tag, "width").unwrap().parse().unwrap(), attr(tag, "height").unwrap().parse().unwrap())
}

fn check_layout(file: &str, svg: &str) {
    let boxes = texts(svg);
    assert!(!boxes.is_empty(), "{file}: no text");
    let (w, h) = size(svg);
    for b in &boxes {
        assert!(
            b.x0 >= -1.0 && b.x1 <= w + 1.0 && b.y0 >= -1.0 && b.y1 <= h + 1.0,
            "{file}: {b:?} is clipped ({w}x{h})"
        );
        assert!(
            !b.text.chars().next().is_some_and(|c| c.is_ascii_digit()) || !b.text.ends_with(".0"),
            "{file}: integer tick written as {:?}",
            b.text
        );
    }
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let overlap_x = a.x0.max(b.x0) < a.x1.min(b.x1) - 1.0;
            let overlap_y = a.y0.max(b.y0) < a.y1.min(b.y1) - 1.0;
            assert!(!(overlap_x && overlap_y), "{file}: {:?} overlaps {:?}", a, b);
        }
    }
}

fn hex(c: plotters::style::RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

#[test]
fn main_charts_read_at_a_glance() {
    let (r, dir, files) = render("main");
    assert_eq!(files, ["verdicts.svg", "throughput.svg", "cpu.svg", "latency.svg"]);
    let pal = Palette::new(&r);
    let colours: Vec<String> = pal.labels().iter().map(|l| hex(pal.color(l))).collect();
    let mut distinct = colours.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), colours.len(), "every series its own colour: {:?} {colours:?}", pal.labels());
    for f in &files {
        let svg = std::fs::read_to_string(dir.join(f)).unwrap();
        check_layout(f, &svg);
    }
    // Bars: one bar per (workload, server) and one key per server, nothing else in colour.
    let bars = std::fs::read_to_string(dir.join("cpu.svg")).unwrap();
    let filled: usize = colours.iter().map(|c| bars.matches(&format!("fill=\"{c}\"")).count()).sum();
    let ok_cells = r.cells.iter().filter(|c| c.ok()).count();
    assert_eq!(filled, ok_cells + pal.labels().len(), "bars + legend keys, no empty or extra slot");
    let tp = std::fs::read_to_string(dir.join("throughput.svg")).unwrap();
    let ticks: Vec<String> = texts(&tp).into_iter().map(|t| t.text).collect();
    assert!(ticks.iter().any(|t| t.ends_with('M')) && ticks.iter().any(|t| t.ends_with('k')), "{ticks:?}");
    // Latency: the log axis is labelled in every decade the data spans (100 µs .. 10 ms+).
    let lat = std::fs::read_to_string(dir.join("latency.svg")).unwrap();
    let labels: Vec<String> = texts(&lat).into_iter().map(|t| t.text).collect();
    for decade in ["100", "1000", "10k"] {
        assert!(labels.iter().any(|l| l == decade), "no {decade} tick: {labels:?}");
    }
    assert!(labels.iter().any(|l| l == "p99.9"));
    // Verdicts: one row per comparison, 1.0 marked.
    let v = std::fs::read_to_string(dir.join("verdicts.svg")).unwrap();
    assert!(v.contains("echo-64B-c512: uring / epoll") && v.contains("1.0 = same cost"));
    assert!(v.contains("stroke-dasharray") || v.matches("<polyline").count() > 1, "the 1.0 line");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idle_and_sweep_charts_read_at_a_glance() {
    for (name, expect) in [
        ("idle", vec!["idle.svg", "idle-latency.svg"]),
        ("sweep-rate", vec!["curves.svg"]),
        ("sweep-conns", vec!["conns.svg", "conns-p99.svg"]),
    ] {
        let (_, dir, files) = render(name);
        assert_eq!(files, expect);
        for f in &files {
            let svg = std::fs::read_to_string(dir.join(f)).unwrap();
            check_layout(f, &svg);
            let labels: Vec<String> = texts(&svg).into_iter().map(|t| t.text).collect();
            if f.contains("conns") {
                for decade in ["1", "10", "100", "1000", "10k"] {
                    assert!(labels.iter().any(|l| l == decade), "{f}: no {decade} tick: {labels:?}");
                }
            }
            if *f == "curves.svg" {
                assert!(labels.iter().any(|l| l == "SLO 1000"), "{labels:?}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
