//! `--net veth`: two network namespaces joined by a veth pair, one for the server and one for
//! the load generator, so that traffic crosses a device (qdisc, GRO, softirq scheduling)
//! rather than loopback.
//!
//! Addresses come from the benchmarking range 198.18.0.0/15 and exist only inside the two
//! namespaces (a /30 on the veth ends, no routes beyond it); nothing is added to the host's
//! own namespace (the veth pair is created inside the server's namespace with its peer end
//! placed straight into the load's). Both namespaces are removed when the [`VethPair`] is
//! dropped, which `compare` does on every exit path, Ctrl-C included.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// The server's address inside its namespace.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The load generator's address inside its namespace.
pub const LOAD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// A live namespace pair; removed on drop.
#[derive(Debug)]
pub struct VethPair {
    pub server_ns: String,
    pub load_ns: String,
}

/// Whether this process may create network namespaces: it needs CAP_SYS_ADMIN (to create
/// and mount a namespace) and CAP_NET_ADMIN (to create and configure the veth pair), and the
/// `ip` tool (iproute2). The error says what is missing.
pub fn check_privilege() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .context("no CapEff in /proc/self/status")?;
    let missing: Vec<&str> = [(CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")]
        .into_iter()
        .filter(|(bit, _)| caps & (1 << bit) == 0)
        .map(|(_, name)| name)
        .collect();
    if !missing.is_empty() {
        bail!(
            "--net veth needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN, to create network namespaces and a veth pair); \
             this process lacks {}: run it as root, or leave out --net veth",
            missing.join(" and ")
        );
    }
    let on_path =
        |p: &str| std::env::var_os("PATH").is_some_and(|v| std::env::split_paths(&v).any(|d| d.join(p).is_file()));
    if !on_path("ip") && !std::path::Path::new("/usr/sbin/ip").is_file() && !std::path::Path::new("/sbin/ip").is_file()
    {
        bail!("--net veth needs the `ip` tool (Debian: iproute2)");
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl VethPair {
    /// Create `ringpoll-PID-srv` and `ringpoll-PID-load`, joined by a veth pair with
    /// 198.18.0.1/30 (server) and 198.18.0.2/30 (load), loopback up in both.
    pub fn create() -> Result<Self> {
        check_privilege()?;
        let pid = std::process::id();
        let pair = VethPair { server_ns: format!("ringpoll-{pid}-srv"), load_ns: format!("ringpoll-{pid}-load") };
        // From here on, dropping `pair` removes whatever was created.
        ip(&["netns", "add", &pair.server_ns])?;
        ip(&["netns", "add", &pair.load_ns])?;
        let (s, l) = (pair.server_ns.as_str(), pair.load_ns.as_str());
        let (sdev, ldev) = (format!("rps{pid}"), format!("rpl{pid}"));
        ip(&["-n", s, "link", "add", &sdev, "type", "veth", "peer", "name", &ldev, "netns", l])?;
        ip(&["-n", s, "addr", "add", &format!("{SERVER_IP}/30"), "dev", &sdev])?;
        ip(&["-n", l, "addr", "add", &format!("{LOAD_IP}/30"), "dev", &ldev])?;
        for (ns, dev) in [(s, sdev.as_str()), (l, ldev.as_str())] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    #[must_use]
    pub fn server_ip() -> IpAddr {
        IpAddr::V4(SERVER_IP)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace destroys the veth end inside it, and with it the pair.
        for ns in [&self.server_ns, &self.load_ns] {
            if !std::path::Path::new(&format!("/run/netns/{ns}")).exists() {
                continue;
            }
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("warning: removing network namespace {ns}: {e:#}");
            }
        }
    }
}

/// Move the calling thread into the named network namespace (for good: use a thread of its
/// own, see [`run_in`]).
pub fn enter(ns: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{ns}")).with_context(|| format!("opening network namespace {ns}"))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("entering network namespace {ns}"))
}

/// Run `f` on a thread inside network namespace `ns` (or here when `None`).
pub fn run_in<T: Send>(ns: Option<&str>, f: impl FnOnce() -> T + Send) -> Result<T> {
    let Some(ns) = ns else { return Ok(f()) };
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(ns)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| bail!("a thread in network namespace {ns} panicked"))
    })
}

/// Namespaces this tool left behind (a run killed with SIGKILL cannot clean up); removed at
/// the start of the next `--net veth` run when their process is gone.
pub fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) =
            name.strip_prefix("ringpoll-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}
