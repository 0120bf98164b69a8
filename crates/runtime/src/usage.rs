//! Resource usage of containers and of the node, as the kernel accounts it: cumulative CPU
//! time and the memory working set (what `kubectl top` and the kubelet's resource metrics
//! report: resident memory the kernel cannot simply drop, i.e. usage minus inactive file cache).
//!
//! An OCI container is read from its cgroup (v2, or the v1 `cpuacct` and `memory`
//! hierarchies). A process container has no cgroup of its own: it is the sum over its process
//! group (each one is started as a group leader), read from `/proc`.

use std::path::Path;

/// Where a running container's usage is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageSource {
    /// A cgroup, relative to the cgroup root (`/axle/<id>`).
    Cgroup(String),
    /// The process group led by this pid.
    ProcessGroup(i32),
}

/// A reading of cumulative CPU time and current memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub cpu_nanoseconds: u64,
    pub memory_working_set_bytes: u64,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl UsageSource {
    /// The usage now; `None` once the container is gone.
    pub fn read(&self) -> Option<Usage> {
        match self {
            UsageSource::Cgroup(path) => cgroup_usage(Path::new(CGROUP_ROOT), path),
            UsageSource::ProcessGroup(leader) => process_group_usage(Path::new("/proc"), *leader),
        }
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A `key value` line of a stat file (`memory.stat`, `cpu.stat`).
fn stat_field(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn cgroup_usage(root: &Path, path: &str) -> Option<Usage> {
    let relative = path.trim_start_matches('/');
    let unified = root.join(relative);
    if unified.join("cgroup.controllers").exists() {
        let cpu = stat_field(&unified.join("cpu.stat"), "usage_usec")?.saturating_mul(1000);
        let memory = read_u64(&unified.join("memory.current"))?;
        let inactive = stat_field(&unified.join("memory.stat"), "inactive_file").unwrap_or(0);
        return Some(Usage { cpu_nanoseconds: cpu, memory_working_set_bytes: memory.saturating_sub(inactive) });
    }
    let cpuacct = ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]
        .iter()
        .map(|h| root.join(h).join(relative).join("cpuacct.usage"))
        .find(|p| p.exists())?;
    let memory_dir = root.join("memory").join(relative);
    let memory = read_u64(&memory_dir.join("memory.usage_in_bytes"))?;
    let inactive = stat_field(&memory_dir.join("memory.stat"), "total_inactive_file").unwrap_or(0);
    Some(Usage { cpu_nanoseconds: read_u64(&cpuacct)?, memory_working_set_bytes: memory.saturating_sub(inactive) })
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|t| *t > 0).unwrap_or(100)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|s| *s > 0).unwrap_or(4096)
}

/// The fields of `/proc/PID/stat` after the command name (field 3 onwards).
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default()
}

fn process_group_usage(proc_root: &Path, leader: i32) -> Option<Usage> {
    let leader_stat = std::fs::read_to_string(proc_root.join(leader.to_string()).join("stat")).ok()?;
    // A zombie leader: the container has exited.
    if stat_fields(&leader_stat).first() == Some(&"Z") {
        return None;
    }
    let (mut ticks, mut pages) = (0u64, 0u64);
    for entry in std::fs::read_dir(proc_root).ok()?.filter_map(Result::ok) {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let fields = stat_fields(&stat);
        // state(3) ppid(4) pgrp(5) … utime(14) stime(15) … rss(24), counted from 3.
        if fields.get(2).and_then(|g| g.parse::<i32>().ok()) != Some(leader) {
            continue;
        }
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks += field(14) + field(15);
        pages += field(24);
    }
    Some(Usage {
        cpu_nanoseconds: ticks.saturating_mul(1_000_000_000) / clock_ticks_per_second(),
        memory_working_set_bytes: pages.saturating_mul(page_size()),
    })
}

/// The whole node: CPU time spent outside idle and I/O wait, and memory in use (total minus
/// what the kernel reports available).
pub fn node_usage() -> Option<Usage> {
    node_usage_from(Path::new("/proc"))
}

