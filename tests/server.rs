//! Production behaviour of `ringpoll serve`: backpressure, descriptor exhaustion, graceful
//! shutdown, idle timeout, sharding, and errors for people.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{assert_hello, Reader, GET};
use common::*;

on_every_backend!(
    backpressure_bounds_server_memory,
    emfile_neither_spins_nor_stalls,
    sigterm_completes_in_flight_responses_and_exits_zero,
    shutdown_deadline_bounds_a_stuck_client,
    idle_timeout_closes_quiet_connections,
    max_conns_is_a_hard_limit_under_a_burst,
);

fn backpressure_bounds_server_memory(backend: &str) {
    const CONNS: usize = 4;
    const WATERMARK_KIB: u64 = 256;
    let srv = ServerProc::start(backend, "echo", &[]);
    let fds = fd_count(srv.pid());
    // Warm up allocator and buffers with one full-size exchange.
    let mut w = srv.connect();
    w.write_all(&[7u8; 300_000]).unwrap();
    read_exact(&mut w, 300_000);
    drop(w);
    assert!(eventually(IO_TIMEOUT, || fd_count(srv.pid()) <= fds), "{backend}: the warm-up connection stays open");
    let base = rss_kib(srv.pid());

    let addr = srv.addr;
    let writers: Vec<_> = (0..CONNS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                s.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
                let chunk = vec![0x5au8; 64 * 1024];
                let mut sent = 0usize;
                let end = Instant::now() + Duration::from_secs(10);
                while sent < 64 << 20 && Instant::now() < end {
                    match s.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                        Err(e) => panic!("write: {e}"),
                    }
                }
                (s, sent)
            })
        })
        .collect();
    let results: Vec<_> = writers.into_iter().map(|t| t.join().unwrap()).collect();
    let grown = rss_kib(srv.pid()).saturating_sub(base);
    for (_, sent) in &results {
        assert!(*sent < 64 << 20, "{backend}: a client that never reads managed to send all 64 MiB");
    }
    let bound = CONNS as u64 * 2 * WATERMARK_KIB + 1536;
    assert!(
        grown <= bound,
        "{backend}: server RSS grew by {grown} KiB with {CONNS} non-reading clients (bound {bound} KiB)"
    );
    // And the paused connections still get their echoes once they read.
    for (mut s, sent) in results.into_iter().take(1) {
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while got < sent {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "{backend}: EOF after {got} of {sent} echoed bytes");
            assert!(buf[..n].iter().all(|&b| b == 0x5a));
            got += n;
        }
    }
}

fn emfile_neither_spins_nor_stalls(backend: &str) {
    const CONNS: u64 = 120;
    const NOFILE: usize = 64;
    let started = Instant::now();
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", "--", BIN, "serve", "--listen", "127.0.0.1:0", "--mode", "echo"]);
    cmd.args(backend_args(backend, "echo"));
    // With the metrics endpoint, whose thread waits for scrapes beside the takeover control
    // thread: neither may hide a descriptor (see below).
    cmd.args(["--workers", "1", "--no-pin", "--metrics", "127.0.0.1:0"]);
    let srv = ServerProc::spawn(&mut cmd).unwrap_or_else(|e| panic!("{backend}: {e}"));
    let mut conns: Vec<_> = (0..CONNS).map(|_| srv.connect()).collect();
    for c in &mut conns {
        c.write_all(b"x").unwrap();
    }
    // Every descriptor number is taken. (A helper thread waiting in a blocking accept(2) would
    // hold one number reserved where /proc/PID/fd cannot show it: the server waits in poll.)
    assert!(
        eventually(IO_TIMEOUT, || fd_count_below(srv.pid(), NOFILE) >= NOFILE),
        "{backend}: never ran out of descriptors ({} of {NOFILE} open)",
        fd_count_below(srv.pid(), NOFILE)
    );
    // Out of descriptors now, for a while: it must not spin on accept (checked below from
    // the wake-ups it counted).
    std::thread::sleep(Duration::from_secs(1));
    // The last connection cannot have been served yet.
    let last = conns.last_mut().unwrap();
    last.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut b = [0u8; 1];
    assert!(last.read(&mut b).is_err(), "{backend}: connection beyond the fd limit was served");
    last.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // Free descriptors: everyone still waiting gets served.
    let rest = conns.split_off(70);
    drop(conns);
    for (i, mut c) in rest.into_iter().enumerate() {
        assert_eq!(read_exact(&mut c, 1), b"x", "{backend}: waiting connection {i}");
    }
    let (code, err) = srv.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{backend}: {err}");
    assert!(err.contains("accept_exhausted"), "{backend}: exhaustion not counted: {err}");
    // A few wake-ups per connection, one per 100 ms accept back-off and per 250 ms sweep,
    // ten times over: a loop spinning on EMFILE wakes up many thousand times a second.
    let wakeups = summary_counter(&err, "wakeups");
    let bound = 10 * (4 * CONNS + started.elapsed().as_millis() as u64 / 100) + 100;
    assert!(wakeups <= bound, "{backend}: {wakeups} wake-ups in {:?} (bound {bound})", started.elapsed());
}

