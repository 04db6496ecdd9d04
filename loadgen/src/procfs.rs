//! Server footprint and CPU time from `/proc`: VmRSS, utime+stime, and per-thread schedstat.

use crate::error::LgError;

/// One reading of the server processes (summed over every pid given).
#[derive(Clone, Copy, Debug, Default)]
pub struct Snap {
    /// Sum of VmRSS, KiB.
    pub rss_kib: u64,
    /// Sum of utime+stime, clock ticks.
    pub cpu_ticks: u64,
    /// Sum of on-CPU time of live threads from `schedstat`, ns (finer than ticks).
    pub sched_ns: u64,
}

/// Clock ticks per second for `/proc/PID/stat` times.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf takes no pointers and only reads a constant of the C library.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

fn read(pid: u32, file: &'static str) -> Result<String, LgError> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|_| LgError::Proc(pid, file))
}

/// VmRSS of one process, KiB.
pub fn rss_kib(pid: u32) -> Result<u64, LgError> {
    let s = read(pid, "status")?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or(LgError::Proc(pid, "status"))
}

/// utime+stime of one process (all threads), clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, LgError> {
    let s = read(pid, "stat")?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = s
        .rfind(')')
        .and_then(|i| s.get(i + 1..))
        .ok_or(LgError::Proc(pid, "stat"))?;
    let mut f = rest.split_whitespace();
    // After ')': state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = f
        .nth(11)
        .and_then(|v| v.parse().ok())
        .ok_or(LgError::Proc(pid, "stat"))?;
    let stime: u64 = f
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or(LgError::Proc(pid, "stat"))?;
    Ok(utime + stime)
}

/// On-CPU ns summed over the process's live threads.
pub fn sched_ns(pid: u32) -> Result<u64, LgError> {
    let dir =
        std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|_| LgError::Proc(pid, "task"))?;
    let mut total = 0u64;
    for entry in dir.flatten().take(4096) {
        let p = entry.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(p) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// Reads every pid and sums.
pub fn snap(pids: &[u32]) -> Result<Snap, LgError> {
    let mut s = Snap::default();
    for &pid in pids {
        s.rss_kib += rss_kib(pid)?;
        s.cpu_ticks += cpu_ticks(pid)?;
        s.sched_ns += sched_ns(pid)?;
    }
    Ok(s)
}

/// Soft limit on open files of this process, from `/proc/self/limits`.
pub fn nofile_soft() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}
