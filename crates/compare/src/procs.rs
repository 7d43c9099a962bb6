//! Starting the servers under test (pinned), reading their address, sampling their CPU time
//! and syscall counters, and stopping them.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// A server process under measurement; killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    /// ringpoll's `--metrics` endpoint, when the server is a ringpoll.
    pub metrics: Option<SocketAddr>,
    pub name: String,
    /// Kept alive for the life of the process (nginx's config and logs).
    _tmp: Option<TempDir>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so servers exit cleanly, then make sure.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(format!("ringpoll-{tag}-{}-{}", std::process::id(), nanos()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// `taskset -c CPU cmd...` when pinning is possible, else the bare command.
pub fn pinned(cpu: Option<usize>, program: &Path) -> Command {
    command(None, cpu, program)
}

/// `[ip netns exec NS] [taskset -c CPU] program` (both `ip netns exec` and `taskset` exec
/// the next program in place, so the child's PID is the program's).
pub fn command(ns: Option<&str>, cpu: Option<usize>, program: &Path) -> Command {
    let mut words: Vec<std::ffi::OsString> = Vec::new();
    if let Some(ns) = ns {
        words.extend(["ip", "netns", "exec", ns].map(Into::into));
    }
    if let Some(c) = cpu.filter(|_| have("taskset")) {
        words.extend(["taskset".into(), "-c".into(), c.to_string().into()]);
    }
    words.push(program.into());
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]);
    cmd
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    find_program(program).is_some()
}

pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Spawn a server whose first stdout line is `listening on ADDR` (and, for ringpoll with
/// `--metrics`, the second is `metrics on http://ADDR/metrics`).
pub fn spawn_announcing(mut cmd: Command, name: &str, expect_metrics: bool) -> Result<Proc> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        for _ in 0..2 {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let _ = tx.send(line);
        }
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink);
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let Some(addr) = first.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok()) else {
        let _ = child.kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        bail!("{name} did not start: {}", err.trim());
    };
    let metrics = if expect_metrics {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        line.trim()
            .strip_prefix("metrics on http://")
            .and_then(|a| a.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok())
    } else {
        None
    };
    // Drain stderr so a chatty server never blocks.
    if let Some(mut e) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = e.read_to_end(&mut sink);
        });
    }
    Ok(Proc { child, addr, metrics, name: name.to_string(), _tmp: None })
}

/// A free loopback port (bound and released: fine for servers that cannot report theirs).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Start nginx in the foreground, one process (no master), with `body` as the main context
/// additions (an `http` or `stream` block using `{PORT}`).
pub fn spawn_nginx(
    cpu: Option<usize>,
    ns: Option<&str>,
    host: std::net::IpAddr,
    name: &str,
    body: &str,
    load_stream_module: bool,
) -> Result<Proc> {
    let nginx = find_program("nginx").ok_or_else(|| anyhow!("nginx is not installed"))?;
    let tmp = TempDir::new("nginx")?;
    let port = free_port()?;
    let mut conf = String::new();
    if load_stream_module {
        let module = ["/usr/lib/nginx/modules/ngx_stream_module.so", "/usr/share/nginx/modules/ngx_stream_module.so"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| anyhow!("nginx stream module not installed (Debian: libnginx-mod-stream)"))?;
        conf.push_str(&format!("load_module {module};\n"));
    }
    let dir = tmp.0.display();
    conf.push_str(&format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n\
         events {{ worker_connections 20000; multi_accept on; }}\n"
    ));
    conf.push_str(
        &body
            .replace("{HOST}", &host.to_string())
            .replace("{PORT}", &port.to_string())
            .replace("{DIR}", &dir.to_string()),
    );
    let conf_path = tmp.0.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let mut cmd = command(ns, cpu, &nginx);
    cmd.arg("-p").arg(&tmp.0).arg("-c").arg(&conf_path).arg("-e").arg(tmp.0.join("error.log"));
    let child =
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().context("starting nginx")?;
    let addr = SocketAddr::new(host, port);
    let mut proc = Proc { child, addr, metrics: None, name: name.to_string(), _tmp: Some(tmp) };
    for _ in 0..250 {
        let up = crate::netns::run_in(ns, || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
        });
        if up.unwrap_or(false) {
            return Ok(proc);
        }
        if let Ok(Some(st)) = proc.child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = proc.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            bail!("nginx exited ({st}): {}", err.trim());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nginx did not start listening on {addr}")
}

/// CPU time of a process: (user, system) seconds from /proc/PID/stat.
pub fn cpu_times(pid: u32) -> Result<(f64, f64)> {
    let s =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after = s.rfind(')').map(|i| &s[i + 2..]).context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = clock_ticks();
    let ut: f64 = f.get(11).context("utime")?.parse::<u64>()? as f64 / tick;
    let st: f64 = f.get(12).context("stime")?.parse::<u64>()? as f64 / tick;
    Ok((ut, st))
}

/// Total CPU time of a process in seconds with nanosecond resolution (/proc/PID/schedstat,
/// summed over its threads), falling back to /proc/PID/stat.
pub fn cpu_total(pid: u32) -> Result<f64> {
    let mut total = 0u64;
    let mut any = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
                    total += ns;
                    any = true;
                }
            }
        }
    }
    if any {
        return Ok(total as f64 / 1e9);
    }
    let (u, s) = cpu_times(pid)?;
    Ok(u + s)
}

fn clock_ticks() -> f64 {
    // Linux has used USER_HZ = 100 for /proc on every architecture for decades.
    100.0
}

/// Sum of one counter over every worker from a ringpoll `--metrics` endpoint.
pub fn scrape_counter(addr: SocketAddr, counter: &str) -> Result<u64> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let prefix = format!("ringpoll_{counter}{{");
    Ok(body.lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum())
}

/// Resident set size of a process in KiB (/proc/PID/status VmRSS).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS missing from /proc/PID/status")
}
