//! Host monitoring, as a psutil script would do it: the balancer's own CPU time, resident
//! memory and open file descriptors, and the host's load average, memory and disk use.
//!
//! Read from /proc on demand (each [`sample`] reads five small files) and, for the disk, from
//! `statvfs(2)` (through `sys`, which owns every call below std). Called by the admin API for /stats, /metrics and the status page, and open to
//! anything else that wants the numbers (such as alert thresholds). Writes no shared state.
//! Every value is an `Option`: on a system without /proc the numbers are simply missing.

use std::path::Path;

/// Linux reports process CPU times in clock ticks of `USER_HZ`, which is 100 on every
/// architecture Linux supports for user space.
const USER_HZ: f64 = 100.0;

/// The file system whose use is reported.
pub const DISK_PATH: &str = "/";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub process: ProcessSample,
    pub host: HostSample,
}

/// The balancer process itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time since the process started.
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub open_fds_limit: Option<u64>,
}

/// The machine the balancer runs on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSample {
    /// Load averages over 1, 5 and 15 minutes.
    pub load: Option<[f64; 3]>,
    pub memory: Option<Space>,
    /// The file system holding [`DISK_PATH`].
    pub disk: Option<Space>,
}

/// A total and how much of it is still available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl Space {
    /// The share in use, from 0 to 1.
    pub fn used_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        self.total_bytes.saturating_sub(self.available_bytes) as f64 / self.total_bytes as f64
    }
}

/// Reads everything now.
pub fn sample() -> Sample {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    Sample {
        process: ProcessSample {
            cpu_seconds: read("/proc/self/stat").as_deref().and_then(parse_cpu_seconds),
            resident_bytes: read("/proc/self/status").as_deref().and_then(parse_resident_bytes),
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as u64),
            open_fds_limit: crate::sys::open_file_limit().ok(),
        },
        host: HostSample {
            load: read("/proc/loadavg").as_deref().and_then(parse_load),
            memory: read("/proc/meminfo").as_deref().and_then(parse_memory),
            disk: disk_space(Path::new(DISK_PATH)),
        },
    }
}

/// User plus system time from `/proc/self/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted from the last `)`.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11); // fields 14 (utime) and 15 (stime)
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

fn parse_resident_bytes(status: &str) -> Option<u64> {
    kib_field(status, "VmRSS:")
}

fn parse_load(loadavg: &str) -> Option<[f64; 3]> {
    let mut fields = loadavg.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

fn parse_memory(meminfo: &str) -> Option<Space> {
    let total_bytes = kib_field(meminfo, "MemTotal:")?;
    let available_bytes = kib_field(meminfo, "MemAvailable:").or_else(|| kib_field(meminfo, "MemFree:"))?;
    Some(Space { total_bytes, available_bytes })
}

/// The value of a `Name:   1234 kB` line, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// Total and available (to unprivileged users) space on the file system holding `path`.
fn disk_space(path: &Path) -> Option<Space> {
    let (total_bytes, available_bytes) = crate::sys::file_system_space(path).ok()?;
    Some(Space { total_bytes, available_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_user_plus_system_ticks() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

    #[test]
    fn memory_fields_are_kib() {
        let status = "Name:\tsluice\nVmPeak:\t  9000 kB\nVmRSS:\t    2000 kB\nThreads:\t9\n";
        assert_eq!(parse_resident_bytes(status), Some(2_048_000));
        let meminfo = "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n";
        assert_eq!(parse_memory(meminfo), Some(Space { total_bytes: 1_024_000, available_bytes: 256_000 }));
        assert_eq!(parse_memory("MemTotal: 1000 kB\nMemFree: 100 kB\n").map(|m| m.available_bytes), Some(102_400));
    }

    #[test]
    fn load_averages_are_the_first_three_fields() {
        assert_eq!(parse_load("1.16 1.05 0.81 3/100 10580\n"), Some([1.16, 1.05, 0.81]));
        assert_eq!(parse_load("1.0 x"), None);
    }

    #[test]
    fn used_ratio_is_the_share_not_available() {
        assert_eq!(Space { total_bytes: 200, available_bytes: 50 }.used_ratio(), 0.75);
        assert_eq!(Space { total_bytes: 0, available_bytes: 0 }.used_ratio(), 0.0);
    }

    #[test]
    fn a_live_sample_on_linux_has_every_number() {
        let s = sample();
        assert!(s.process.cpu_seconds.is_some() && s.process.resident_bytes.unwrap() > 0, "{s:?}");
        assert!(s.process.open_fds.unwrap() >= 3, "{s:?}");
        assert!(s.process.open_fds_limit.unwrap() >= s.process.open_fds.unwrap(), "{s:?}");
        assert!(s.host.load.is_some() && s.host.memory.unwrap().total_bytes > 0, "{s:?}");
        assert!(s.host.disk.unwrap().total_bytes > 0, "{s:?}");
    }
}
