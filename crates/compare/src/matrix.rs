//! What is compared: the workloads and the servers (ringpoll backends and reference peers).

use serde::{Deserialize, Serialize};

/// The protocol a workload speaks to the server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Echo,
    Http,
    /// Echo traffic through the server in proxy mode to a ringpoll echo upstream.
    Proxy,
}

impl Proto {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Proto::Echo => "echo",
            Proto::Http => "http",
            Proto::Proxy => "proxy",
        }
    }
}

/// The network path between the load generator and the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// 127.0.0.1 in the host's namespace.
    #[default]
    Loopback,
    /// Two network namespaces joined by a veth pair (198.18.0.0/15 inside them only).
    Veth,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    pub proto: Proto,
    /// Echo message size in bytes.
    pub size: usize,
    pub conns: usize,
    /// Requests in flight per connection.
    pub depth: usize,
    /// Extra idle connections held open during the run.
    pub idle: usize,
    /// HTTP: request path ("" = `/`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default)]
    pub net: Net,
    /// Given with `--workload` rather than built in.
    #[serde(default)]
    pub custom: bool,
    /// Open loop at this many requests/s (`rate=`); closed loop when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
}

impl Workload {
    pub(crate) fn new(name: &str, proto: Proto, size: usize, conns: usize, depth: usize) -> Self {
        Self {
            name: name.into(),
            proto,
            size,
            conns,
            depth,
            idle: 0,
            path: String::new(),
            net: Net::Loopback,
            custom: false,
            rate: None,
        }
    }

    /// The same workload over the veth pair (named `NAME@veth`).
    #[must_use]
    pub fn over_veth(&self) -> Self {
        Self { name: format!("{}@veth", self.name), net: Net::Veth, ..self.clone() }
    }

    /// The parameters in the `--workload` syntax (`echo size=64B conns=64 depth=1`).
    #[must_use]
    pub fn params(&self) -> String {
        let mut s = self.proto.name().to_string();
        if self.proto != Proto::Http {
            s.push_str(&format!(" size={}", fmt_size(self.size)));
        }
        s.push_str(&format!(" conns={} depth={}", self.conns, self.depth));
        if self.idle > 0 {
            s.push_str(&format!(" idle={}", self.idle));
        }
        if !self.path.is_empty() {
            s.push_str(&format!(" path={}", self.path));
        }
        if let Some(r) = self.rate {
            s.push_str(&format!(" rate={r}"));
        }
        if self.net == Net::Veth {
            s.push_str(" net=veth");
        }
        s
    }
}

/// The main matrix (issue: echo 64 B at 64 and 512 connections, echo 16 KiB at 64, HTTP at 64,
/// HTTP pipelined at depth 16, and the proxy at 64 B and 16 KiB).
#[must_use]
pub fn main_workloads() -> Vec<Workload> {
    vec![
        Workload::new("echo-64B-c64", Proto::Echo, 64, 64, 1),
        Workload::new("echo-64B-c512", Proto::Echo, 64, 512, 1),
        Workload::new("echo-16KiB-c64", Proto::Echo, 16 * 1024, 64, 1),
        Workload::new("http-c64", Proto::Http, 0, 64, 1),
        Workload::new("http-pipe16-c64", Proto::Http, 0, 64, 16),
        Workload::new("proxy-64B-c64", Proto::Proxy, 64, 64, 1),
        Workload::new("proxy-16KiB-c64", Proto::Proxy, 16 * 1024, 64, 1),
    ]
}

/// The idle-connection experiment: `active` ping-pong connections (64-byte echo) plus `idle`
/// idle ones, for every pair of levels, grouped by active count.
#[must_use]
pub fn idle_workloads(idle_levels: &[usize], active_levels: &[usize]) -> Vec<Workload> {
    active_levels
        .iter()
        .flat_map(|&active| {
            idle_levels.iter().map(move |&idle| Workload {
                idle,
                ..Workload::new(&format!("echo-64B-c{active}-idle{idle}"), Proto::Echo, 64, active, 1)
            })
        })
        .collect()
}

/// `64B`, `1KiB`, `16KiB`, `1MiB`, `1500B`.
#[must_use]
pub fn fmt_size(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{}MiB", n >> 20)
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{}KiB", n >> 10)
    } else {
        format!("{n}B")
    }
}

/// The reference servers `--peers` can name.
pub const PEERS: [&str; 3] = ["tokio", "monoio", "nginx"];

/// A server under test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Server {
    Ringpoll {
        backend: String,
    },
    /// The epoll proxy relaying with splice(2) (`--splice`).
    RingpollSplice,
    /// The io_uring proxy with the relay it does not use by default (`--uring-relay`).
    RingpollUringRelay {
        relay: String,
    },
    /// `--variant NAME=[bin:PATH] BACKEND FLAGS...`: a backend with extra `ringpoll serve`
    /// flags (an A/B of one technique), or another ringpoll binary (before/after a change),
    /// labelled NAME.
    RingpollVariant {
        name: String,
        backend: String,
        args: Vec<String>,
        /// Another `ringpoll` binary to run instead of this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bin: Option<String>,
    },
    TokioEcho,
    MonoioEcho,
    TokioHttp,
    Nginx,
    NginxStream,
}

