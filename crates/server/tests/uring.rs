//! io_uring-specific behaviour of the `uring` backend: a tiny provided-buffer ring (ENOBUFS
//! and re-arm), tiny submission/completion queues, a prompt FIN when the server closes a
//! connection whose receive is in flight, and a clear refusal when io_uring is forbidden.
//!
//! Every loop is bounded in time and count; every socket op has a timeout; nothing is timed:
//! each test waits for the event it checks, bounded by a generous timeout. The cases skip
//! (with a `SKIP` line in the `cargo test` output) only when the kernel refuses io_uring; with
//! RINGPOLL_REQUIRE_URING=1 (as in CI) that is a failure instead.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringpoll_proto::upstream::Upstream;
use ringpoll_server::config::Group;
use ringpoll_server::{Backend, CloseReason, Counters, Mode, Server};
use ringpoll_sys::testing::REQUIRE_URING;
use support::*;

const CHILD_ENV: &str = "RINGPOLL_URING_SECCOMP_CHILD";

fn pattern(conn: usize, round: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((conn * 31 + round * 7 + i) % 251) as u8).collect()
}

/// `conns` connections over `threads` client threads; each round every connection sends
/// `msg` bytes, then every reply is read back and compared. Returns the bytes echoed.
fn busy_echo(addr: SocketAddr, conns: usize, threads: usize, rounds: usize, msg: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    let per = conns.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let ids: Vec<usize> = (t * per..((t + 1) * per).min(conns)).collect();
                let mut socks: Vec<TcpStream> = ids.iter().map(|_| connect(addr)).collect();
                let mut buf = vec![0u8; msg];
                for round in 0..rounds {
                    assert!(Instant::now() < deadline, "busy echo took too long (round {round})");
                    for (s, &id) in socks.iter_mut().zip(&ids) {
                        s.write_all(&pattern(id, round, msg)).expect("send");
                    }
                    for (s, &id) in socks.iter_mut().zip(&ids) {
                        s.read_exact(&mut buf).unwrap_or_else(|e| panic!("conn {id} round {round}: {e}"));
                        assert!(buf == pattern(id, round, msg), "conn {id} round {round}: bytes differ");
                    }
                }
                (ids.len() * rounds * msg) as u64
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("client thread")).sum()
}

#[test]
fn tiny_buffer_ring_echoes_every_byte() {
    let mut cfg = config(Mode::Echo);
    cfg.uring.buf_count = 8;
    cfg.uring.buf_size = 256;
    let Some(server) = start(cfg) else { return };
    let echoed = busy_echo(server.local_addr(), 500, 10, 6, 2000);
    // Every FIN read (a starved connection's FIN needs a re-arm too) before the shutdown
    // could close what is left without one.
    let live = wait_counters(&server, "every connection closed", |c| c.conn.closed_total() == 500);
    let c = stop(server);
    assert_eq!(echoed, 500 * 6 * 2000);
    assert_eq!(c.conn.bytes_in, echoed, "{c:?}");
    assert_eq!(c.conn.bytes_out, echoed, "{c:?}");
    assert_eq!(c.accepted, 500);
    assert_eq!(c.conn.closed_total(), 500);
    assert!(live.uring_enobufs > 0, "8 buffers for 500 busy connections must run dry: {live:?}");
    assert!(c.uring_rearms >= c.uring_enobufs, "every ENOBUFS re-arms: {c:?}");
    eprintln!("enobufs {} rearms {} wakeups {}", c.uring_enobufs, c.uring_rearms, c.wakeups);
}

#[test]
fn zero_copy_sends_echo_every_byte() {
    // Every send zero-copy: two completions per send (result, then the notification that
    // the buffer is free again), many connections, short sends under backpressure.
    let mut cfg = config(Mode::Echo);
    cfg.uring.send_zc_min = 1;
    // Sends straight out of a receive buffer are plain sends: copy into output buffers.
    cfg.uring.echo_zero_copy = false;
    let Some(server) = start(cfg) else { return };
    let echoed = busy_echo(server.local_addr(), 200, 4, 5, 20_000);
    let big = busy_echo(server.local_addr(), 2, 2, 2, 4 << 20);
    let c = stop(server);
    assert_eq!(echoed, 200 * 5 * 20_000);
    assert_eq!(c.conn.bytes_out, echoed + big, "{c:?}");
    assert_eq!(c.conn.bytes_in, c.conn.bytes_out, "{c:?}");
    assert!(c.uring_zc_sends > 1000, "the sends went zero-copy: {c:?}");
}