fn sigterm_completes_in_flight_responses_and_exits_zero(backend: &str) {
    const CONNS: usize = 50;
    const BATCH: usize = 200;
    let srv = ServerProc::start(backend, "http", &["--metrics", "127.0.0.1:0"]);
    let m = srv.metrics_addr();
    let mut readers: Vec<_> = (0..CONNS).map(|_| Reader::new(srv.connect())).collect();
    // Every connection is accepted and served once.
    for r in &mut readers {
        r.stream.write_all(GET).unwrap();
        assert_hello(&r.response(false), false);
    }
    let batch = GET.repeat(BATCH);
    for r in &mut readers {
        r.stream.write_all(&batch).unwrap();
    }
    // The signal comes once the server has answered every request (the responses wait in the
    // sockets, unread): those are in flight and must all arrive. A request the server had not
    // read yet would instead get the draining server's `Connection: close` and no more.
    let all = (CONNS * (BATCH + 1)) as u64;
    common::metrics::wait_for(m, "every request answered", |s| {
        common::metrics::sum(s, "ringpoll_requests_total", &[]) >= all
    });
    signal(srv.pid(), "TERM");
    for (i, r) in readers.iter_mut().enumerate() {
        for j in 0..BATCH {
            let resp = r.response(false);
            assert!(resp.status == 200, "{backend}: conn {i} response {j}: {resp:?}");
        }
        r.expect_eof();
    }
    let (code, err) = srv.terminate_after_signal(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{backend}: {err}");
    assert!(err.contains(&format!("requests {}", CONNS * (BATCH + 1))), "{backend}: summary: {err}");
}

fn shutdown_deadline_bounds_a_stuck_client(backend: &str) {
    let srv = ServerProc::start(backend, "echo", &["--shutdown-timeout", "1s"]);
    let mut s = srv.connect();
    s.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
    let chunk = vec![1u8; 1 << 16];
    // Fill every buffer: the server has output it cannot deliver.
    while s.write(&chunk).is_ok() {}
    // Without the deadline the server would wait for the stuck client forever (and be
    // killed at the bound, exit code None).
    let (code, err) = srv.terminate(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{backend}: {err}");
    assert!(err.contains("shutdown 1"), "{backend}: the forced close is counted: {err}");
}

fn idle_timeout_closes_quiet_connections(backend: &str) {
    let srv = ServerProc::start(backend, "echo", &["--idle-timeout", "300ms"]);
    let mut busy = srv.connect();
    let mut quiet = srv.connect();
    quiet.write_all(b"q").unwrap();
    assert_eq!(read_exact(&mut quiet, 1), b"q");
    // Keep `busy` active past the timeout (the pauses spread the activity over time).
    for _ in 0..8 {
        busy.write_all(b"b").unwrap();
        assert_eq!(read_exact(&mut busy, 1), b"b");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing but the idle timeout closes `quiet`: its FIN (within the read timeout) is the
    // check.
    let mut b = [0u8; 1];
    let r = quiet.read(&mut b);
    assert!(matches!(r, Ok(0)), "{backend}: quiet connection not closed: {r:?}");
    busy.write_all(b"c").unwrap();
    assert_eq!(read_exact(&mut busy, 1), b"c", "{backend}: active connection was closed");
}

#[test]
fn two_workers_listen_on_one_port_each_pinned_to_its_own_cpu() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        // Straight to stderr: a passing test's eprintln! output is captured and never shown.
        let _ = writeln!(
            std::io::stderr(),
            "SKIP two_workers_listen_on_one_port_each_pinned_to_its_own_cpu: needs 2 CPUs, this machine has {cpus}"
        );
        return;
    }
    for backend in ["epoll", "uring", "poll"] {
        if backend == "uring" && !uring_usable() {
            continue;
        }
        let srv = ServerProc::start(backend, "echo", &["--workers", "2", "--pin"]);
        let port = srv.addr.port();
        let listeners = std::fs::read_to_string("/proc/net/tcp")
            .unwrap()
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<_> = l.split_whitespace().collect();
                f[1].ends_with(&format!(":{port:04X}")) && f[3] == "0A"
            })
            .count();
        assert_eq!(listeners, 2, "{backend}: listening sockets on port {port}");
        let mut cpus_seen = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{}/task", srv.pid())).unwrap() {
            let dir = task.unwrap().path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
            if comm.trim().starts_with("ringpoll-w") {
                let status = std::fs::read_to_string(dir.join("status")).unwrap();
                let allowed =
                    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string();
                assert!(allowed.parse::<usize>().is_ok(), "{backend}: {} allowed on {allowed}", comm.trim());
                cpus_seen.push(allowed);
            }
        }
        cpus_seen.sort();
        cpus_seen.dedup();
        assert_eq!(cpus_seen.len(), 2, "{backend}: workers pinned to {cpus_seen:?}");
        // Both workers serve: many connections spread by SO_REUSEPORT all get echoed.
        for i in 0..50 {
            let mut c = srv.connect();
            c.write_all(&[i]).unwrap();
            assert_eq!(read_exact(&mut c, 1), [i]);
        }
    }
}