impl Server {
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Server::Ringpoll { backend } => backend.clone(),
            Server::RingpollSplice => "epoll+splice".into(),
            Server::RingpollUringRelay { relay } => format!("uring+{relay}"),
            Server::RingpollVariant { name, .. } => name.clone(),
            Server::TokioEcho | Server::TokioHttp => "tokio".into(),
            Server::MonoioEcho => "monoio".into(),
            Server::Nginx | Server::NginxStream => "nginx".into(),
        }
    }

    /// The `--peers` name of a reference server (`None` for ringpoll's own rows).
    #[must_use]
    pub fn peer_name(&self) -> Option<&'static str> {
        match self {
            Server::TokioEcho | Server::TokioHttp => Some("tokio"),
            Server::MonoioEcho => Some("monoio"),
            Server::Nginx | Server::NginxStream => Some("nginx"),
            _ => None,
        }
    }

    #[must_use]
    pub fn is_peer(&self) -> bool {
        !matches!(
            self,
            Server::Ringpoll { .. }
                | Server::RingpollSplice
                | Server::RingpollUringRelay { .. }
                | Server::RingpollVariant { .. }
        )
    }

    #[must_use]
    pub fn serves(&self, proto: Proto) -> bool {
        match self {
            Server::Ringpoll { .. } | Server::RingpollVariant { .. } => true,
            Server::RingpollSplice | Server::RingpollUringRelay { .. } => proto == Proto::Proxy,
            Server::TokioEcho | Server::MonoioEcho => proto == Proto::Echo,
            Server::TokioHttp | Server::Nginx => proto == Proto::Http,
            Server::NginxStream => proto == Proto::Proxy,
        }
    }
}

/// Parse `--variant NAME=BACKEND [FLAGS...]` (e.g. `fixed-on=uring --uring-fixed-files on`).
pub fn parse_variant(s: &str) -> Result<Server, String> {
    let (name, rest) = s.split_once('=').ok_or_else(|| {
        format!("--variant '{s}': expected NAME=BACKEND [FLAGS...] (e.g. 'bundle-on=uring --uring-bundle on')")
    })?;
    let name = name.trim();
    if name.is_empty() || name.contains([',', '/', ' ']) {
        return Err(format!("--variant '{s}': the name must be non-empty, without spaces, / or ,"));
    }
    let mut words = rest.split_whitespace().map(str::to_string).peekable();
    let bin = match words.peek().and_then(|w| w.strip_prefix("bin:")) {
        Some(path) => {
            let path = path.to_string();
            words.next();
            if !std::path::Path::new(&path).is_file() {
                return Err(format!("--variant '{s}': no binary at {path}"));
            }
            Some(path)
        }
        None => None,
    };
    let backend = words.next().ok_or_else(|| format!("--variant '{s}': no backend after '='"))?;
    if !crate::BACKENDS.contains(&backend.as_str()) {
        return Err(format!("--variant '{s}': unknown backend '{backend}' (valid: {})", crate::BACKENDS.join(", ")));
    }
    Ok(Server::RingpollVariant { name: name.to_string(), backend, args: words.collect(), bin })
}

/// Which load generator drives a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadGen {
    Ringpoll,
    Wrk,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_matrix_covers_the_issue_workloads() {
        let w = main_workloads();
        assert!(w.iter().any(|w| w.proto == Proto::Echo && w.size == 64 && w.conns == 512));
        assert!(w.iter().any(|w| w.proto == Proto::Http && w.depth == 16));
        assert!(w.iter().all(|w| w.idle == 0));
        let names: std::collections::HashSet<_> = w.iter().map(|w| &w.name).collect();
        assert_eq!(names.len(), w.len(), "unique names");
    }

    #[test]
    fn peers_serve_only_their_protocol() {
        assert!(Server::TokioEcho.serves(Proto::Echo) && !Server::TokioEcho.serves(Proto::Http));
        assert!(Server::Nginx.serves(Proto::Http) && !Server::Nginx.serves(Proto::Proxy));
        assert!(Server::NginxStream.serves(Proto::Proxy));
        assert!(Server::Ringpoll { backend: "epoll".into() }.serves(Proto::Proxy));
        let v = parse_variant("bundle-on=uring --uring-bundle on").unwrap();
        assert_eq!(
            v,
            Server::RingpollVariant {
                name: "bundle-on".into(),
                backend: "uring".into(),
                args: vec!["--uring-bundle".into(), "on".into()],
                bin: None,
            }
        );
        let exe = std::env::current_exe().unwrap();
        let before = parse_variant(&format!("before=bin:{} epoll", exe.display())).unwrap();
        assert!(matches!(before, Server::RingpollVariant { bin: Some(_), ref backend, .. } if backend == "epoll"));
        assert!(parse_variant("before=bin:/nonexistent/ringpoll epoll").unwrap_err().contains("no binary"));
        assert!(v.serves(Proto::Http) && !v.is_peer() && v.name() == "bundle-on");
        for (bad, needle) in
            [("x", "NAME=BACKEND"), ("=uring", "name"), ("a=", "no backend"), ("a=kqueue", "unknown backend")]
        {
            assert!(parse_variant(bad).unwrap_err().contains(needle), "{bad}");
        }
        let idle = idle_workloads(&[0, 1000], &[1, 64]);
        assert_eq!(
            idle.iter().map(|w| (w.conns, w.idle)).collect::<Vec<_>>(),
            [(1, 0), (1, 1000), (64, 0), (64, 1000)]
        );
        assert_eq!(idle[3].name, "echo-64B-c64-idle1000", "the 64-active names are those of earlier runs");
    }
}
