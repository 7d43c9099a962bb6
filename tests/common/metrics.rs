//! Scraping `--metrics` and reading it with a real Prometheus text parser (`prometheus-parse`).

use std::io::{Read, Write};
use std::net::SocketAddr;

use prometheus_parse::{Sample, Scrape, Value};

/// One HTTP exchange with the metrics endpoint: (status, head, body).
pub fn request(addr: SocketAddr, req: &str) -> (u16, String, String) {
    let mut s = super::connect(addr);
    s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("metrics request: {e}"));
    finish(&mut s)
}

/// Read a whole `Connection: close` response from `s`: (status, head, body).
pub fn finish(s: &mut std::net::TcpStream) -> (u16, String, String) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap_or_else(|e| panic!("metrics response: {e}"));
    let text = String::from_utf8(raw).expect("metrics text is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head: {text:?}"));
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("status line: {head:?}"));
    (status, head.to_string(), body.to_string())
}

/// The exposition text of `GET /metrics` (asserting 200).
pub fn text(addr: SocketAddr) -> String {
    let (status, head, body) = request(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(status, 200, "GET /metrics: {head}");
    body
}

/// Parse exposition text; every line must be a comment, empty, or a sample the parser took.
pub fn parse(text: &str) -> Scrape {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("prometheus-parse");
    let sample_lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count();
    assert_eq!(scrape.samples.len(), sample_lines, "lines the parser did not take as samples:\n{text}");
    scrape
}

/// Scrape and parse.
pub fn scrape(addr: SocketAddr) -> Scrape {
    parse(&text(addr))
}

/// The numeric value of a counter or gauge sample.
pub fn value(s: &Sample) -> f64 {
    match s.value {
        Value::Counter(v) | Value::Gauge(v) => v,
        ref other => panic!("{}: neither counter nor gauge: {other:?}", s.metric),
    }
}

/// Sum of the samples of `metric` (over workers) whose labels include `labels`.
pub fn sum(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> u64 {
    let mut found = false;
    let total: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .inspect(|_| found = true)
        .map(value)
        .sum();
    assert!(found, "no sample of {metric} with {labels:?}");
    total as u64
}

/// Closes counted with `reason`, over workers.
pub fn closed(scrape: &Scrape, reason: &str) -> u64 {
    sum(scrape, "ringpoll_connections_closed_total", &[("reason", reason)])
}

/// Scrape until `cond` holds (bounded); returns the last scrape.
pub fn wait_for(addr: SocketAddr, what: &str, mut cond: impl FnMut(&Scrape) -> bool) -> Scrape {
    let end = std::time::Instant::now() + super::IO_TIMEOUT;
    loop {
        let s = scrape(addr);
        if cond(&s) {
            return s;
        }
        assert!(std::time::Instant::now() < end, "metrics never showed {what}:\n{}", render(&s));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The samples, one a line, for failure messages.
pub fn render(s: &Scrape) -> String {
    s.samples.iter().map(|x| format!("{}{{{}}} {:?}\n", x.metric, x.labels, x.value)).collect()
}
