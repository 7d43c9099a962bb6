//! One CPU's time from /proc/stat: how busy the server's pinned core was, whoever was
//! running. Per-process CPU (utime+stime) misses the TCP/IP work the kernel does in softirq
//! on that core for loopback traffic; the core's busy time includes it (and anything else
//! that ran there, which is why both are reported).

use anyhow::{Context, Result};

/// Linux reports /proc/stat in USER_HZ ticks, 100 per second on every architecture.
const TICKS_PER_SEC: f64 = 100.0;

/// Cumulative times of one CPU, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CoreTimes {
    /// user + nice + system + irq + softirq.
    pub busy: f64,
    /// Time the hypervisor ran something else while this virtual CPU wanted to run.
    pub steal: f64,
    /// Everything, idle included.
    pub total: f64,
}

/// Parse the `cpuN` line of /proc/stat's text.
pub fn parse(stat: &str, cpu: usize) -> Result<CoreTimes> {
    let tag = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(tag.as_str()))
        .with_context(|| format!("/proc/stat has no {tag} line"))?;
    let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse::<u64>().ok()).map(|v| v as f64).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0) / TICKS_PER_SEC;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy = at(0) + at(1) + at(2) + at(5) + at(6);
    Ok(CoreTimes { busy, steal: at(7), total: (0..8).map(at).sum() })
}

/// Read CPU `cpu`'s times now.
pub fn read(cpu: usize) -> Result<CoreTimes> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse(&stat, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_user_nice_system_irq_softirq() {
        let stat = "cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 100 10 50 1000 5 3 7 2 0 0\ncpu1 1 1 1 1 1 1 1 1 0 0\n";
        let c = parse(stat, 0).unwrap();
        assert!((c.busy - 1.70).abs() < 1e-9, "{c:?}");
        assert!((c.steal - 0.02).abs() < 1e-9);
        assert!((c.total - 11.77).abs() < 1e-9);
        assert!(parse(stat, 2).is_err());
        assert!(read(0).is_ok_and(|c| c.total > 0.0));
    }
}
