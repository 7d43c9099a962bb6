//! `--config FILE`: the server's settings in TOML, for several listeners and upstream groups.
//!
//! ```toml
//! backend = "epoll"
//! workers = 2
//! shutdown_timeout = "5s"
//! metrics = "127.0.0.1:9100"
//! access_log = "-"              # or a path
//! access_log_format = "json"
//!
//! [[listener]]
//! listen = "127.0.0.1:9000"
//! mode = "proxy"
//! upstream_group = "app"
//! accept_proxy = false
//! idle_timeout = "600s"
//!
//! [[listener]]
//! listen = "127.0.0.1:8080"
//! mode = "http"
//! header_timeout = "10s"
//!
//! [upstream_group.app]
//! upstreams = ["127.0.0.1:8081@3", "127.0.0.1:8082"]
//! balance = "least-conn"
//! health_interval = "2s"
//! send_proxy = "v2"
//!
//! [uring]                       # the io_uring backend's knobs (the --uring-* flags)
//! bufs = 1024
//! buf_size = "16KiB"
//! fixed_files = true            # techniques: true/false or "on"/"off"
//! bundle = "on"
//! echo_zero_copy = false
//! buf_inc = false
//! sqpoll = false
//! reg_wait = false
//! huge_pages = false
//! ```
//!
//! Every setting a flag can say has a key of the same name (underscores for dashes). Unknown
//! keys, wrong types and unknown group names are errors naming the file, line and key, before
//! anything listens.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ringpoll_proto::proxy_protocol::Version;
use ringpoll_proto::upstream::{Passive, Strategy};
use serde::de::{self, Deserializer};
use serde::Deserialize;
use toml::Spanned;

use super::values::{Addr, Count, Dur, Size, Switch, UpstreamSpec};
use super::{off_if_zero, AccessLogConfig, Backend, Config, Group, Listener, Mode};
use crate::accesslog::Format;
use crate::health::ActiveCheck;

/// Read and check a configuration file (not yet [`Config::validate`]d).
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&text).map_err(|e| render(&path.display().to_string(), &text, e))
}

