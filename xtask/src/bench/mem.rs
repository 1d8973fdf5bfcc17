//! Process memory from `/proc/self/status` (Linux; `None` elsewhere).

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`, ...), in bytes.
pub fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Peak resident set size so far (`VmHWM`).
pub fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM")
}

/// Current resident set size (`VmRSS`).
pub fn rss() -> Option<u64> {
    status_bytes("VmRSS")
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0: `echo 5 > /proc/self/clear_refs`), so a later
/// [`peak_rss`] measures only what follows. Returns whether it worked.
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
