//! `ringpoll serve` start-up as a user meets it: a port someone holds is refused (exit 1, one
//! line, on every backend), and so is the second of two ringpolls started on one address at once, bad flag values exit 2 with one clap-style line, the pinning message
//! tells the truth once, and `--listen` resolves host names.

mod common;

use std::io::Write;
use std::process::Command;

use common::*;

on_every_backend!(
    a_port_another_process_holds_is_refused,
    of_two_ringpolls_starting_on_one_address_at_once_only_one_serves,
    of_two_ringpolls_starting_at_once_on_overlapping_addresses_of_one_port_only_one_serves
);

/// `ringpoll serve ARGS` to completion: (exit code, stdout, stderr). One that is still running
/// after 20 s (it started although it should not have) is killed by `wait_exit`, and the code
/// is `None`.
fn serve(args: &[&str]) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("RINGPOLL_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut child, std::time::Duration::from_secs(20));
    let (mut out, mut err) = (String::new(), String::new());
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (code, out, err)
}

fn a_port_another_process_holds_is_refused(backend: &str) {
    let first = ServerProc::start(backend, "echo", &["--workers", "2"]);
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    for (holder, addr) in [("a ringpoll", first.addr), ("a plain listener", plain.local_addr().unwrap())] {
        let a = addr.to_string();
        for mode in ["echo", "http"] {
            let what = format!("{backend}/{mode}, port held by {holder}");
            let mut args = vec!["--listen", a.as_str(), "--mode", mode, "--no-pin"];
            args.extend(backend_args(backend, mode));
            let (code, stdout, err) = serve(&args);
            assert_eq!(code, Some(1), "{what}: {stdout}{err}");
            assert!(stdout.is_empty(), "{what}: printed {stdout:?}");
            assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
            assert!(
                err.contains(&format!("cannot listen on {a}: another process already listens there")),
                "{what}: {err}"
            );
        }
    }
    // The first one still serves, alone.
    for i in 0..20u8 {
        let mut c = first.connect();
        c.write_all(&[i]).unwrap();
        assert_eq!(read_exact(&mut c, 1), [i], "{backend}");
    }
}

/// A loopback address with a port nothing listens on at the moment.
fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Start `x` and `y` at the same moment (through a barrier): exactly one may serve. That one,
/// and the other's error.
fn exactly_one_serves(what: &str, x: &mut Command, y: &mut Command) -> (ServerProc, String) {
    let gate = std::sync::Barrier::new(2);
    let start = |c: &mut Command| {
        gate.wait();
        ServerProc::spawn(c)
    };
    let (x, y) = std::thread::scope(|s| {
        let (x, y) = (s.spawn(|| start(x)), s.spawn(|| start(y)));
        (x.join().unwrap(), y.join().unwrap())
    });
    match (x, y) {
        (Ok(p), Err(e)) | (Err(e), Ok(p)) => (p, e),
        (Ok(_), Ok(_)) => panic!("{what}: both serve"),
        (Err(e1), Err(e2)) => panic!("{what}: neither serves: {e1} / {e2}"),
    }
}

