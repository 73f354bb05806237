//! The benchmarks of proxystore for Rust: `bench/compare` runs them beside
//! Python ProxyStore; `cargo bench -p proxystore-bench --bench file_store`
//! runs the file store's.

/// CPU time so far, in seconds, of this process and of its children (a
/// pool's and a cluster's workers, the `cat` of the pipe rows; never a
/// Redis server): every thread's run time from
/// `/proc/<pid>/task/<tid>/schedstat`.
pub fn cpu_seconds() -> f64 {
    let me = std::process::id();
    let threads_of = |pid: u32| -> f64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0.0;
        };
        tasks
            .filter_map(|t| {
                let stat = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
                stat.split_whitespace().next()?.parse::<f64>().ok()
            })
            .sum::<f64>()
            / 1e9
    };
    let mut total = threads_of(me);
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The parent pid is the second field after the command's `)`.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            let server = stat
                .split_once('(')
                .is_some_and(|(_, rest)| rest.starts_with("redis-server"));
            if ppid == Some(me) && !server {
                total += threads_of(pid);
            }
        }
    }
    total
}

/// The floor of a small object's round trip through files: creates `file`
/// with `data`, reads it back into `back` and removes it, twice.
pub fn small_file_cycles(file: &std::path::Path, data: &[u8], back: &mut [u8]) {
    use std::io::{Read, Write};
    for _ in 0..2 {
        let mut f = std::fs::File::create(file).unwrap();
        f.write_all(data).unwrap();
        drop(f);
        std::fs::File::open(file).unwrap().read_exact(back).unwrap();
        std::fs::remove_file(file).unwrap();
    }
}
