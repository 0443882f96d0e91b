//! CPU time and peak memory of processes, from /proc.

use std::time::Duration;

fn ticks() -> f64 {
    100.0 // USER_HZ on Linux
}

/// (utime + stime, cutime + cstime) of a process.
fn cpu_of(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    Some((
        Duration::from_secs_f64((n(11) + n(12)) / ticks()),
        Duration::from_secs_f64((n(13) + n(14)) / ticks()),
    ))
}

fn ppid_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// CPU used by one process so far.
pub fn process_cpu(pid: u32) -> Duration {
    cpu_of(pid).map(|(own, _)| own).unwrap_or_default()
}

/// CPU used by a PostgreSQL cluster so far: the postmaster, its live
/// children, and the children it has already reaped.
pub fn cluster_cpu(postmaster: u32) -> Duration {
    let (own, reaped) = cpu_of(postmaster).unwrap_or_default();
    let mut total = own + reaped;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if ppid_of(pid) == Some(postmaster) {
                    total += process_cpu(pid);
                }
            }
        }
    }
    total
}

/// Peak resident memory (VmHWM) of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        * 1024
}
