//! Graceful shutdown under load, on every backend: SIGTERM in the middle of a `ringpoll load`
//! run (HTTP and echo) loses no request, and a connection accepted but silent when the signal
//! comes is still served if its request arrives within the head deadline.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http::{assert_hello, Reader, GET};
use common::metrics::{sum, wait_for};
use common::*;

on_every_backend!(
    sigterm_under_http_load_answers_every_request,
    sigterm_under_echo_load_echoes_every_message,
    a_silent_connection_accepted_before_the_signal_is_still_served,
);

/// Start `ringpoll load --json ARGS`, its report going to a temporary file.
fn start_load(tag: &str, args: &[&str]) -> (Child, std::path::PathBuf) {
    let out = std::env::temp_dir().join(format!("ringpoll-shutdown-{}-{tag}.json", std::process::id()));
    let child = Command::new(BIN)
        .args(["load", "--json", "-t", "1"])
        .args(args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("ringpoll load");
    (child, out)
}

/// Wait for the load to exit (0) and read its report.
fn load_report(mut load: Child, out: &std::path::Path, what: &str) -> serde_json::Value {
    let code = wait_exit(&mut load, Duration::from_secs(60));
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let _ = std::fs::remove_file(out);
    assert_eq!(code, Some(0), "{what}: the load failed: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"))
}

fn requests(m: std::net::SocketAddr) -> u64 {
    sum(&common::metrics::scrape(m), "ringpoll_requests_total", &[])
}

fn sigterm_under_http_load_answers_every_request(backend: &str) {
    // One worker: with several, a client reconnecting after one worker's `Connection: close`
    // can land in another worker's accept queue in the instant between that worker taking in
    // its queue and closing the socket, and be reset (SO_REUSEPORT without tcp_migrate_req).
    let srv = ServerProc::start(backend, "http", &["--metrics", "127.0.0.1:0"]);
    let m = srv.metrics_addr();
    let (load, out) =
        start_load(&format!("http-{backend}"), &["-c", "16", "-d", "60s", &format!("http://{}/", srv.addr)]);
    wait_for(m, "load progress", |s| sum(s, "ringpoll_requests_total", &[]) >= 2000);
    signal(srv.pid(), "TERM");
    let (code, err) = srv.terminate_after_signal(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{backend}: {err}");
    signal(load.id(), "INT");
    let v = load_report(load, &out, backend);
    let errors = &v["errors"];
    // Nothing listens once the signal came: reconnects after a `Connection: close` are refused,
    // and counted as connect errors; so is one whose handshake the kernel completed in the
    // instant between the worker's last accept and its closing the listener, which the close
    // resets (without a successor to inherit the queue, as with nginx). No request was sent on
    // either. The same reset can come just after the load sent its request on such a
    // connection (its handshake done, so for the load it was up): that is a read error on a
    // connection the server never accepted, so never a request it took in; there can be no
    // more of those than connections the load established and the server did not accept.
    // Every other kind would be a lost request.
    let never_accepted = v["connects"].as_u64().unwrap_or(0).saturating_sub(summary_counter(&err, "accepted"));
    let read_errors = errors["read"].as_u64().unwrap_or(u64::MAX);
    assert!(
        read_errors <= never_accepted,
        "{backend}: {read_errors} read errors, {never_accepted} never accepted: {v}\nserver {err}"
    );
    for k in ["write", "timeout", "status", "mismatch"] {
        assert_eq!(errors[k].as_u64(), Some(0), "{backend}: errors.{k}: {v}");
    }
    if errors["connect"].as_u64() != Some(0) {
        let first = v["first_error"].as_str().unwrap_or_default();
        assert!(
            first.starts_with("connect: ") && (first.contains("refused") || first.contains("reset")),
            "{backend}: {v}"
        );
    }
    assert_eq!(v["incomplete"].as_u64(), Some(0), "{backend}: {v}");
    // Every response the server produced reached the load, and the load got an answer to
    // every request it sent (a request left without one would be a read error above).
    let answered = summary_counter(&err, "requests");
    assert!(answered >= 2000, "{backend}: {err}");
    assert_eq!(v["requests"].as_u64(), Some(answered), "{backend}: load {v}\nserver {err}");
}

fn sigterm_under_echo_load_echoes_every_message(backend: &str) {
    // The load ends by itself two seconds in; the signal comes once it is under way. Echo has
    // no `Connection: close`: its connections stay open while they are busy, so the load runs
    // to its end unharmed, then the server exits.
    let srv = ServerProc::start(backend, "echo", &["--metrics", "127.0.0.1:0", "--shutdown-timeout", "60s"]);
    let m = srv.metrics_addr();
    let (load, out) = start_load(&format!("echo-{backend}"), &["-c", "16", "-d", "2s", &srv.addr.to_string()]);
    wait_for(m, "load progress", |s| sum(s, "ringpoll_requests_total", &[]) >= 200);
    signal(srv.pid(), "TERM");
    let before = requests(m);
    wait_for(m, "echoes after the signal", |s| sum(s, "ringpoll_requests_total", &[]) >= before + 200);
    let v = load_report(load, &out, backend);
    let (code, err) = srv.terminate_after_signal(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{backend}: {err}");
    assert_eq!(
        v["errors"],
        serde_json::json!({"connect": 0, "read": 0, "write": 0, "timeout": 0, "mismatch": 0, "status": 0}),
        "{backend}: {v}"
    );
    assert!(v["requests"].as_u64().unwrap_or(0) > 0, "{backend}: {v}");
    let (rx, tx) = (summary_counter(&err, "in"), summary_counter(&err, "out"));
    assert_eq!(rx, tx, "{backend}: every byte received was echoed: {err}");
    let cut = err.lines().any(|l| l.starts_with("worker ") && l.contains(" shutdown "));
    assert!(!cut, "{backend}: a connection was cut at the shutdown deadline: {err}");
}

fn a_silent_connection_accepted_before_the_signal_is_still_served(backend: &str) {
    let srv = ServerProc::start(backend, "http", &["--metrics", "127.0.0.1:0", "--shutdown-timeout", "60s"]);
    let m = srv.metrics_addr();
    let addr = srv.addr;
    let mut silent = Reader::new(srv.connect());
    let mut served = Reader::new(srv.connect());
    served.stream.write_all(GET).unwrap();
    assert_hello(&served.response(false), false);
    wait_for(m, "both connections accepted", |s| sum(s, "ringpoll_connections_open", &[]) == 2);
    signal(srv.pid(), "TERM");
    // Draining: a connection that was served and is quiet is closed after the drain grace, and
    // nothing listens any more...
    served.expect_eof();
    assert!(std::net::TcpStream::connect(addr).is_err(), "{backend}: still accepting after SIGTERM");
    // ...but the silent one still has its head deadline: its request is answered.
    silent.stream.write_all(GET).unwrap();
    let resp = silent.response(false);
    assert_hello(&resp, false);
    assert_eq!(resp.header("Connection"), Some("close"), "{backend}: {resp:?}");
    silent.expect_eof();
    let (code, err) = srv.terminate_after_signal(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{backend}: {err}");
    assert_eq!(summary_counter(&err, "requests"), 2, "{backend}: {err}");
}