fn run_cli(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).env("RINGPOLL_LOG", "warn").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn errors_for_people() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = blocker.local_addr().unwrap().to_string();
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["serve", "--listen", &taken, "--no-pin"], 1, "another process already listens there"),
        (vec!["serve", "--listen", "not-an-address"], 2, "invalid"),
        (vec!["serve", "--backend", "kqueue"], 2, "available: epoll, uring, poll, select, epoll-lt, epoll-et"),
        (vec!["serve", "--workers", "0", "--listen", "127.0.0.1:0"], 2, "--workers"),
        (vec!["serve", "--idle-timeout", "soon"], 2, "invalid duration"),
        (vec!["serve", "--mode", "proxy", "--listen", "127.0.0.1:0"], 2, "--upstream"),
        (vec!["serve", "--uring-bufs", "1000"], 2, "power of two"),
        (vec!["serve", "--mode", "echo", "--header-timeout", "5s"], 2, "applies to --mode http"),
        (
            vec!["serve", "--mode", "proxy", "--upstream", "127.0.0.1:1", "--splice", "--backend", "epoll-et"],
            2,
            "splice needs --backend epoll",
        ),
        (vec!["serve", "--max-body", "lots", "--mode", "http"], 2, "invalid size"),
    ];
    for (args, code, needle) in cases {
        let (got, err) = run_cli(&args);
        assert_eq!(got, Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: stderr lacks {needle:?}: {err}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{args:?}: {err}");
        assert!(err.trim().lines().count() <= 6, "{args:?}: wordy error: {err}");
    }
}

fn max_conns_is_a_hard_limit_under_a_burst(backend: &str) {
    // Fill the worker, queue a burst in the backlog, then free one slot: the burst must be
    // served in turn, never beyond the limit (a multishot accept can complete the whole
    // backlog at once; a readiness accept loop could accept past the limit within its budget).
    const LIMIT: usize = 2;
    const BURST: u8 = 10;
    let srv = ServerProc::start(backend, "echo", &["--max-conns", "2"]);
    let ping = |s: &mut std::net::TcpStream| {
        s.write_all(b"p").unwrap();
        assert_eq!(read_exact(s, 1), b"p");
    };
    let mut first = srv.connect();
    ping(&mut first);
    let mut second = srv.connect();
    ping(&mut second);
    let mut waiting: Vec<(u8, std::net::TcpStream)> = (0..BURST)
        .map(|i| {
            let mut s = srv.connect(); // completes in the kernel backlog
            s.write_all(&[i]).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            (i, s)
        })
        .collect();
    // The worker handled what the burst caused (accepts, reads) before it answers `second`
    // again: twice, so that a connection accepted in one pass is read in the next.
    ping(&mut second);
    ping(&mut second);
    for (i, s) in &mut waiting {
        let mut b = [0u8; 1];
        assert!(s.read(&mut b).is_err(), "{backend}: connection {i} served beyond --max-conns {LIMIT}");
    }
    drop(first);
    let end = Instant::now() + Duration::from_secs(20);
    while !waiting.is_empty() {
        assert!(Instant::now() < end, "{backend}: {} connection(s) never served", waiting.len());
        // `second` stays open, and the connections served in a pass stay open until the pass
        // ends: at most LIMIT - 1 can be served per pass.
        let mut served = Vec::new();
        for (i, mut s) in std::mem::take(&mut waiting) {
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(1) => {
                    assert_eq!(b[0], i, "{backend}: echo of connection {i}");
                    served.push((i, s));
                }
                Ok(_) => panic!("{backend}: connection {i} closed without its echo"),
                Err(_) => waiting.push((i, s)),
            }
        }
        let served: Vec<u8> = served.into_iter().map(|(i, _)| i).collect(); // closes them
        assert!(served.len() < LIMIT, "{backend}: served {served:?} at once beside a live connection");
    }
    ping(&mut second);
}