fn node_usage_from(proc_root: &Path) -> Option<Usage> {
    let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    let cpu: Vec<u64> =
        stat.lines().next()?.strip_prefix("cpu ")?.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = cpu.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    let meminfo = std::fs::read_to_string(proc_root.join("meminfo")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        meminfo.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse().ok())
    };
    let used_kib = kib("MemTotal:")?.saturating_sub(kib("MemAvailable:")?);
    Some(Usage {
        cpu_nanoseconds: busy.saturating_mul(1_000_000_000) / clock_ticks_per_second(),
        memory_working_set_bytes: used_kib * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Writes a fake `/proc` or cgroup hierarchy.
    fn fake(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dirs");
            std::fs::write(path, text).expect("write");
        }
        dir.to_path_buf()
    }

    #[test]
    fn cgroup_v1_and_v2_are_read() {
        let v1 = tempfile::tempdir().expect("tempdir");
        let root = fake(
            v1.path(),
            &[
                ("cpuacct/axle/c1/cpuacct.usage", "1500000000\n"),
                ("memory/axle/c1/memory.usage_in_bytes", "10000\n"),
                ("memory/axle/c1/memory.stat", "cache 5000\ntotal_inactive_file 4000\n"),
            ],
        );
        assert_eq!(
            cgroup_usage(&root, "/axle/c1"),
            Some(Usage { cpu_nanoseconds: 1_500_000_000, memory_working_set_bytes: 6000 })
        );
        assert_eq!(cgroup_usage(&root, "/axle/gone"), None);
        let v2 = tempfile::tempdir().expect("tempdir");
        let root = fake(
            v2.path(),
            &[
                ("axle/c2/cgroup.controllers", "cpu memory\n"),
                ("axle/c2/cpu.stat", "usage_usec 2500\nuser_usec 2000\n"),
                ("axle/c2/memory.current", "8192\n"),
                ("axle/c2/memory.stat", "active_file 10\ninactive_file 192\n"),
            ],
        );
        assert_eq!(
            cgroup_usage(&root, "/axle/c2"),
            Some(Usage { cpu_nanoseconds: 2_500_000, memory_working_set_bytes: 8000 })
        );
    }

    #[test]
    fn a_process_group_is_summed() {
        let dir = tempfile::tempdir().expect("tempdir");
        // pid 10 leads group 10 (with child 11); pid 12 is in another group.
        let stat = |pid: u32, pgrp: u32, utime: u32, rss: u32| {
            format!("{pid} (sh -c x) S 1 {pgrp} {pgrp} 0 -1 0 0 0 0 0 {utime} 5 0 0 20 0 1 0 100 1000 {rss} 0")
        };
        let root = fake(
            dir.path(),
            &[
                ("10/stat", &stat(10, 10, 100, 10)),
                ("11/stat", &stat(11, 10, 50, 20)),
                ("12/stat", &stat(12, 12, 999, 999)),
                ("self/stat", "not a pid"),
            ],
        );
        let usage = process_group_usage(&root, 10).expect("usage");
        assert_eq!(usage.cpu_nanoseconds, 160 * 1_000_000_000 / clock_ticks_per_second());
        assert_eq!(usage.memory_working_set_bytes, 30 * page_size());
        assert_eq!(process_group_usage(&root, 99), None);
    }

    #[test]
    fn the_node_is_read_from_proc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = fake(
            dir.path(),
            &[
                ("stat", "cpu  100 0 50 1000 30 0 0 0 0 0\ncpu0 1 2 3\n"),
                ("meminfo", "MemTotal:       1000 kB\nMemFree:  100 kB\nMemAvailable:    400 kB\n"),
            ],
        );
        let usage = node_usage_from(&root).expect("usage");
        assert_eq!(usage.cpu_nanoseconds, 150 * 1_000_000_000 / clock_ticks_per_second());
        assert_eq!(usage.memory_working_set_bytes, 600 * 1024);
        // And the real node answers.
        assert!(node_usage().is_some_and(|u| u.memory_working_set_bytes > 0));
    }
}
