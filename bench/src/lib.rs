//! Shared pieces of Admit's benchmark programs (`src/bin/*`): latency
//! summaries, reading a process's memory high-water mark, and the
//! simulated event log the replay benchmark replays ([`replay_log`]).

use std::time::Duration;

pub mod replay_log;

/// p50/p95/p99/max of a set of latencies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latencies {
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
}

impl Latencies {
    /// The summary of `samples` (nearest rank; all zero when empty).
    pub fn of(samples: &mut [Duration]) -> Latencies {
        if samples.is_empty() {
            return Latencies::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        Latencies { p50: at(0.50), p95: at(0.95), p99: at(0.99), max: samples[samples.len() - 1] }
    }
}

/// Peak resident memory (`VmHWM`) of process `pid` in MiB, from /proc.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Current resident memory (`VmRSS`) of process `pid` in MiB, from /proc.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Clock ticks per second of the times in /proc (`USER_HZ`, 100 on every
/// Linux this runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time process `pid` has used so far (user and system), in seconds,
/// from /proc/<pid>/stat. Used to say how much of the machine the server
/// took during a load.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15; the part after ')' starts at field 3.
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / TICKS_PER_SECOND)
}

/// The whole machine's CPU time so far, all cores together, from
/// /proc/stat: what ran, and what the hypervisor took from this machine
/// for others (steal), the share that makes a shared host slow.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    /// Seconds spent running anything (user, nice, system, interrupts).
    pub busy: f64,
    /// Seconds the host ran something else while this machine wanted a core.
    pub stolen: f64,
}

impl MachineCpu {
    /// The counters now; None where /proc/stat cannot be read.
    pub fn now() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let t: Vec<f64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0.0)).collect();
        // user nice system idle iowait irq softirq steal (guest time is in user).
        let at = |i: usize| t.get(i).copied().unwrap_or(0.0) / TICKS_PER_SECOND;
        Some(MachineCpu { busy: at(0) + at(1) + at(2) + at(5) + at(6), stolen: at(7) })
    }

    /// What was used between `earlier` and `self`.
    pub fn since(self, earlier: MachineCpu) -> MachineCpu {
        MachineCpu { busy: self.busy - earlier.busy, stolen: self.stolen - earlier.stolen }
    }
}
