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

/// Sum the `time` files (µs) of a CPU's cpuidle states, given the states' directory
/// listing reader; `None` when there are no states or one cannot be read.
fn residency_in(dir: &std::path::Path) -> Option<f64> {
    let mut total = 0u64;
    let mut states = 0;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if !e.file_name().to_string_lossy().starts_with("state") {
            continue;
        }
        total += std::fs::read_to_string(e.path().join("time")).ok()?.trim().parse::<u64>().ok()?;
        states += 1;
    }
    (states > 0).then(|| total as f64 / 1e6)
}

/// Seconds CPU `cpu` has spent idle, from cpuidle's residency of each idle state (µs
/// resolution, where /proc/stat counts 10 ms ticks). An idle period is added when it ends,
/// so a reading lags by the period in progress, if any: on a busy core, microseconds.
/// `None` where the kernel has no cpuidle for that CPU.
#[must_use]
pub fn idle_residency(cpu: usize) -> Option<f64> {
    residency_in(std::path::Path::new(&format!("/sys/devices/system/cpu/cpu{cpu}/cpuidle")))
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

    #[test]
    fn idle_residency_sums_every_state_and_needs_all_of_them() {
        let dir = std::env::temp_dir().join(format!("ringpoll-cpuidle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(residency_in(&dir), None, "no cpuidle");
        for (state, us) in [("state0", "1500\n"), ("state1", "2000000\n")] {
            std::fs::create_dir_all(dir.join(state)).unwrap();
            std::fs::write(dir.join(state).join("time"), us).unwrap();
        }
        std::fs::create_dir_all(dir.join("driver")).unwrap();
        assert_eq!(residency_in(&dir), Some(2.0015));
        std::fs::write(dir.join("state1").join("time"), "n/a").unwrap();
        assert_eq!(residency_in(&dir), None, "a state that cannot be read is no reading");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
