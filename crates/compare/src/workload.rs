//! `--workload 'echo size=1KiB conns=5000 depth=4'`: the user's own workload, parsed into the
//! same [`Workload`] the built-in matrix uses.

use ringpoll_load::units::parse_size_usize;

use crate::matrix::{fmt_size, Proto, Workload};

/// Keys a workload string takes, for error messages.
const KEYS: &str = "size=BYTES (echo, proxy), conns=N, depth=N, idle=N, rate=REQ_PER_S, path=/P (http), name=NAME";

/// Parse `PROTO key=value ...` (PROTO: echo, http, proxy). Defaults: 64 B, 64 connections,
/// depth 1, no idle connections, path `/`. The name is made from the parameters unless
/// `name=` gives one.
pub fn parse_workload(s: &str) -> Result<Workload, String> {
    let mut words = s.split_whitespace();
    let proto = match words.next() {
        Some("echo") => Proto::Echo,
        Some("http") => Proto::Http,
        Some("proxy") => Proto::Proxy,
        Some(other) => return Err(format!("workload '{s}': unknown protocol '{other}' (echo, http or proxy)")),
        None => return Err("empty --workload (example: 'echo size=1KiB conns=5000 depth=4')".into()),
    };
    let mut w = Workload::new("", proto, 64, 64, 1);
    w.custom = true;
    let mut name = None;
    for kv in words {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("workload '{s}': '{kv}' is not key=value ({KEYS})"))?;
        let num = |what: &str| -> Result<usize, String> {
            v.parse::<usize>().map_err(|_| format!("workload '{s}': {what}={v} is not a whole number"))
        };
        match k {
            "size" if proto == Proto::Http => {
                return Err(format!("workload '{s}': size= applies to echo and proxy (an HTTP request is a GET)"))
            }
            "size" => w.size = parse_size_usize(v).map_err(|e| format!("workload '{s}': {e}"))?,
            "conns" | "connections" | "c" => w.conns = num("conns")?,
            "depth" => w.depth = num("depth")?,
            "idle" => w.idle = num("idle")?,
            "rate" => match num("rate")? {
                0 => return Err(format!("workload '{s}': rate= must be at least 1 request/s")),
                r => w.rate = Some(r as u64),
            },
            "path" if proto != Proto::Http => return Err(format!("workload '{s}': path= applies to http")),
            "path" if !v.starts_with('/') || v.bytes().any(|b| b.is_ascii_control()) => {
                return Err(format!("workload '{s}': path must start with / (got '{v}')"))
            }
            "path" => w.path = v.to_string(),
            "name" if v.is_empty() || v.contains(['/', ',']) => {
                return Err(format!("workload '{s}': name= must be non-empty, without / or ,"))
            }
            "name" => name = Some(v.to_string()),
            _ => return Err(format!("workload '{s}': unknown key '{k}' ({KEYS})")),
        }
    }
    if w.conns == 0 || w.depth == 0 || w.size == 0 {
        return Err(format!("workload '{s}': conns, depth and size must be at least 1"));
    }
    if w.size > 1 << 30 {
        return Err(format!("workload '{s}': size at most 1GiB"));
    }
    w.name = name.unwrap_or_else(|| auto_name(&w));
    Ok(w)
}

fn auto_name(w: &Workload) -> String {
    let mut n = w.proto.name().to_string();
    if w.proto != Proto::Http {
        n.push('-');
        n.push_str(&fmt_size(w.size));
    }
    n.push_str(&format!("-c{}", w.conns));
    if w.depth > 1 {
        n.push_str(&format!("-d{}", w.depth));
    }
    if w.idle > 0 {
        n.push_str(&format!("-idle{}", w.idle));
    }
    if let Some(r) = w.rate {
        n.push_str(&format!("-r{r}"));
    }
    if !w.path.is_empty() && w.path != "/" {
        n.push_str(&w.path);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issues_examples_parse() {
        let w = parse_workload("echo size=1KiB conns=5000 depth=4").unwrap();
        assert_eq!(
            (w.proto, w.size, w.conns, w.depth, w.name.as_str()),
            (Proto::Echo, 1024, 5000, 4, "echo-1KiB-c5000-d4")
        );
        assert!(w.custom);
        let w = parse_workload("http conns=256 depth=1 path=/x").unwrap();
        assert_eq!((w.proto, w.conns, w.path.as_str(), w.name.as_str()), (Proto::Http, 256, "/x", "http-c256/x"));
        let w = parse_workload("proxy size=16KiB conns=64").unwrap();
        assert_eq!((w.size, w.name.as_str()), (16384, "proxy-16KiB-c64"));
        assert_eq!(w.params(), "proxy size=16KiB conns=64 depth=1");
        assert_eq!(parse_workload("echo name=mine idle=10").unwrap().name, "mine");
        let w = parse_workload("echo size=16KiB conns=64 rate=30000").unwrap();
        assert_eq!((w.rate, w.name.as_str()), (Some(30000), "echo-16KiB-c64-r30000"));
        assert_eq!(w.params(), "echo size=16KiB conns=64 depth=1 rate=30000");
    }

    #[test]
    fn mistakes_are_explained() {
        for (s, needle) in [
            ("", "empty"),
            ("ftp", "unknown protocol"),
            ("echo conns", "not key=value"),
            ("echo conns=x", "not a whole number"),
            ("echo size=lots", "invalid size"),
            ("http size=1KiB", "size= applies to echo"),
            ("echo path=/x", "path= applies to http"),
            ("http path=x", "must start with /"),
            ("echo depth=0", "at least 1"),
            ("echo colour=red", "unknown key 'colour'"),
            ("echo rate=0", "rate= must be at least 1"),
        ] {
            let e = parse_workload(s).unwrap_err();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(fmt_size(64), "64B");
        assert_eq!(fmt_size(16384), "16KiB");
        assert_eq!(fmt_size(1 << 20), "1MiB");
        assert_eq!(fmt_size(1500), "1500B");
    }
}