fn of_two_ringpolls_starting_on_one_address_at_once_only_one_serves(backend: &str) {
    let args = |a: &str| -> Vec<String> {
        let mut v: Vec<String> = ["serve", "--listen", a, "--mode", "echo", "--no-pin"].map(String::from).to_vec();
        v.extend(backend_args(backend, "echo").into_iter().map(String::from));
        v
    };
    // Another ringpoll has claimed the address and not bound it yet: refused, though
    // nothing listens there.
    let addr = free_addr();
    let claim = ringpoll_sys::socket::claim_port(addr).unwrap().expect("nobody claims a fresh port");
    let a = addr.to_string();
    let (code, stdout, err) = serve(&args(&a).iter().skip(1).map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(1), "{backend}: {stdout}{err}");
    assert!(stdout.is_empty(), "{backend}: printed {stdout:?}");
    assert_eq!(err.trim().lines().count(), 1, "{backend}: one line: {err}");
    assert!(err.contains(&format!("cannot listen on {a}: another ringpoll is starting on it")), "{backend}: {err}");
    drop(claim);
    let started = ServerProc::spawn(Command::new(BIN).args(args(&a)));
    assert!(started.is_ok(), "{backend}: the released claim is free again: {:?}", started.err());
    drop(started);

    // Two started at the same moment, a few times: one serves, the other is refused.
    for attempt in 0..4 {
        let a = free_addr().to_string();
        let what = format!("{backend}, attempt {attempt}, {a}");
        let (mut x, mut y) = (Command::new(BIN), Command::new(BIN));
        let (served, refused) = exactly_one_serves(&what, x.args(args(&a)), y.args(args(&a)));
        assert!(
            refused.contains(&format!("cannot listen on {a}: another")),
            "{what}: refused for another reason: {refused}"
        );
        let mut c = served.connect();
        c.write_all(b"x").unwrap();
        assert_eq!(read_exact(&mut c, 1), b"x", "{what}");
    }
}

/// A network namespace of the test's own, with its loopback up; deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        for args in [vec!["netns", "add", &name], vec!["-n", &name, "link", "set", "lo", "up"]] {
            let o = Command::new("ip").args(&args).output().expect("running ip");
            assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Self(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn of_two_ringpolls_starting_at_once_on_overlapping_addresses_of_one_port_only_one_serves(backend: &str) {
    // A wildcard listener with a specific one on the same port: each claims its own address,
    // so only the port's start lock keeps them from both finding the port free. The wildcard
    // is bound inside a namespace of the test's own, where it reaches nothing else.
    if !running_as_root() {
        eprintln!("SKIP: a network namespace needs root");
        return;
    }
    let ns = Netns::new(format!("ringpoll-cli-{}-{}", std::process::id(), backend.replace('+', "-")));
    let args = |a: &str| -> Vec<String> {
        let mut v: Vec<String> = ["netns", "exec", &ns.0, BIN, "serve", "--listen", a, "--mode", "echo", "--no-pin"]
            .map(String::from)
            .to_vec();
        v.extend(backend_args(backend, "echo").into_iter().map(String::from));
        v
    };
    for attempt in 0..4u16 {
        let port = 8080 + attempt;
        let (wild, local) = (format!("0.0.0.0:{port}"), format!("127.0.0.1:{port}"));
        let what = format!("{backend}, attempt {attempt}, {wild} and {local}");
        let (mut x, mut y) = (Command::new("ip"), Command::new("ip"));
        let (served, refused) = exactly_one_serves(&what, x.args(args(&wild)), y.args(args(&local)));
        assert!(refused.contains("cannot listen on") && refused.contains("another"), "{what}: {refused}");
        drop(served);
    }
}

#[test]
fn bad_values_exit_2_with_one_clap_style_line() {
    for (args, flag) in [
        (vec!["--workers", "0"], "--workers"),
        (vec!["--workers", "5000"], "--workers"),
        (vec!["--workers", "three"], "--workers"),
        (vec!["--max-conns", "0"], "--max-conns"),
        (vec!["--mode", "http", "--max-body", "lots"], "--max-body"),
        (vec!["--mode", "http", "--max-body", "1XB"], "--max-body"),
        (vec!["--high-watermark", "64kilo"], "--high-watermark"),
        (vec!["--low-watermark=-5"], "--low-watermark"),
        (vec!["--mode", "http", "--header-timeout", "soon"], "--header-timeout"),
        (vec!["--send-timeout", "5 parsecs"], "--send-timeout"),
        (vec!["--shutdown-timeout=-1s"], "--shutdown-timeout"),
        (vec!["--idle-timeout", "1h1"], "--idle-timeout"),
        (vec!["--mode", "http", "--keepalive-requests", "many"], "--keepalive-requests"),
        (vec!["--uring-bufs", "70000"], "--uring-bufs"),
        (vec!["--listen", "127.0.0.1:99999"], "--listen"),
        (vec!["--metrics", "127.0.0.1"], "--metrics"),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0", "--no-pin"];
        if args[0] == "--listen" {
            all.clear();
        }
        all.extend(&args);
        let (code, stdout, err) = serve(&all);
        assert_eq!(code, Some(2), "{args:?}: {stdout}{err}");
        assert!(stdout.is_empty(), "{args:?}: printed {stdout:?}");
        let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {err}");
        assert!(errors[0].starts_with("error: invalid value '"), "{args:?}: not clap's style: {err}");
        assert!(errors[0].contains(&format!("for '{flag}")), "{args:?}: does not name {flag}: {err}");
        // Besides the error, at most clap's pointer to --help.
        let others: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty() && !l.contains("error")).collect();
        assert!(others.iter().all(|l| l.contains("--help")), "{args:?}: {err}");
    }
    // Combinations are judged by the one validation layer: exit 2, one line.
    for (args, needle) in [
        (vec!["--low-watermark", "1MiB", "--high-watermark", "64KiB"], "low-watermark must not exceed high-watermark"),
        (vec!["--mode", "echo", "--max-body", "1KiB"], "--max-body applies to --mode http"),
        (vec!["--mode", "proxy"], "--upstream"),
    ] {
        let mut all = vec!["--listen", "127.0.0.1:0", "--no-pin"];
        all.extend(&args);
        let (code, stdout, err) = serve(&all);
        assert_eq!(code, Some(2), "{args:?}: {stdout}{err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("error: ") && err.contains(needle), "{args:?}: {err}");
    }
}

/// CPUs this process may run on (its affinity mask), as the server counts them.
fn usable_cpus() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim();
    list.split(',')
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// CPU lists of the worker threads.
fn worker_cpus(pid: u32) -> Vec<String> {
    let mut v = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim().starts_with("ringpoll-w") {
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            v.push(status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap().trim().to_string());
        }
    }
    v
}

