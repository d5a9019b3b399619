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
