//! Host thresholds: compares `host::sample()` with the `alerts` thresholds (`cpuPercent`,
//! `memoryPercent`, `diskPercent`, `openFilesPercent`) and raises `host_high` once when a
//! metric reaches its threshold and `host_ok` once when it falls below again.
//!
//! [`check`] is called once a second by the server's ticker thread (`sluice-tick`), which
//! owns the [`HostWatch`]; it samples the host only when a threshold is configured. Writes
//! nothing shared but the alerts queue. Thresholds are read from the current snapshot, so a
//! reload changes them; a metric whose threshold is removed is forgotten without an event.

use crate::config::HostThresholds;
use crate::ops::alerts::{AlertEvent, AlertKind, AlertSubject};
use crate::ops::host::{self, Sample};
use crate::runtime::Runtime;
use log::{info, warn};
use std::time::{Instant, SystemTime};

/// The watched metrics, by their threshold key.
const METRICS: [&str; 4] = ["cpuPercent", "memoryPercent", "diskPercent", "openFilesPercent"];

/// What the ticker remembers between checks.
#[derive(Debug, Default)]
pub struct HostWatch {
    /// Whether each of [`METRICS`] was at or above its threshold at the last check.
    high: [bool; 4],
    /// The balancer's CPU seconds at the previous sample, and when.
    last_cpu: Option<(f64, Instant)>,
}

/// Whether a metric's state changes: `Some(true)` when it reaches `threshold` from below,
/// `Some(false)` when it falls below from high, `None` when it stays as it was.
pub fn crossing(was_high: bool, value: f64, threshold: f64) -> Option<bool> {
    let is_high = value >= threshold;
    (is_high != was_high).then_some(is_high)
}

/// Each metric of [`METRICS`] in percent, where the sample has it. `cpu_percent` is worked
/// out by the caller from two samples.
fn readings(sample: &Sample, cpu_percent: Option<f64>) -> [Option<f64>; 4] {
    let open_files = match (sample.process.open_fds, sample.process.open_fds_limit) {
        (Some(open), Some(limit)) if limit > 0 => Some(open as f64 * 100.0 / limit as f64),
        _ => None,
    };
    [
        cpu_percent,
        sample.host.memory.map(|m| m.used_ratio() * 100.0),
        sample.host.disk.map(|d| d.used_ratio() * 100.0),
        open_files,
    ]
}

fn thresholds(config: &HostThresholds) -> [Option<f64>; 4] {
    [config.cpu_percent, config.memory_percent, config.disk_percent, config.open_files_percent]
}

/// CPU seconds used between two samples as a share of all `cores`, in percent.
fn cpu_percent(before: (f64, Instant), now: (f64, Instant), cores: usize) -> Option<f64> {
    let wall = now.1.saturating_duration_since(before.1).as_secs_f64();
    (wall > 0.0).then(|| (now.0 - before.0).max(0.0) * 100.0 / (wall * cores.max(1) as f64))
}

impl HostWatch {
    /// The events that `sample`, taken at `now`, raises against `config`; updates what is
    /// remembered. No I/O.
    pub fn update(&mut self, config: &HostThresholds, sample: &Sample, now: Instant, cores: usize) -> Vec<AlertEvent> {
        let cpu_now = sample.process.cpu_seconds.map(|secs| (secs, now));
        let cpu = self.last_cpu.zip(cpu_now).and_then(|(before, now)| cpu_percent(before, now, cores));
        self.last_cpu = cpu_now;
        let mut events = Vec::new();
        let values = readings(sample, cpu);
        for (i, threshold) in thresholds(config).into_iter().enumerate() {
            let Some(threshold) = threshold else {
                self.high[i] = false;
                continue;
            };
            let Some(value) = values[i] else { continue };
            if let Some(high) = crossing(self.high[i], value, threshold) {
                self.high[i] = high;
                let kind = if high { AlertKind::HostHigh } else { AlertKind::HostOk };
                let subject = AlertSubject::Host { metric: METRICS[i], value, threshold };
                events.push(AlertEvent { kind, subject, at: SystemTime::now() });
            }
        }
        events
    }
}