#[test]
fn the_pinning_message_is_stated_once_and_is_true() {
    let cpus = usable_cpus();
    let all = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    for (workers, pinned) in [(cpus + 1, false), (cpus, true)] {
        let n = workers.to_string();
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--workers", &n]).env("RINGPOLL_LOG", "info");
        let srv = ServerProc::spawn(&mut cmd).unwrap_or_else(|e| panic!("--workers {n}: {e}"));
        let threads = worker_cpus(srv.pid());
        let (code, err) = srv.terminate(IO_TIMEOUT);
        assert_eq!(code, Some(0), "{err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.contains("pinned") || l.contains("pinning")).collect();
        assert_eq!(lines.len(), 1, "--workers {n} on {cpus} CPU(s): pinning told once: {err}");
        assert_eq!(threads.len(), workers, "{threads:?}");
        if pinned {
            assert!(lines[0].contains("pinned, one core each"), "--workers {n}: {err}");
            assert!(threads.iter().all(|c| c.parse::<usize>().is_ok()), "one CPU per worker: {threads:?}");
        } else {
            assert!(lines[0].contains("not pinning") && !lines[0].contains(" pinned"), "--workers {n}: {err}");
            assert!(threads.iter().all(|c| *c == all), "unpinned workers may run anywhere ({all}): {threads:?}");
        }
    }
}

#[test]
fn listen_resolves_host_names() {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "localhost:0", "--workers", "1", "--no-pin"]);
    let srv = ServerProc::spawn(&mut cmd).unwrap_or_else(|e| panic!("--listen localhost:0: {e}"));
    assert!(srv.addr.ip().is_loopback() && srv.addr.port() != 0, "listening on {}", srv.addr);
    let mut c = srv.connect();
    c.write_all(b"by name").unwrap();
    assert_eq!(read_exact(&mut c, 7), b"by name");
    let (code, err) = srv.terminate(IO_TIMEOUT);
    assert_eq!(code, Some(0), "{err}");
}
