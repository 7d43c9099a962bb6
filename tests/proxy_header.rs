//! The PROXY protocol end to end, on every backend and relay variant: `--send-proxy v1|v2`
//! headers checked byte for byte at the upstream (source and destination address and port,
//! built here by hand from the specification), and `--accept-proxy` taking v1 and v2 headers
//! (their client address passed on) and refusing malformed or missing ones.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener};

use common::proxy::{connect_from, expect_closed, metrics_addr, proxy_to, wait_metrics, Metrics};
use common::*;

on_every_proxy_variant!(
    send_proxy_v1_and_v2_headers_are_byte_exact,
    accept_proxy_takes_v1_and_v2_and_refuses_the_rest,
    a_header_that_never_comes_closes_the_client_at_its_deadline,
);

/// The v2 signature (doc/proxy-protocol.txt, section 2.2).
const SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 header for a TCP over IPv4 connection from `src` to `dst`.
fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else { panic!("IPv4 only") };
    let mut h = SIG.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 12]); // v2 PROXY, TCP over IPv4, 12 bytes follow
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    format!("PROXY TCP4 {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port()).into_bytes()
}

/// An upstream that answers each connection, once the client's FIN arrives, with every byte
/// it received (a PROXY header included). Connections without a byte (the proxy's start-up
/// probe) get nothing.
fn mirror_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for _ in 0..64 {
            let Ok((mut s, _)) = l.accept() else { return };
            std::thread::spawn(move || {
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut got = Vec::new();
                if s.read_to_end(&mut got).is_ok() && !got.is_empty() {
                    let _ = s.write_all(&got);
                }
            });
        }
    });
    addr
}

/// Send `bytes` and FIN through the proxy from `from`; what the upstream received comes back.
fn through(px: &ServerProc, from: Ipv4Addr, bytes: &[u8]) -> (SocketAddr, Vec<u8>) {
    let mut c = connect_from(px.addr, Some(IpAddr::V4(from))).unwrap();
    let local = c.local_addr().unwrap();
    c.write_all(bytes).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    (local, read_to_eof(&mut c))
}

fn send_proxy_v1_and_v2_headers_are_byte_exact(v: &str) {
    let up = mirror_upstream();
    for version in ["v1", "v2"] {
        let px = proxy_to(v, &[up], &["--send-proxy", version]);
        let (client, got) = through(&px, Ipv4Addr::new(127, 0, 0, 7), b"hello");
        let mut want = if version == "v1" { v1(client, px.addr) } else { v2(client, px.addr) };
        want.extend_from_slice(b"hello");
        assert!(got == want, "{v} {version}: the upstream got {got:?}, not {want:?}");
    }
}

fn accept_proxy_takes_v1_and_v2_and_refuses_the_rest(v: &str) {
    let up = mirror_upstream();
    // The upstream gets a v1 header of its own: it shows which client address was passed on.
    let px = proxy_to(v, &[up], &["--accept-proxy", "--send-proxy", "v1", "--metrics", "127.0.0.1:0"]);
    let m = metrics_addr(&px);
    let from = Ipv4Addr::new(127, 0, 0, 8);
    let (src, dst): (SocketAddr, SocketAddr) = ("127.1.2.3:40000".parse().unwrap(), "127.0.0.9:443".parse().unwrap());
    for header in [v1(src, dst), v2(src, dst)] {
        let mut wire = header.clone();
        wire.extend_from_slice(b"payload");
        let (_, got) = through(&px, from, &wire);
        let mut want = v1(src, dst);
        want.extend_from_slice(b"payload");
        assert!(got == want, "{v}: after {header:?} the upstream got {:?}", String::from_utf8_lossy(&got));
    }
    // A header trickled a byte at a time, the payload apart.
    let mut c = connect_from(px.addr, Some(IpAddr::V4(from))).unwrap();
    for b in v2(src, dst) {
        c.write_all(&[b]).unwrap();
    }
    c.write_all(b"late").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut want = v1(src, dst);
    want.extend_from_slice(b"late");
    assert!(read_to_eof(&mut c) == want, "{v}: a trickled header");

    let mut bad_v2 = v2(src, dst);
    bad_v2[12] = 0x11; // version 1 in a v2 signature
    let bad: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",            // missing
        b"PROXY TCP4 127.1.2.3 127.0.0.9 40000\r\n",     // a port short
        b"PROXY TCP4 127.1.2.3 127.0.0.9 40000 443\n",   // no CR
        b"PROXY TCP6 127.1.2.3 127.0.0.9 40000 443\r\n", // family mismatch
        &bad_v2,
    ];
    for b in bad {
        expect_closed(px.addr, b, v);
    }
    wait_metrics(m, "the refusals counted", |s| s.closed("proxy_header") == bad.len() as f64);
    let s = Metrics::scrape(m);
    assert_eq!(s.upstream("connections_total", up), 3.0, "{v}: refused clients never reach the upstream");
}

fn a_header_that_never_comes_closes_the_client_at_its_deadline(v: &str) {
    // The header deadline is a file setting (`proxy_header_timeout`).
    let up = mirror_upstream();
    let (backend, flags) = common::proxy::variant(v);
    let splice = if flags.contains(&"--splice") { "splice = true" } else { "" };
    let text = format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"proxy\"\nupstream_group = \"g\"\naccept_proxy = true\n\
         proxy_header_timeout = \"300ms\"\nidle_timeout = 0\n{splice}\n[upstream_group.g]\nupstreams = [\"{up}\"]\n"
    );
    let path =
        std::env::temp_dir().join(format!("ringpoll-{}-header-{}.toml", std::process::id(), v.replace('+', "-")));
    std::fs::write(&path, text).unwrap();
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["serve", "--config", path.to_str().unwrap(), "--workers", "1", "--no-pin"]);
    cmd.args(backend_args(backend, "proxy"));
    cmd.args(flags.iter().filter(|f| **f != "--splice"));
    cmd.args(["--metrics", "127.0.0.1:0"]);
    let px = ServerProc::spawn(&mut cmd).unwrap_or_else(|e| panic!("{v}: {e}"));
    std::fs::remove_file(&path).unwrap();
    let m = metrics_addr(&px);
    // Silent, and half a header: only the header deadline can close them within IO_TIMEOUT.
    expect_closed(px.addr, b"", v);
    expect_closed(px.addr, b"PROXY TCP4 127.1.2.3 ", v);
    wait_metrics(m, "the late headers counted", |s| s.closed("proxy_header") == 2.0);
}
