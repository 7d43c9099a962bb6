//! `ringpoll serve --config examples/proxy.toml`, end to end on every backend (its addresses
//! rewritten to free ones), and bad files: one error naming the line and the key, exit 2,
//! before anything listens.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::proxy::{connect_from, Metrics};
use common::*;

on_every_backend!(the_example_config_serves_both_listeners);

const EXAMPLE: &str = include_str!("../examples/proxy.toml");

/// An upstream that reads a PROXY v2 header (IPv4), reports its source address, then echoes.
/// Connections that end before a header (start-up probe, health checks) are skipped.
fn v2_echo_upstream() -> (SocketAddr, mpsc::Receiver<SocketAddr>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..256 {
            let Ok((mut s, _)) = l.accept() else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut h = [0u8; 28];
                if s.read_exact(&mut h).is_err() {
                    return; // a probe
                }
                assert_eq!(h[..16], *b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c", "a v2 header for TCP over IPv4");
                let ip = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
                let _ = tx.send(SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([h[24], h[25]])));
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// The example with every address replaced (each one must be there).
fn rewrite(pairs: &[(&str, String)]) -> String {
    let mut text = EXAMPLE.to_string();
    for (from, to) in pairs {
        assert!(text.contains(from), "examples/proxy.toml no longer has {from}: update this test");
        text = text.replace(from, to);
    }
    text
}

fn write_temp(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ringpoll-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn the_example_config_serves_both_listeners(backend: &str) {
    let (up1, seen) = v2_echo_upstream();
    let (up2, _) = v2_echo_upstream();
    let any = "127.0.0.1:0".to_string();
    let text = rewrite(&[
        ("127.0.0.1:9000", any.clone()),
        ("127.0.0.1:8080", any.clone()),
        ("127.0.0.1:9100", any.clone()),
        ("127.0.0.1:9001", up1.to_string()),
        ("127.0.0.1:9002", up2.to_string()),
    ]);
    let path = write_temp(&format!("example-{backend}.toml"), &text);
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config", path.to_str().unwrap(), "--workers", "1", "--no-pin"]);
    cmd.args(backend_args(backend, "proxy"));
    let mut px = ServerProc::spawn(&mut cmd).unwrap_or_else(|e| panic!("{backend}: {e}"));
    std::fs::remove_file(&path).unwrap();
    px.collect_stderr();
    let proxy = px.addr;
    let line = |what: &str| px.stdout_line(IO_TIMEOUT).unwrap_or_else(|| panic!("{backend}: no {what} line"));
    let http: SocketAddr = line("second listener").strip_prefix("listening on ").unwrap().parse().unwrap();
    let metrics = line("metrics");
    let metrics: SocketAddr =
        metrics.strip_prefix("metrics on http://").and_then(|m| m.strip_suffix("/metrics")).unwrap().parse().unwrap();

    // The proxy: through to an upstream, which learns the client's address from the header.
    let mut c = connect_from(proxy, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)))).unwrap();
    c.write_all(b"ping").unwrap();
    assert_eq!(read_exact(&mut c, 4), b"ping", "{backend}");
    let client = c.local_addr().unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert!(read_to_eof(&mut c).is_empty(), "{backend}");
    assert_eq!(seen.recv_timeout(IO_TIMEOUT).ok(), Some(client), "{backend}: the PROXY header's source");

    // HTTP on the second listener.
    let mut h = connect(http);
    h.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let resp = String::from_utf8(read_to_eof(&mut h)).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("Hello, World!"), "{backend}: {resp}");

    // Metrics, with the group's upstreams; the access log line (JSON, on stderr).
    let s = Metrics::scrape(metrics);
    let total = s.upstream("connections_total", up1) + s.upstream("connections_total", up2);
    assert_eq!(total, 1.0, "{backend}");
    let client_s = client.to_string();
    assert!(
        eventually(IO_TIMEOUT, || px.stderr_so_far().contains(&format!("\"client\":\"{client_s}\""))),
        "{backend}: no JSON access log line: {}",
        px.stderr_so_far()
    );
    drop((c, h));
    let (code, err) = px.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{backend}: {err}");
}

/// `ringpoll serve --config` on `text`: (exit status, stdout, stderr).
fn serve_file(name: &str, text: &str) -> (Option<i32>, String, String) {
    let path = write_temp(name, text);
    let mut child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap(), "--no-pin"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut child, IO_TIMEOUT);
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    std::fs::remove_file(&path).unwrap();
    (code, out, err)
}

/// The 1-based line of the first line of `text` that contains `needle`.
fn line_with(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("the line is there") + 1
}

#[test]
fn bad_files_are_one_error_naming_the_line_and_the_key() {
    // Free ports, so that a start would succeed: only the bad setting can stop it.
    let any = "127.0.0.1:0".to_string();
    let good =
        rewrite(&[("127.0.0.1:9000", any.clone()), ("127.0.0.1:8080", any.clone()), ("127.0.0.1:9100", any.clone())]);
    let bad = [
        ("unknown-key", good.replacen("mode = \"proxy\"", "mode = \"proxy\"\ncolour = \"blue\"", 1), "colour = "),
        ("bad-value", good.replace("balance = \"least-conn\"", "balance = \"fastest\""), "balance = "),
        ("unknown-group", good.replace("upstream_group = \"app\"", "upstream_group = \"apps\""), "upstream_group = "),
        ("zero-rise", good.replace("health_rise = 2", "health_rise = 0"), "health_rise = "),
        ("bad-duration", good.replace("idle_timeout = \"10m\"", "idle_timeout = \"soon\""), "idle_timeout = "),
    ];
    for (name, text, key_line) in bad {
        let file = format!("bad-{name}.toml");
        let (code, out, err) = serve_file(&file, &text);
        assert_eq!(code, Some(2), "{name}: {err}");
        assert!(out.is_empty(), "{name}: something listened: {out}");
        assert_eq!(err.lines().count(), 1, "{name}: one line: {err}");
        let key = key_line.trim_end_matches(" = ");
        let at = format!("{file}:{}: ", line_with(&text, key_line));
        assert!(err.contains(&at) && err.contains(&format!("`{key}`")), "{name}: {at} and `{key}` in: {err}");
    }
}
