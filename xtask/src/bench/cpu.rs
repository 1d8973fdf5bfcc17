//! How busy the machine was while a child process ran: CPU time of the whole system
//! (`/proc/stat`) minus that of our waited-for children (`/proc/self/stat` cutime + cstime).
//! A benchmark sharing its cores with a compiler is not a benchmark; the report says so.

/// A snapshot of the counters (clock ticks).
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    busy: u64,
    total: u64,
    children: u64,
}

fn system() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

fn children() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces): state is field 3; cutime and
    // cstime are fields 16 and 17.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let cutime: u64 = f.get(13)?.parse().ok()?;
    let cstime: u64 = f.get(14)?.parse().ok()?;
    Some(cutime + cstime)
}

/// Current counters, `None` where `/proc` is unavailable.
pub fn snapshot() -> Option<Snapshot> {
    let (busy, total) = system()?;
    Some(Snapshot {
        busy,
        total,
        children: children()?,
    })
}

/// Average number of cores used by processes other than our finished children between two
/// snapshots (0 when idle; `nproc` when the machine was saturated by others).
pub fn others_cores(
    before: Option<Snapshot>,
    after: Option<Snapshot>,
    nproc: usize,
) -> Option<f64> {
    let (b, a) = (before?, after?);
    let total = a.total.checked_sub(b.total)?;
    if total == 0 {
        return None;
    }
    let busy = a.busy.saturating_sub(b.busy);
    let ours = a.children.saturating_sub(b.children);
    Some(busy.saturating_sub(ours) as f64 / total as f64 * nproc as f64)
}

/// Waits (up to `max_s` seconds) until processes other than ours use at most `cores` cores
/// over one second. Returns whether the machine was idle.
pub fn wait_idle(max_s: f64, cores: f64, nproc: usize) -> bool {
    let t0 = std::time::Instant::now();
    let mut told = false;
    loop {
        let before = snapshot();
        std::thread::sleep(std::time::Duration::from_secs(1));
        match others_cores(before, snapshot(), nproc) {
            None => return true,
            Some(c) if c <= cores => return true,
            Some(c) => {
                if t0.elapsed().as_secs_f64() >= max_s {
                    return false;
                }
                if !told {
                    eprint!("(waiting for other processes, {c:.1} cores busy) ");
                    told = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_proc() {
        if std::path::Path::new("/proc/stat").exists() {
            assert!(super::snapshot().is_some());
        }
    }
}
