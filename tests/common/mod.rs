//! Shared helpers for the end-to-end tests: start the real binary on 127.0.0.1:0, talk to it
//! with blocking sockets (every read and write bounded by a timeout), and run one test body
//! over every backend it applies to.
#![allow(dead_code)]

pub mod http;
pub mod metrics;
pub mod proxy;
pub mod upstream;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ringpoll");
/// Upper bound for any single blocking socket operation in the tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// Every backend the server offers. The uring cases skip only when the kernel refuses io_uring,
/// with a `SKIP` line in the `cargo test` output; with RINGPOLL_REQUIRE_URING=1 (as in CI)
/// they fail instead.
pub const BACKENDS: [&str; 6] = ["epoll", "uring", "poll", "select", "epoll-lt", "epoll-et"];

/// Generate one `#[test]` per backend for each named test body `fn name(backend: &str)`, and
/// two more for io_uring: every optional technique on (`uring+on`) and every one off
/// (`uring+off`); plain `uring` runs the defaults (see [`backend_args`]).
#[macro_export]
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod epoll { $( #[test] fn $name() { super::$name("epoll") } )* }
        mod uring { $( #[test] fn $name() { if $crate::common::uring_usable() { super::$name("uring") } } )* }
        mod uring_techniques_on {
            $( #[test] fn $name() { if $crate::common::uring_usable() { super::$name("uring+on") } } )*
        }
        mod uring_techniques_off {
            $( #[test] fn $name() { if $crate::common::uring_usable() { super::$name("uring+off") } } )*
        }
        mod poll { $( #[test] fn $name() { super::$name("poll") } )* }
        mod select { $( #[test] fn $name() { super::$name("select") } )* }
        mod epoll_lt { $( #[test] fn $name() { super::$name("epoll-lt") } )* }
        mod epoll_et { $( #[test] fn $name() { super::$name("epoll-et") } )* }
    };
}

/// Whether this process runs as root (network namespaces need it).
#[allow(dead_code)] // not every test crate uses it
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Uid:")).map(|v| v.split_whitespace().next() == Some("0")))
        .unwrap_or(false)
}

/// The io_uring techniques switched together by the `uring+on` and `uring+off` variants.
const URING_TECHNIQUES: [&str; 6] = [
    "--uring-fixed-files",
    "--uring-bundle",
    "--uring-buf-inc",
    "--uring-sqpoll",
    "--uring-reg-wait",
    "--uring-huge-pages",
];

/// A test's backend name as `ringpoll serve` flags for `mode`: `uring+on` and `uring+off` are
/// `--backend uring` with every optional technique on or off (the echo-only and proxy-only
/// ones where they apply); anything else is the backend itself.
pub fn backend_args(backend: &str, mode: &str) -> Vec<&'static str> {
    let (name, switch) = match backend.split_once('+') {
        Some(("uring", v @ ("on" | "off"))) => ("uring", v),
        Some((_, v)) => panic!("unknown backend variant {v} of {backend}"),
        None => return vec!["--backend", BACKENDS.into_iter().find(|b| *b == backend).expect("a known backend")],
    };
    let on = switch == "on";
    let mut args = vec!["--backend", name];
    for flag in URING_TECHNIQUES {
        args.extend([flag, if on { "on" } else { "off" }]);
    }
    match mode {
        "echo" => args.extend(["--uring-echo-zero-copy", if on { "on" } else { "off" }]),
        "proxy" => args.extend(["--uring-relay", if on { "zero-copy" } else { "copy" }]),
        _ => {}
    }
    args
}

/// Whether io_uring can be used here. When it cannot, the calling test fails if io_uring is
/// required, and otherwise says that it skips (see `ringpoll_sys::testing::uring_refused`).
pub fn uring_usable() -> bool {
    static PROBE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let r = PROBE.get_or_init(|| match ServerProc::try_start("uring", "echo", &[]) {
        Ok(_) => Ok(()),
        Err(msg) if msg.contains("io_uring is not available") => Err(msg),
        // Any other failure is a real bug: let the test run and fail loudly.
        Err(_) => Ok(()),
    });
    match r {
        Ok(()) => true,
        Err(msg) => {
            ringpoll_sys::testing::uring_refused(msg);
            false
        }
    }
}

/// A running `ringpoll serve` child; killed on drop.
pub struct ServerProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub stderr: Option<ChildStderr>,
    /// The stdout lines after the first.
    lines: mpsc::Receiver<String>,
    /// Stderr read as it comes (see [`ServerProc::collect_stderr`]).
    collected: Option<Collected>,
}

/// Stderr read so far, and the thread reading it.
type Collected = (Arc<Mutex<Vec<u8>>>, JoinHandle<()>);

impl ServerProc {
    /// Start `ringpoll serve --listen 127.0.0.1:0 --workers 1 --no-pin` plus `extra`.
    pub fn start(backend: &str, mode: &str, extra: &[&str]) -> Self {
        Self::try_start(backend, mode, extra).unwrap_or_else(|e| panic!("starting {backend}/{mode}: {e}"))
    }

    pub fn try_start(backend: &str, mode: &str, extra: &[&str]) -> Result<Self, String> {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--mode", mode];
        args.extend(backend_args(backend, mode));
        if !extra.contains(&"--workers") {
            args.extend(["--workers", "1"]);
        }
        if !extra.contains(&"--pin") {
            args.push("--no-pin");
        }
        // `--pin` is the tests' way of saying "leave pinning on" (the CLI pins by default).
        args.extend(extra.iter().copied().filter(|a| *a != "--pin"));
        Self::spawn(Command::new(BIN).args(&args))
    }

    /// Spawn a prepared command whose first stdout line is `listening on ADDR`.
    pub fn spawn(cmd: &mut Command) -> Result<Self, String> {
        if !cmd.get_envs().any(|(k, _)| k == "RINGPOLL_LOG") {
            cmd.env("RINGPOLL_LOG", "warn");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Every line goes to the test (which may ignore them): the server never blocks
            // on a full pipe.
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                let _ = tx.send(std::mem::take(&mut line));
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let Some(addr) = line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok()) else {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            return Err(format!("no `listening on` line (got {line:?}); stderr: {}", err.trim()));
        };
        let stderr = child.stderr.take();
        Ok(Self { child, addr, stderr, lines: rx, collected: None })
    }

    /// The `--metrics` address (the server's next stdout line, `metrics on http://ADDR/metrics`).
    pub fn metrics_addr(&self) -> SocketAddr {
        let line = self.stdout_line(Duration::from_secs(20)).unwrap_or_default();
        line.strip_prefix("metrics on http://")
            .and_then(|a| a.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no `metrics on http://ADDR/metrics` line (got {line:?})"))
    }

    /// The next stdout line (after `listening on ADDR`), waiting at most `within`.
    pub fn stdout_line(&self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok().map(|l| l.trim_end().to_string())
    }

    /// Read stderr from now on as it comes (for servers that write much of it), so that
    /// [`ServerProc::stderr_so_far`] and `terminate` see it.
    pub fn collect_stderr(&mut self) {
        let Some(mut e) = self.stderr.take() else { return };
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let handle = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = e.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        self.collected = Some((buf, handle));
    }

    /// What [`ServerProc::collect_stderr`] has read so far.
    pub fn stderr_so_far(&self) -> String {
        self.collected
            .as_ref()
            .map(|(b, _)| String::from_utf8_lossy(&b.lock().unwrap()).into_owned())
            .unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Send SIGTERM and wait (bounded) for the exit; returns (exit code, stderr).
    pub fn terminate(self, within: Duration) -> (Option<i32>, String) {
        signal(self.pid(), "TERM");
        self.terminate_after_signal(within)
    }

    /// Wait (bounded) for the exit after a signal was sent; returns (exit code, stderr).
    pub fn terminate_after_signal(mut self, within: Duration) -> (Option<i32>, String) {
        let status = wait_exit(&mut self.child, within);
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        if let Some((buf, handle)) = self.collected.take() {
            let _ = handle.join();
            err = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
        }
        (status, err)
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().map(|s| s.success());
    assert_eq!(ok.ok(), Some(true), "kill -{sig} {pid}");
}

/// Wait for a child to exit, at most `within`; kills it if it does not. Returns its code.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<i32> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Read until EOF (bounded by the socket's read timeout).
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).unwrap_or_else(|e| panic!("read to EOF: {e} (after {} bytes)", v.len()));
    v
}

/// Read exactly `n` bytes.
pub fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    s.read_exact(&mut v).unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    v
}

/// Write everything then shut down the write side.
pub fn write_and_shutdown(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
}

/// Make the next close send RST (SO_LINGER 0).
pub fn set_linger_zero(s: &TcpStream) {
    socket2::SockRef::from(s).set_linger(Some(Duration::ZERO)).unwrap();
}

/// Small deterministic PRNG (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// Random bytes, with a random length in `lo..=hi`.
    pub fn bytes_in(&mut self, lo: usize, hi: usize) -> Vec<u8> {
        let n = self.range(lo, hi);
        self.bytes(n)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// FNV-1a, to compare large payloads cheaply in messages.
pub fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Resident set size of a process in KiB (/proc/PID/status VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Open descriptors of a process, counting the sockets in its io_uring fixed file tables
/// (direct descriptors have no descriptor number: the ring's fdinfo lists them).
pub fn fd_count(pid: u32) -> usize {
    fd_count_below(pid, usize::MAX)
}

/// Like [`fd_count`], but only descriptors numbered below `limit`: what counts against an
/// RLIMIT_NOFILE of `limit`. (A descriptor the test's own environment leaked into the process
/// may have any number, and one above the limit must not make the process look full.)
pub fn fd_count_below(pid: u32, limit: usize) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    let mut n = 0;
    for e in dir.flatten() {
        if e.file_name().to_str().and_then(|f| f.parse::<usize>().ok()).is_none_or(|fd| fd >= limit) {
            continue;
        }
        n += 1;
        if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("io_uring")) {
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_string_lossy()));
            n += info.map_or(0, |i| fixed_files_in(&i));
        }
    }
    n
}

/// Occupied slots of the fixed file table in an io_uring's fdinfo (`UserFiles:` is followed by
/// one `  SLOT: NAME` line per occupied slot).
fn fixed_files_in(fdinfo: &str) -> usize {
    fdinfo
        .lines()
        .skip_while(|l| !l.starts_with("UserFiles:"))
        .skip(1)
        .take_while(|l| {
            l.starts_with(' ') && l.trim_start().split_once(':').is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        })
        .count()
}

/// A counter of the server's exit summary (`... wakeups 12 ...`), summed over its lines.
pub fn summary_counter(stderr: &str, name: &str) -> u64 {
    let mut total = None;
    for line in stderr.lines().filter(|l| l.starts_with("worker ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(v) = words.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse::<u64>().ok()) {
            *total.get_or_insert(0) += v;
        }
    }
    total.unwrap_or_else(|| panic!("no `{name}` in the summary: {stderr}"))
}

/// Poll `cond` every 10 ms until it holds or `within` passes; returns whether it held.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