/// `FILE:LINE: `KEY`: message`, as far as the error says where.
fn render(file: &str, text: &str, (span, msg): Error) -> String {
    match span {
        Some(at) => {
            let (line, key) = locate(text, at);
            match key {
                // Name the key when the message does not (a bad value, a duplicate).
                Some(k) if !msg.contains(&format!("`{k}`")) => format!("{file}:{line}: `{k}`: {msg}"),
                _ => format!("{file}:{line}: {msg}"),
            }
        }
        None => format!("{file}: {msg}"),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The line of `offset`, and the key whose value is there: the nearest `key =` at or above it
/// within its table (a value may span lines, as an array does).
fn locate(text: &str, offset: usize) -> (usize, Option<&str>) {
    let line = line_of(text, offset);
    let key = text.lines().take(line).collect::<Vec<_>>().into_iter().rev().find_map(|l| {
        let l = l.trim_start();
        if l.starts_with('[') {
            return Some(None);
        }
        let (k, _) = l.split_once('=')?;
        let k = k.trim();
        (!k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'))
            .then_some(Some(k))
    });
    (line, key.flatten())
}

type Error = (Option<usize>, String);

fn backend<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Backend>, D::Error> {
    Option::<String>::deserialize(d)?.map(|s| Backend::parse(&s).map_err(de::Error::custom)).transpose()
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    Mode::parse(&String::deserialize(d)?).map_err(de::Error::custom)
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum BalanceName {
    RoundRobin,
    LeastConn,
    Hash,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProxyVersion {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum FormatName {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RelayName {
    Copy,
    ZeroCopy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UringSection {
    bufs: Option<u16>,
    buf_size: Option<Size>,
    sq_entries: Option<u32>,
    relay: Option<RelayName>,
    send_zc_min: Option<Size>,
    fixed_files: Option<Switch>,
    bundle: Option<Switch>,
    echo_zero_copy: Option<Switch>,
    buf_inc: Option<Switch>,
    sqpoll: Option<Switch>,
    reg_wait: Option<Switch>,
    huge_pages: Option<Switch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerSection {
    listen: Addr,
    #[serde(deserialize_with = "mode")]
    mode: Mode,
    upstream_group: Option<Spanned<String>>,
    idle_timeout: Option<Dur>,
    header_timeout: Option<Dur>,
    body_timeout: Option<Dur>,
    keepalive_timeout: Option<Dur>,
    send_timeout: Option<Dur>,
    keepalive_requests: Option<u32>,
    max_body: Option<Size>,
    connect_timeout: Option<Dur>,
    half_close_timeout: Option<Dur>,
    proxy_header_timeout: Option<Dur>,
    high_watermark: Option<Size>,
    low_watermark: Option<Size>,
    #[serde(default)]
    accept_proxy: bool,
    #[serde(default)]
    splice: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSection {
    upstreams: Vec<UpstreamSpec>,
    balance: Option<BalanceName>,
    max_fails: Option<u32>,
    fail_timeout: Option<Dur>,
    health_interval: Option<Dur>,
    health_rise: Option<Count>,
    health_fall: Option<Count>,
    health_timeout: Option<Dur>,
    send_proxy: Option<ProxyVersion>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, deserialize_with = "backend")]
    backend: Option<Backend>,
    workers: Option<Count>,
    pin: Option<bool>,
    max_conns: Option<u64>,
    shutdown_timeout: Option<Dur>,
    metrics: Option<Addr>,
    access_log: Option<String>,
    access_log_format: Option<FormatName>,
    #[serde(default)]
    uring: UringSection,
    #[serde(default)]
    listener: Vec<Spanned<ListenerSection>>,
    #[serde(default)]
    upstream_group: BTreeMap<String, Spanned<GroupSection>>,
}

fn parse(text: &str) -> Result<Config, Error> {
    let f: FileConfig = toml::from_str(text).map_err(|e| (e.span().map(|s| s.start), e.message().to_string()))?;
    let Some(first) = f.listener.first() else {
        return Err((None, "no [[listener]] section: nothing to listen on".into()));
    };
    let mut cfg = Config::new(first.get_ref().listen.0, Mode::Echo, f.backend.unwrap_or(Backend::Epoll));
    cfg.listeners.clear();

    let names: Vec<&String> = f.upstream_group.keys().collect();
    for (name, g) in &f.upstream_group {
        cfg.groups.push(group(name, g)?);
    }
    for l in &f.listener {
        cfg.listeners.push(listener(l, &names, &f.upstream_group)?);
    }
    if let Some(w) = f.workers {
        cfg.workers = w.0 as usize;
    }
    if let Some(p) = f.pin {
        cfg.pin = p;
    }
    if let Some(n) = f.max_conns {
        cfg.max_conns = usize::try_from(n).unwrap_or(usize::MAX);
    }
    if let Some(d) = f.shutdown_timeout {
        cfg.shutdown_timeout = d.0;
    }
    cfg.metrics = f.metrics.map(|a| a.0);
    if let Some(path) = f.access_log {
        let format = match f.access_log_format {
            Some(FormatName::Json) => Format::Json,
            _ => Format::Text,
        };
        cfg.access_log = Some(AccessLogConfig { path, format });
    }
    let u = &mut cfg.uring;
    if let Some(n) = f.uring.bufs {
        u.buf_count = n;
    }
    if let Some(s) = f.uring.buf_size {
        u.buf_size = u32::try_from(s.0).map_err(|_| (None, "uring.buf_size: at most 4GiB".to_string()))?;
    }
    if let Some(n) = f.uring.sq_entries {
        u.sq_entries = n;
    }
    if let Some(r) = f.uring.relay {
        u.zero_copy_relay = matches!(r, RelayName::ZeroCopy);
    }
    if let Some(s) = f.uring.send_zc_min {
        u.send_zc_min = usize::try_from(s.0).unwrap_or(usize::MAX);
    }
    for (slot, key) in [
        (&mut u.fixed_files, f.uring.fixed_files),
        (&mut u.bundle, f.uring.bundle),
        (&mut u.echo_zero_copy, f.uring.echo_zero_copy),
        (&mut u.buf_inc, f.uring.buf_inc),
        (&mut u.sqpoll, f.uring.sqpoll),
        (&mut u.reg_wait, f.uring.reg_wait),
        (&mut u.huge_pages, f.uring.huge_pages),
    ] {
        if let Some(Switch(on)) = key {
            *slot = on;
        }
    }
    Ok(cfg)
}

fn group(name: &str, g: &Spanned<GroupSection>) -> Result<Group, Error> {
    let at = Some(g.span().start);
    let s = g.get_ref();
    let mut out = Group::new(name, s.upstreams.iter().map(|u| u.0).collect());
    out.strategy = match s.balance {
        None | Some(BalanceName::RoundRobin) => Strategy::RoundRobin,
        Some(BalanceName::LeastConn) => Strategy::LeastConn,
        Some(BalanceName::Hash) => Strategy::Hash,
    };
    let d = Passive::default();
    out.passive = Passive {
        max_fails: s.max_fails.unwrap_or(d.max_fails),
        fail_timeout: s.fail_timeout.map_or(d.fail_timeout, |x| x.0),
    };
    match s.health_interval.and_then(|d| off_if_zero(d.0)) {
        Some(interval) => {
            out.active = Some(ActiveCheck {
                interval,
                rise: s.health_rise.map_or(2, |c| c.0),
                fall: s.health_fall.map_or(3, |c| c.0),
                timeout: s.health_timeout.map_or(Duration::from_secs(1).min(interval), |t| t.0),
            });
        }
        None if s.health_rise.is_some() || s.health_fall.is_some() || s.health_timeout.is_some() => {
            return Err((
                at,
                format!("upstream_group.{name}: health_rise/health_fall/health_timeout need health_interval"),
            ));
        }
        None => {}
    }
    Ok(out)
}

fn listener(
    l: &Spanned<ListenerSection>,
    names: &[&String],
    groups: &BTreeMap<String, Spanned<GroupSection>>,
) -> Result<Listener, Error> {
    let at = Some(l.span().start);
    let s = l.get_ref();
    let mut out = Listener::new(s.listen.0, s.mode);
    let only = |key: &str, given: bool, modes: &[Mode]| -> Result<(), Error> {
        if given && !modes.contains(&s.mode) {
            return Err((at, format!("listener {}: `{key}` does not apply to mode {}", s.listen.0, s.mode.name())));
        }
        Ok(())
    };
    only("header_timeout", s.header_timeout.is_some(), &[Mode::Http])?;
    only("body_timeout", s.body_timeout.is_some(), &[Mode::Http])?;
    only("keepalive_timeout", s.keepalive_timeout.is_some(), &[Mode::Http])?;
    only("keepalive_requests", s.keepalive_requests.is_some(), &[Mode::Http])?;
    only("max_body", s.max_body.is_some(), &[Mode::Http])?;
    only("send_timeout", s.send_timeout.is_some(), &[Mode::Echo, Mode::Http])?;
    only("upstream_group", s.upstream_group.is_some(), &[Mode::Proxy])?;
    only("connect_timeout", s.connect_timeout.is_some(), &[Mode::Proxy])?;
    only("half_close_timeout", s.half_close_timeout.is_some(), &[Mode::Proxy])?;
    only("proxy_header_timeout", s.proxy_header_timeout.is_some(), &[Mode::Proxy])?;
    only("accept_proxy", s.accept_proxy, &[Mode::Proxy])?;
    only("splice", s.splice, &[Mode::Proxy])?;

    let t = &mut out.stream.timeouts;
    let set = |slot: &mut Option<Duration>, v: Option<Dur>| {
        if let Some(d) = v {
            *slot = off_if_zero(d.0);
        }
    };
    set(&mut t.header, s.header_timeout);
    set(&mut t.body, s.body_timeout);
    set(&mut t.keepalive, s.keepalive_timeout);
    set(&mut t.send, s.send_timeout);
    set(&mut t.idle, s.idle_timeout);
    set(&mut out.pair.timeouts.idle, s.idle_timeout);
    set(&mut out.pair.timeouts.half_close, s.half_close_timeout);
    if let Some(d) = s.connect_timeout {
        out.pair.timeouts.connect = d.0;
    }
    if let Some(d) = s.proxy_header_timeout {
        out.pair.timeouts.proxy_header = d.0;
    }
    if let Some(n) = s.keepalive_requests {
        out.stream.limits.keepalive_requests = n;
    }
    if let Some(n) = s.max_body {
        out.stream.limits.max_body = n.0;
    }
    for w in [&mut out.stream.watermarks, &mut out.pair.watermarks] {
        if let Some(h) = s.high_watermark {
            w.high = usize::try_from(h.0).unwrap_or(usize::MAX);
        }
        if let Some(lo) = s.low_watermark {
            w.low = usize::try_from(lo.0).unwrap_or(usize::MAX);
        }
    }
    out.pair.accept_proxy = s.accept_proxy;
    out.splice = s.splice;
    if s.mode == Mode::Proxy {
        let Some(name) = &s.upstream_group else {
            return Err((at, format!("listener {}: mode proxy needs `upstream_group`", s.listen.0)));
        };
        let Some(i) = names.iter().position(|n| *n == name.get_ref()) else {
            let known: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            return Err((
                Some(name.span().start),
                format!("no [upstream_group.{}] (defined: {})", name.get_ref(), known.join(", ")),
            ));
        };
        out.group = Some(i);
        out.pair.send_proxy = groups.get(name.get_ref()).and_then(|g| g.get_ref().send_proxy).map(|v| match v {
            ProxyVersion::V1 => Version::V1,
            ProxyVersion::V2 => Version::V2,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
backend = "epoll"
workers = 1
shutdown_timeout = "2s"
access_log = "-"
access_log_format = "json"

[[listener]]
listen = "127.0.0.1:0"
mode = "proxy"
upstream_group = "app"
accept_proxy = true
idle_timeout = "90s"
high_watermark = "128KiB"

[[listener]]
listen = "localhost:0"
mode = "http"
header_timeout = 5
keepalive_requests = 100

[upstream_group.app]
upstreams = ["127.0.0.1:8081@3", { addr = "127.0.0.1:8082", weight = 1 }]
balance = "least-conn"
health_interval = "2s"
send_proxy = "v2"
"#;

    #[test]
    fn the_example_parses_into_two_listeners_and_a_group() {
        let c = parse(EXAMPLE).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listeners.len(), 2);
        let p = &c.listeners[0];
        assert_eq!((p.mode, p.group, p.pair.accept_proxy), (Mode::Proxy, Some(0), true));
        assert_eq!(p.pair.send_proxy, Some(Version::V2));
        assert_eq!(p.pair.timeouts.idle, Some(Duration::from_secs(90)));
        assert_eq!(p.pair.watermarks.high, 128 * 1024);
        let h = &c.listeners[1];
        assert_eq!(h.stream.timeouts.header, Some(Duration::from_secs(5)));
        assert_eq!(h.stream.limits.keepalive_requests, 100);
        let g = &c.groups[0];
        assert_eq!(g.strategy, Strategy::LeastConn);
        assert_eq!(g.upstreams.iter().map(|u| u.weight).collect::<Vec<_>>(), [3, 1]);
        assert_eq!(g.active.unwrap().interval, Duration::from_secs(2));
        assert_eq!(c.access_log.as_ref().unwrap().format, Format::Json);
        assert_eq!(c.workers, 1);
    }

    #[test]
    fn errors_name_the_line_and_the_key() {
        let at = |text: &str| {
            let (span, msg) = parse(text).unwrap_err();
            (span.map(|s| line_of(text, s)), msg)
        };
        let (line, msg) = at("[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"echo\"\ncolour = \"blue\"\n");
        assert_eq!(line, Some(4));
        assert!(msg.contains("unknown field `colour`"), "{msg}");
        let (line, msg) = at("[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"echo\"\nidle_timeout = \"soon\"\n");
        assert_eq!(line, Some(4));
        assert!(msg.contains("invalid duration"), "{msg}");
        let (line, msg) = at("[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"proxy\"\nupstream_group = \"nope\"\n");
        assert_eq!(line, Some(4));
        assert!(msg.contains("no [upstream_group.nope]"), "{msg}");
        let (line, msg) = at("[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"gopher\"\n");
        assert_eq!(line, Some(3));
        assert!(msg.contains("unknown mode"), "{msg}");
        let (_, msg) = at("[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"echo\"\nheader_timeout = \"1s\"\n");
        assert!(msg.contains("`header_timeout` does not apply to mode echo"), "{msg}");
        let (_, msg) = at("workers = 2\n");
        assert!(msg.contains("no [[listener]]"), "{msg}");
        let (line, msg) = at("[uring]\nbundle = \"maybe\"\n[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"echo\"\n");
        assert_eq!(line, Some(2));
        assert!(msg.contains("expected on, off"), "{msg}");
    }

    #[test]
    fn uring_switches_take_booleans_and_on_off() {
        let listener = "[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"echo\"\n";
        let c = parse(&format!(
            "[uring]\nfixed_files = false\nbundle = \"off\"\necho_zero_copy = \"off\"\nbuf_inc = true\n\
             sqpoll = \"on\"\nreg_wait = true\nhuge_pages = \"off\"\n{listener}"
        ))
        .unwrap();
        let u = c.uring;
        assert_eq!(
            (u.fixed_files, u.bundle, u.echo_zero_copy, u.buf_inc, u.sqpoll, u.reg_wait, u.huge_pages),
            (false, false, false, true, true, true, false)
        );
        let d = parse(listener).unwrap().uring;
        assert_eq!(d, crate::config::UringConfig::default(), "absent keys keep the defaults");
    }

    #[test]
    fn rendered_errors_name_the_key_once() {
        let show = |text: &str| render("f.toml", text, parse(text).unwrap_err());
        let head = "[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"proxy\"\nupstream_group = \"g\"\n";
        let group = |body: &str| format!("{head}[upstream_group.g]\nupstreams = [\n  \"127.0.0.1:1\",\n{body}");
        assert_eq!(
            show(&group("  \"127.0.0.1:2@0\",\n]\n")),
            "f.toml:6: `upstreams`: '127.0.0.1:2@0': weight must be between 1 and 1000"
        );
        let e = show(&group("]\nhealth_interval = \"1s\"\nhealth_rise = 0\n"));
        assert_eq!(e, "f.toml:10: `health_rise`: must be at least 1");
        let e = show(&group("]\nbalance = \"fastest\"\n"));
        assert!(e.starts_with("f.toml:9: `balance`: unknown variant `fastest`"), "{e}");
        let e = show(&format!("{head}colour = 1\n"));
        assert!(e.starts_with("f.toml:5: unknown field `colour`"), "{e}");
        let e = show(&format!("{head}[upstream_group.h]\nupstreams = [\"127.0.0.1:1\"]\n"));
        assert_eq!(e, "f.toml:4: `upstream_group`: no [upstream_group.g] (defined: h)");
        assert_eq!(show(&format!("workers = 0\n{head}")), "f.toml:1: `workers`: must be at least 1");
    }
}
