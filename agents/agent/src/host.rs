//! What this machine has: CPUs, memory, disk and the host name.

use std::path::Path;

/// CPUs usable by this process, in milli-CPUs.
pub fn cpus_milli() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64 * 1000)
        .unwrap_or(1000)
}

/// Total memory in MB, from `/proc/meminfo`; `None` where it cannot be read.
pub fn mem_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Free disk in MB on the file system holding `path`, from `df`-style statistics.
pub fn disk_mb(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let avail_kb: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(avail_kb / 1024)
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_something_on_linux() {
        assert!(super::cpus_milli() >= 1000);
        assert!(super::mem_mb().unwrap_or(0) > 0);
        assert!(super::disk_mb(std::path::Path::new("/")).is_some());
    }
}
