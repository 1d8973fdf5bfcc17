//! glibc's `malloc` set up for training: memory a step frees stays with the process.
//!
//! A training step allocates the same large activation and gradient buffers every step. By
//! default glibc serves every block over 32 MiB (at 256 px and width 64, the first layers'
//! maps and their gradients) with a fresh `mmap` and returns it on `free`, and gives back the
//! top of its heaps when they shrink, so the next step touches new pages: the kernel faults and
//! zeroes every 4 KiB of them again. On a one-thread 256-px step that was over a tenth of the
//! CPU time (`clear_page` and the fault path in a profile), and over a million page faults in a
//! run of the `step` example (three forward passes and three train steps, each after a
//! warm-up). Keeping freed memory for reuse removes two thirds of those faults.
#![allow(unsafe_code)]

/// One glibc `malloc` parameter, settable through `mallopt` or as a `GLIBC_TUNABLES` entry.
#[derive(Clone, Copy)]
enum Param {
    MmapMax,
    TrimThreshold,
    TopPad,
    ArenaMax,
}

impl Param {
    fn tunable(self) -> &'static str {
        match self {
            Param::MmapMax => "glibc.malloc.mmap_max",
            Param::TrimThreshold => "glibc.malloc.trim_threshold",
            Param::TopPad => "glibc.malloc.top_pad",
            Param::ArenaMax => "glibc.malloc.arena_max",
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn mallopt(self) -> libc::c_int {
        match self {
            Param::MmapMax => libc::M_MMAP_MAX,
            Param::TrimThreshold => libc::M_TRIM_THRESHOLD,
            Param::TopPad => libc::M_TOP_PAD,
            Param::ArenaMax => libc::M_ARENA_MAX,
        }
    }
}

/// The settings: no `mmap` for large blocks; never trim (-1, mallopt(3)); grow the heap in
/// steps of 64 MiB, so a step's first allocations do not each move the break; one arena.
const SETTINGS: [(Param, i32); 4] = [
    (Param::MmapMax, 0),
    (Param::TrimThreshold, -1),
    (Param::TopPad, 64 << 20),
    (Param::ArenaMax, 1),
];

/// Sets glibc's allocator up for a training process: no `mmap` for large blocks (they come
/// from the heap, and return to it when freed), no trimming of the heap (freed pages stay
/// mapped for the next step), one arena (a block freed by one thread is reused by all).
///
/// The process then keeps its peak heap until it exits, which a training run reaches anyway
/// every step. Call it once at the start of `main`, before any thread starts: it does not
/// move memory already allocated, and arenas that other threads have created stay. Returns
/// whether the settings were applied: `false` on targets without glibc, where it does nothing.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters (glibc takes its own locks) and
        // has no precondition on the caller; it returns 0 for a parameter it rejects.
        SETTINGS
            .iter()
            .all(|&(param, value)| unsafe { libc::mallopt(param.mallopt(), value) } == 1)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The settings of [`keep_freed_memory`] as a `GLIBC_TUNABLES` value, for a process that
/// cannot call it (the model benchmark's PyTorch side).
pub fn keep_freed_tunables() -> String {
    SETTINGS
        .iter()
        // A tunable is unsigned: mallopt's -1 (never trim) is the largest size.
        .map(|&(param, value)| format!("{}={}", param.tunable(), i64::from(value) as u64))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Page faults of the calling thread so far.
    fn thread_faults() -> i64 {
        // SAFETY: getrusage writes one `rusage` into the zeroed value we own.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
        u.ru_minflt
    }

    /// Faults taken while allocating and writing `mib` MiB, freed at the end.
    fn faults_touching(mib: usize) -> i64 {
        let before = thread_faults();
        let v = vec![1u8; mib << 20];
        std::hint::black_box(&v);
        drop(v);
        thread_faults() - before
    }

    #[test]
    fn the_tunables_say_what_mallopt_is_told() {
        assert_eq!(
            keep_freed_tunables(),
            "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615:\
             glibc.malloc.top_pad=67108864:glibc.malloc.arena_max=1"
        );
    }

    const CHILD: &str = "CLASSM_ALLOC_TEST_CHILD";

    /// The settings change the whole process, so the measurement runs in a child process of
    /// its own (this test binary again, running only this test).
    #[test]
    fn a_freed_large_block_is_reused_without_new_page_faults() {
        if std::env::var_os(CHILD).is_some() {
            // 48 MiB: over glibc's largest mmap threshold (32 MiB), and under the 64 MiB
            // that a thread's own arena can serve from its heap (this test thread may have
            // made one before the settings).
            const MIB: usize = 48;
            let pages = (MIB << 20) as i64 / 4096;
            // Without the settings the block is mapped afresh every time.
            assert!(faults_touching(MIB) > pages / 2);
            assert!(faults_touching(MIB) > pages / 2);
            assert!(keep_freed_memory());
            let first = faults_touching(MIB);
            let second = faults_touching(MIB);
            assert!(first > pages / 2, "first touch {first}");
            assert!(
                second < pages / 20,
                "second touch still faulted {second} times"
            );
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "alloc::tests::a_freed_large_block_is_reused_without_new_page_faults",
            ])
            .args(["--test-threads", "1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }
}