/// The proxy with 8 receive buffers for 200 busy pairs (400 multishot receives), relaying to
/// an epoll echo upstream: ENOBUFS and re-arms on both sides of each pair, and with the
/// zero-copy relay, buffers held by sends on top. Every byte must arrive, in both directions.
fn tiny_buffer_ring_proxy(zero_copy: bool) {
    let up_cfg = config_on(Mode::Echo, Backend::Epoll);
    let upstream = Server::start(up_cfg, None).expect("epoll echo upstream");
    let mut cfg = config(Mode::Proxy);
    cfg.groups = vec![Group::new("t", vec![Upstream { addr: upstream.local_addr(), weight: 1 }])];
    cfg.listeners[0].group = Some(0);
    cfg.uring.buf_count = 8;
    cfg.uring.buf_size = 256;
    cfg.uring.zero_copy_relay = zero_copy;
    let Some(server) = start(cfg) else { return };
    let echoed = busy_echo(server.local_addr(), 200, 8, 5, 3000);
    assert_eq!(echoed, 200 * 5 * 3000);
    let live = wait_counters(&server, "every pair closed", |c| c.conn.closed_total() == 200);
    let c = stop(server);
    stop(upstream);
    assert_eq!(c.conn.bytes_in, 2 * echoed, "{c:?}");
    assert_eq!(c.conn.bytes_out, 2 * echoed, "{c:?}");
    assert_eq!((c.accepted, c.conn.closed_by(CloseReason::Normal), c.upstream_failures), (200, 200, 0), "{c:?}");
    assert!(live.uring_enobufs > 0, "8 buffers for 400 busy receives must run dry: {live:?}");
    eprintln!("zero-copy {zero_copy}: enobufs {} rearms {}", c.uring_enobufs, c.uring_rearms);
}

#[test]
fn tiny_buffer_ring_proxy_relays_every_byte() {
    tiny_buffer_ring_proxy(false);
}

#[test]
fn tiny_buffer_ring_zero_copy_proxy_relays_every_byte() {
    tiny_buffer_ring_proxy(true);
}

#[test]
fn tiny_queues_lose_nothing_and_do_not_spin() {
    let mut cfg = config(Mode::Echo);
    cfg.uring.sq_entries = 8; // CQ 32, for 300 multishot receives
    let Some(server) = start(cfg) else { return };
    let (conns, rounds) = (300, 10);
    let echoed = busy_echo(server.local_addr(), conns, 6, rounds, 700);
    assert_eq!(echoed, (conns * rounds * 700) as u64);
    let busy = wait_counters(&server, "every connection closed", |c| {
        c.conn.bytes_out == echoed && c.conn.closed_total() == conns as u64
    });
    assert_eq!(busy.conn.bytes_in, echoed);
    // Each message is a receive and a send, each connection an accept and a close; allow for
    // tiny batches, not for spinning.
    let events = (conns * (rounds + 2)) as u64;
    assert!(busy.wakeups <= 10 * events + 100, "{} wakeups for {events} events", busy.wakeups);
    // Idle, only the sweep timer (every 250 ms) wakes the loop. Over a window of about a
    // second (measured, however long it really lasts), allow ten times that: a loop that
    // spins wakes up thousands of times.
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let idle = snapshot(&server);
    let ticks = window.elapsed().as_millis() as u64 / 250 + 1;
    let idle_wakeups = idle.wakeups - busy.wakeups;
    assert!(idle_wakeups <= 10 * ticks + 20, "{idle_wakeups} wakeups in {:?} with nothing to do", window.elapsed());
    let c = stop(server);
    assert_eq!(c.conn.closed_total(), conns as u64);
    eprintln!("wakeups {} rearms {} enobufs {}", c.wakeups, c.uring_rearms, c.uring_enobufs);
}

/// Read until EOF; fails when the FIN does not come within the socket's read timeout
/// (IO_TIMEOUT) or 10000 reads.
fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..10_000 {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("waiting for FIN: {e} (after {} bytes)", got.len()),
        }
    }
    panic!("no FIN after 10000 reads");
}

fn round_trip(s: &mut TcpStream) {
    s.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
}

// A socket closed while a request still uses it stays open in the kernel until the request
// ends: without the cancel-then-close sequence the FIN would wait for the worker to tear its
// ring down. So each test below waits (bounded) for the FIN while the worker keeps running.

