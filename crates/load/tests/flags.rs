//! wrk's and oha's flags, each checked on the wire: what the in-test server received is what
//! the flags asked for. The flags go through the real command-line parser.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use common::{counting_echo_server, recording_server};
use ringpoll_load::{run_load, LoadArgs, LoadConfig};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

fn config(args: &[&str]) -> LoadConfig {
    let mut v = vec!["load"];
    v.extend_from_slice(args);
    let mut c = Cli::try_parse_from(v).unwrap().load.to_config().unwrap();
    c.progress = false;
    c
}

#[test]
fn method_headers_and_body_are_sent_as_asked() {
    let (srv, log) = recording_server();
    let url = srv.url("/submit?x=1");
    let c = config(&[
        "-c",
        "2",
        "-n",
        "20",
        "-m",
        "POST",
        "-H",
        "X-Test: one",
        "-H",
        "Accept:*/*",
        "--body",
        "hello",
        &url,
    ]);
    let r = run_load(c).unwrap();
    assert_eq!(r.requests, 20, "{r:#?}");
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 20, "exactly -n requests reach the server");
    for req in log.iter() {
        assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/submit?x=1"));
        assert_eq!(req.header("x-test"), vec!["one"]);
        assert_eq!(req.header("accept"), vec!["*/*"]);
        assert_eq!(req.header("content-length"), vec!["5"]);
        assert_eq!(req.header("host"), vec![srv.addr.to_string().as_str()]);
        assert_eq!(req.body, b"hello");
    }
}

#[test]
fn body_file_and_host_override() {
    let (srv, log) = recording_server();
    let path = std::env::temp_dir().join(format!("ringpoll-body-{}", std::process::id()));
    let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &body).unwrap();
    let url = srv.url("/");
    let file = path.to_string_lossy().into_owned();
    let c = config(&[
        "-c",
        "3",
        "-n",
        "9",
        "--depth",
        "2",
        "-m",
        "put",
        "--body-file",
        &file,
        "-H",
        "Host: example.test",
        &url,
    ]);
    let r = run_load(c).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(r.requests, 9, "{r:#?}");
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 9);
    for req in log.iter() {
        assert_eq!(req.method, "PUT");
        assert_eq!(req.header("host"), vec!["example.test"], "one Host, the one asked for");
        assert_eq!(req.body, body);
    }
}

#[test]
fn a_plain_run_with_latency_sends_plain_gets() {
    let (srv, log) = recording_server();
    let url = srv.url("/plain");
    let c = config(&["--latency", "-c", "4", "-t", "2", "-n", "37", &url]);
    let r = run_load(c).unwrap();
    assert_eq!((r.requests, r.threads), (37, 2), "{r:#?}");
    assert!(r.summary().contains("Latency Distribution"));
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 37, "-n is shared over the threads and sent exactly");
    for req in log.iter() {
        assert_eq!((req.method.as_str(), req.path.as_str(), req.body.len()), ("GET", "/plain", 0));
        assert_eq!(req.headers.len(), 1, "only Host: {req:?}");
    }
}

#[test]
fn requests_after_warm_up_count_toward_n() {
    let (srv, log) = recording_server();
    let url = srv.url("/");
    let c = config(&["-c", "2", "-n", "10", "--warmup", "300ms", &url]);
    let r = run_load(c).unwrap();
    assert_eq!(r.requests, 10, "{r:#?}");
    assert!(log.lock().unwrap().len() > 10, "warm-up requests were sent too, and not counted");
}

#[test]
fn echo_sizes_take_units() {
    let srv = counting_echo_server();
    let addr = srv.addr.to_string();
    let c = config(&["--size", "1KiB", "-c", "2", "-n", "10", &addr]);
    assert_eq!(c.size, 1024);
    let r = run_load(c).unwrap();
    assert_eq!((r.requests, r.size), (10, 1024), "{r:#?}");
    // Wait for the server threads to have counted every byte (bounded).
    let ok = (0..500).any(|_| {
        if srv.handled.load(Ordering::Relaxed) >= 10 * 1024 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
        false
    });
    assert!(ok, "server saw {} bytes", srv.handled.load(Ordering::Relaxed));
    assert_eq!(srv.handled.load(Ordering::Relaxed), 10 * 1024, "ten 1 KiB messages, nothing more");
}