/// Samples the host if any threshold is set, logs each crossing and raises its event.
pub fn check(runtime: &Runtime, watch: &mut HostWatch) {
    let config = runtime.state().config.alerts.host;
    if thresholds(&config).iter().all(Option::is_none) {
        *watch = HostWatch::default();
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    for event in watch.update(&config, &host::sample(), Instant::now(), cores) {
        match event.kind {
            AlertKind::HostHigh => warn!("host threshold reached: {event}"),
            _ => info!("host threshold recovered: {event}"),
        }
        runtime.alerts.raise(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::host::{HostSample, ProcessSample, Space};
    use std::time::Duration;

    fn sample(cpu_seconds: f64, memory_used: u64, open_fds: u64) -> Sample {
        Sample {
            process: ProcessSample {
                cpu_seconds: Some(cpu_seconds),
                resident_bytes: Some(1),
                open_fds: Some(open_fds),
                open_fds_limit: Some(1000),
            },
            host: HostSample {
                load: None,
                memory: Some(Space { total_bytes: 100, available_bytes: 100 - memory_used }),
                disk: None,
            },
        }
    }

    fn kinds(events: &[AlertEvent]) -> Vec<(&'static str, &'static str)> {
        events
            .iter()
            .map(|e| match e.subject {
                AlertSubject::Host { metric, .. } => (e.kind.as_str(), metric),
                AlertSubject::Backend { .. } => (e.kind.as_str(), "backend"),
                AlertSubject::Certificate { .. } => (e.kind.as_str(), "certificate"),
                AlertSubject::Discovery { .. } => (e.kind.as_str(), "discovery"),
            })
            .collect()
    }

    #[test]
    fn a_crossing_is_reported_once_each_way() {
        assert_eq!(crossing(false, 89.9, 90.0), None);
        assert_eq!(crossing(false, 90.0, 90.0), Some(true));
        assert_eq!(crossing(true, 95.0, 90.0), None);
        assert_eq!(crossing(true, 89.0, 90.0), Some(false));
    }

    #[test]
    fn memory_over_a_run_of_checks_raises_high_then_ok() {
        let config = HostThresholds { memory_percent: Some(50.0), ..HostThresholds::default() };
        let mut watch = HostWatch::default();
        let t = Instant::now();
        let used = [10, 60, 70, 40, 30, 55];
        let seen: Vec<_> = used.iter().map(|&u| kinds(&watch.update(&config, &sample(0.0, u, 5), t, 1))).collect();
        let high = vec![("host_high", "memoryPercent")];
        let ok = vec![("host_ok", "memoryPercent")];
        assert_eq!(seen, [vec![], high.clone(), vec![], ok, vec![], high]);
    }

    #[test]
    fn cpu_is_the_share_of_all_cores_between_two_samples() {
        let config = HostThresholds { cpu_percent: Some(40.0), ..HostThresholds::default() };
        let mut watch = HostWatch::default();
        let t = Instant::now();
        assert!(watch.update(&config, &sample(10.0, 0, 5), t, 2).is_empty(), "no rate from one sample");
        let events = watch.update(&config, &sample(11.0, 0, 5), t + Duration::from_secs(1), 2);
        match &events[..] {
            [AlertEvent { kind: AlertKind::HostHigh, subject: AlertSubject::Host { value, .. }, .. }] => {
                assert_eq!(*value, 50.0)
            }
            other => panic!("want one host_high at 50%: {other:?}"),
        }
    }

    #[test]
    fn open_files_count_against_the_soft_limit() {
        let config = HostThresholds { open_files_percent: Some(10.0), ..HostThresholds::default() };
        let mut watch = HostWatch::default();
        let t = Instant::now();
        assert_eq!(kinds(&watch.update(&config, &sample(0.0, 0, 99), t, 1)), []);
        assert_eq!(kinds(&watch.update(&config, &sample(0.0, 0, 100), t, 1)), [("host_high", "openFilesPercent")]);
    }

    #[test]
    fn a_removed_threshold_is_forgotten_without_an_event() {
        let on = HostThresholds { memory_percent: Some(50.0), ..HostThresholds::default() };
        let mut watch = HostWatch::default();
        let t = Instant::now();
        assert_eq!(watch.update(&on, &sample(0.0, 80, 5), t, 1).len(), 1);
        assert!(watch.update(&HostThresholds::default(), &sample(0.0, 10, 5), t, 1).is_empty());
        assert_eq!(kinds(&watch.update(&on, &sample(0.0, 80, 5), t, 1)), [("host_high", "memoryPercent")]);
    }
}