#[test]
fn fin_is_prompt_when_shutdown_closes_an_idle_connection() {
    let mut cfg = config(Mode::Echo);
    // Far beyond the FIN's wait (IO_TIMEOUT): a close left to the deadline fails the test.
    cfg.shutdown_timeout = Duration::from_secs(120);
    let Some(server) = start(cfg) else { return };
    let mut s = connect(server.local_addr());
    round_trip(&mut s); // the multishot receive is armed
    server.shutdown_handle().trigger();
    assert!(read_to_eof(&mut s).is_empty());
    let c = server.join().expect("join")[0];
    assert_eq!((c.conn.closed_total(), c.conn.closed_by(CloseReason::Normal)), (1, 1), "{c:?}");
}

#[test]
fn fin_is_prompt_when_the_idle_timeout_closes() {
    let mut cfg = config(Mode::Echo);
    cfg.listeners[0].stream.timeouts.idle = Some(Duration::from_millis(200));
    let Some(server) = start(cfg) else { return };
    let mut s = connect(server.local_addr());
    round_trip(&mut s);
    let reader = std::thread::spawn(move || read_to_eof(&mut s));
    let closed = wait_counters(&server, "the idle close", |c| c.conn.closed_by(CloseReason::Idle) == 1);
    // The server runs until the FIN is in.
    assert!(reader.join().expect("the FIN arrives while the worker runs").is_empty());
    assert_eq!(closed.conn.closed_total(), 1);
    stop(server);
}

#[test]
fn fin_is_prompt_after_http_connection_close() {
    let Some(server) = start(config(Mode::Http)) else { return };
    let mut s = connect(server.local_addr());
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).unwrap(); // keep-alive: the receive stays armed
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    // The server runs until the FIN is in.
    let rest = read_to_eof(&mut s);
    let text = String::from_utf8_lossy(&rest);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 1, "{text}");
    let c = stop(server);
    assert_eq!(c.conn.requests, 2, "{c:?}");
}

#[test]
fn backpressure_pauses_and_resumes_reading() {
    let mut cfg = config(Mode::Echo);
    cfg.listeners[0].stream.watermarks.high = 64 * 1024;
    cfg.listeners[0].stream.watermarks.low = 16 * 1024;
    let Some(server) = start(cfg) else { return };
    // A small, fixed receive buffer (no autotuning) so that the kernel cannot absorb it all.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    sock.connect_timeout(&server.local_addr().into(), IO_TIMEOUT).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let data = Arc::new(pattern(1, 2, 16 << 20));
    let writer = {
        let mut w = s.try_clone().unwrap();
        w.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let data = data.clone();
        std::thread::spawn(move || w.write_all(&data).expect("write"))
    };
    // Read nothing: the server must stop reading rather than buffer it all. Wait for the
    // pause, then for reading to stop (a server that went on reading would read all 16 MiB).
    wait_counters(&server, "a backpressure pause", |c| c.conn.backpressure_pauses >= 1);
    let b = wait_reading_stopped(&server);
    assert!(b.conn.bytes_in < 12 << 20, "read {} bytes while the peer read nothing", b.conn.bytes_in);
    let mut got = vec![0u8; data.len()];
    s.read_exact(&mut got).expect("echo back");
    assert!(got == *data, "bytes differ");
    writer.join().unwrap();
    let c = stop(server);
    assert_eq!(c.conn.bytes_out, data.len() as u64);
    assert!(c.conn.backpressure_pauses >= 2, "paused and resumed more than once over 16 MiB: {c:?}");
}

/// Wait (bounded) until the server's byte count stops moving for a tenth of a second.
fn wait_reading_stopped(server: &Server) -> Counters {
    let end = Instant::now() + Duration::from_secs(20);
    let mut last = snapshot(server);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = snapshot(server);
        if now.conn.bytes_in == last.conn.bytes_in {
            return now;
        }
        assert!(Instant::now() < end, "the server never stopped reading: {now:?}");
        last = now;
    }
}

