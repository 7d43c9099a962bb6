//! Zero-downtime hand-over (`serve --takeover`), end to end: clients keep connecting while the
//! server is replaced five times in a row; not one connection may be refused, reset or left
//! unanswered. On epoll and io_uring, for echo, HTTP (under `ringpoll load`) and the proxy.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

macro_rules! on_epoll_and_uring {
    ($($name:ident),* $(,)?) => {
        mod epoll { $( #[test] fn $name() { super::$name("epoll") } )* }
        mod uring { $( #[test] fn $name() { if $crate::common::uring_usable() { super::$name("uring") } } )* }
    };
}

on_epoll_and_uring!(
    echo_clients_see_nothing_of_five_hand_overs,
    http_load_sees_nothing_of_five_hand_overs,
    proxy_clients_see_nothing_of_five_hand_overs,
    a_second_server_without_takeover_is_refused,
);

const HANDOVERS: usize = 5;

/// What the client loop saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    unanswered: AtomicU64,
    wrong: AtomicU64,
}

/// Start a server that takes over `addr` from the one running there.
fn successor(backend: &str, mode: &str, addr: SocketAddr, workers: &str, extra: &[&str]) -> ServerProc {
    let a = addr.to_string();
    let mut args =
        vec!["serve", "--listen", &a, "--mode", mode, "--backend", backend, "--workers", workers, "--no-pin"];
    args.extend(extra);
    args.push("--takeover");
    ServerProc::spawn(Command::new(BIN).args(&args)).unwrap_or_else(|e| panic!("{backend}: successor: {e}"))
}

/// Replace the server `HANDOVERS` times, each time once the clients made `progress` more
/// successful exchanges; every old server must exit 0 by itself (it drains after the hand-over).
/// Returns the last one (stopped once the clients have stopped).
fn hand_over_repeatedly(
    backend: &str,
    mode: &str,
    first: ServerProc,
    extra: &[&str],
    progress: impl Fn() -> u64,
) -> ServerProc {
    let addr = first.addr;
    let mut current = first;
    for i in 0..HANDOVERS {
        let before = progress();
        assert!(
            eventually(Duration::from_secs(30), || progress() >= before + 20),
            "{backend}/{mode}: clients made no progress before hand-over {i}"
        );
        let workers = if i % 2 == 0 { "1" } else { "2" };
        let next = successor(backend, mode, addr, workers, extra);
        assert_eq!(next.addr, addr, "{backend}/{mode}: the successor listens where the old one did");
        let (code, err) = current.terminate_after_signal(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{backend}/{mode}: hand-over {i}: the old server did not drain and exit: {err}");
        current = next;
    }
    let before = progress();
    assert!(
        eventually(Duration::from_secs(30), || progress() >= before + 20),
        "{backend}/{mode}: no progress at the end"
    );
    current
}

fn stop_last(backend: &str, last: ServerProc) {
    let (code, err) = last.terminate(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{backend}: the last server: {err}");
}

/// Connect, send a message (echo: random bytes; http: a GET with `Connection: close`), check
/// the answer, close; until `stop` (bounded in count and time).
fn client_loop(addr: SocketAddr, http: bool, seed: u64, stop: &AtomicBool, t: &Tally) {
    let mut rng = Rng::new(seed);
    let end = Instant::now() + Duration::from_secs(300);
    for _ in 0..200_000 {
        if stop.load(Ordering::Relaxed) || Instant::now() > end {
            return;
        }
        let mut s = match std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(s) => s,
            Err(_) => {
                t.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let msg = if http {
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".to_vec()
        } else {
            rng.bytes_in(1, 2000)
        };
        if let Err(e) = s.write_all(&msg) {
            eprintln!("write: {e}");
            t.reset.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if http {
            let mut got = Vec::new();
            match s.read_to_end(&mut got) {
                Ok(_) if got.is_empty() => t.unanswered.fetch_add(1, Ordering::Relaxed),
                Ok(_) if got.starts_with(b"HTTP/1.1 200 OK\r\n") && got.ends_with(b"Hello, World!") => {
                    t.ok.fetch_add(1, Ordering::Relaxed)
                }
                Ok(_) => t.wrong.fetch_add(1, Ordering::Relaxed),
                Err(_) => t.reset.fetch_add(1, Ordering::Relaxed),
            };
            continue;
        }
        let mut got = vec![0u8; msg.len()];
        match s.read_exact(&mut got) {
            Ok(()) if got == msg => t.ok.fetch_add(1, Ordering::Relaxed),
            Ok(()) => t.wrong.fetch_add(1, Ordering::Relaxed),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => t.unanswered.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                eprintln!("read: {e}");
                t.reset.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

fn with_client_loops<R>(addr: SocketAddr, http: bool, body: impl FnOnce(&Tally) -> R) -> (Arc<Tally>, R) {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4u64)
        .map(|i| {
            let (t, stop) = (tally.clone(), stop.clone());
            std::thread::spawn(move || client_loop(addr, http, i + 1, &stop, &t))
        })
        .collect();
    let r = body(&tally);
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client loop");
    }
    (tally, r)
}

fn assert_clean(backend: &str, what: &str, t: &Tally) {
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (ok, refused, reset, unanswered, wrong) = (n(&t.ok), n(&t.refused), n(&t.reset), n(&t.unanswered), n(&t.wrong));
    eprintln!(
        "{backend}/{what}: {ok} exchanges, {refused} refused, {reset} reset, {unanswered} unanswered, {wrong} wrong"
    );
    assert!(ok > 100, "{backend}/{what}: too few exchanges ({ok})");
    assert_eq!((refused, reset, unanswered, wrong), (0, 0, 0, 0), "{backend}/{what}: {ok} fine");
}

fn echo_clients_see_nothing_of_five_hand_overs(backend: &str) {
    let first = ServerProc::start(backend, "echo", &["--workers", "2"]);
    let addr = first.addr;
    let (t, last) = with_client_loops(addr, false, |t| {
        hand_over_repeatedly(backend, "echo", first, &[], || t.ok.load(Ordering::Relaxed))
    });
    stop_last(backend, last);
    assert_clean(backend, "echo", &t);
}

fn proxy_clients_see_nothing_of_five_hand_overs(backend: &str) {
    let up = ServerProc::start("epoll", "echo", &[]);
    let u = up.addr.to_string();
    let extra = ["--upstream", u.as_str()];
    let first = ServerProc::start(backend, "proxy", &["--workers", "2", "--upstream", &u]);
    let addr = first.addr;
    let (t, last) = with_client_loops(addr, false, |t| {
        hand_over_repeatedly(backend, "proxy", first, &extra, || t.ok.load(Ordering::Relaxed))
    });
    stop_last(backend, last);
    assert_clean(backend, "proxy", &t);
}

fn http_load_sees_nothing_of_five_hand_overs(backend: &str) {
    let first = ServerProc::start(backend, "http", &["--workers", "2"]);
    let addr = first.addr;
    let out = std::env::temp_dir().join(format!("ringpoll-takeover-load-{}-{backend}.json", std::process::id()));
    let mut load = Command::new(BIN)
        .args(["load", "-c", "8", "-t", "1", "-d", "600s", "--json", &format!("http://{addr}/")])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("ringpoll load");
    // One-shot clients beside the load: their successes mark progress between hand-overs.
    let (t, last) = with_client_loops(addr, true, |t| {
        hand_over_repeatedly(backend, "http", first, &[], || t.ok.load(Ordering::Relaxed))
    });
    assert_clean(backend, "http one-shot", &t);
    signal(load.id(), "INT");
    let code = wait_exit(&mut load, Duration::from_secs(60));
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    stop_last(backend, last);
    assert_eq!(code, Some(0), "{backend}: the load failed: {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let requests = v["requests"].as_u64().unwrap_or(0);
    let errors = &v["errors"];
    eprintln!("{backend}/http: {requests} requests, errors {errors}");
    assert!(requests > 1000, "{backend}: {text}");
    for k in ["connect", "read", "write", "timeout", "status"] {
        assert_eq!(errors[k].as_u64(), Some(0), "{backend}: errors.{k} in {errors}");
    }
}

fn a_second_server_without_takeover_is_refused(backend: &str) {
    let first = ServerProc::start(backend, "echo", &[]);
    let a = first.addr.to_string();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &a, "--backend", backend, "--no-pin"])
        .env("RINGPOLL_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{backend}: {err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
    assert_eq!(err.trim().lines().count(), 1, "{backend}: one line: {err}");
    assert!(err.contains("another process already listens there"), "{backend}: {err}");
    // The first one still serves.
    let mut c = first.connect();
    c.write_all(b"still mine").unwrap();
    assert_eq!(read_exact(&mut c, 10), b"still mine");
}