#[test]
fn max_conns_pauses_accepting_until_a_connection_closes() {
    let mut cfg = config(Mode::Echo);
    cfg.max_conns = 2;
    let Some(server) = start(cfg) else { return };
    let addr = server.local_addr();
    let mut a = connect(addr);
    let mut b = connect(addr);
    round_trip(&mut a);
    round_trip(&mut b);
    wait_counters(&server, "two accepts", |c| c.accepted == 2);
    let mut third = connect(addr); // completes in the kernel backlog, not accepted yet
    third.write_all(b"wait").unwrap();
    // The worker handled whatever `third` caused before it answers `b` again.
    round_trip(&mut b);
    assert_eq!(snapshot(&server).accepted, 2, "accepted beyond --max-conns");
    third.set_nonblocking(true).unwrap();
    let mut early = [0u8; 4];
    let r = third.read(&mut early);
    assert!(matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "served beyond --max-conns: {r:?}");
    third.set_nonblocking(false).unwrap();
    drop(a);
    let mut reply = [0u8; 4];
    third.read_exact(&mut reply).expect("served once a slot is free");
    assert_eq!(&reply, b"wait");
    round_trip(&mut b);
    stop(server);
}

// ---- io_uring refused by seccomp ----------------------------------------------------------

fn with_seccomp(cmd: &mut Command) -> &mut Command {
    ringpoll_sys::testing::seccomp::deny_io_uring_setup_on_exec(cmd)
}

/// The `ringpoll` binary next to this test's directory, if it has been built.
fn ringpoll_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("ringpoll");
    bin.is_file().then_some(bin)
}

/// Run `cmd` under the filter (bounded); returns (exit code, stdout, stderr).
fn run_refused(cmd: &mut Command) -> (Option<i32>, String, String) {
    let mut child =
        with_seccomp(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped())).spawn().expect("spawn");
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not exit although io_uring is forbidden");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code(), out, err)
}

fn assert_refusal(code: Option<i32>, out: &str, err: &str) {
    assert_eq!(code, Some(1), "exit code; stdout {out:?} stderr {err:?}");
    assert!(!out.contains("listening on"), "{out}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {err:?}");
    let line = lines[0];
    assert!(line.contains("io_uring") && line.contains("EPERM"), "{line}");
    assert!(line.contains("--backend epoll"), "{line}");
}

/// Child half of `refused_io_uring_is_one_clear_line`: does nothing unless re-executed.
#[test]
fn seccomp_child_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    match Server::start(config(Mode::Echo), None) {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            eprintln!("ringpoll: error: {e}");
            std::process::exit(1);
        }
    }
}

#[test]
fn refused_io_uring_is_one_clear_line() {
    // In-process server in a re-executed test binary (always available).
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", "seccomp_child_entry", "--nocapture", "--test-threads=1", "-q"]).env(CHILD_ENV, "1");
    let (code, _out, err) = run_refused(&mut cmd);
    let msg: Vec<&str> = err.lines().filter(|l| l.starts_with("ringpoll: error:")).collect();
    assert_eq!(code, Some(1), "stderr {err:?}");
    assert_eq!(msg.len(), 1, "{err}");
    assert!(
        msg[0].contains("io_uring") && msg[0].contains("EPERM") && msg[0].contains("--backend epoll"),
        "{}",
        msg[0]
    );

    // The real binary, when it has been built alongside.
    match ringpoll_binary() {
        Some(bin) => {
            let mut cmd = Command::new(bin);
            cmd.args(["serve", "--backend", "uring", "--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"]);
            let (code, out, err) = run_refused(&mut cmd);
            assert_refusal(code, &out, &err);
        }
        None => eprintln!("note: target/*/ringpoll not built; checked the in-process server only"),
    }
}

#[test]
fn refused_io_uring_skips_visibly_or_fails_when_required() {
    // One io_uring test of this binary, run the way `cargo test` runs it (output captured),
    // in a process that cannot set up io_uring.
    const TEST: &str = "fin_is_prompt_after_http_connection_close";
    let exe = std::env::current_exe().unwrap();
    let run = |required: bool| {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", TEST, "--test-threads=1"]);
        if required {
            cmd.env(REQUIRE_URING, "1");
        } else {
            cmd.env_remove(REQUIRE_URING);
        }
        run_refused(&mut cmd)
    };
    let (code, out, err) = run(false);
    assert_eq!(code, Some(0), "stdout {out:?} stderr {err:?}");
    assert!(out.contains("1 passed"), "{out}");
    let line = format!("SKIP {TEST}: the kernel refuses io_uring: io_uring is not available");
    assert!(err.contains(&line) && err.contains("EPERM"), "the skip is not visible: stdout {out:?} stderr {err:?}");
    let (code, out, err) = run(true);
    assert_eq!(code, Some(101), "stdout {out:?} stderr {err:?}");
    assert!(out.contains("1 failed") && out.contains("io_uring is required"), "stdout {out:?} stderr {err:?}");
}
