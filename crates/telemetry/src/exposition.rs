//! Prometheus exposition: one registry per process, rendered as OpenMetrics when the scraper
//! asks for it (Prometheus does), else as the classic text format (0.0.4) that `promtool` and
//! older scrapers read.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// Metrics kept by one part of a process, registered into the process's registry.
pub trait Registers: Send + Sync + std::fmt::Debug {
    fn register(&self, registry: &mut Registry);
}

/// Renders `registry` for a scraper that sent `accept`. Returns (content type, body).
pub fn render(registry: &Registry, accept: &str) -> (&'static str, String) {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        tracing::warn!("cannot encode the metrics");
    }
    if accept.contains("application/openmetrics-text") {
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", text)
    } else {
        ("text/plain; version=0.0.4; charset=utf-8", classic_text(&text))
    }
}

/// OpenMetrics → the classic text format: counters are named with their `_total` in HELP and
/// TYPE, and the `# UNIT` and `# EOF` lines go.
pub fn classic_text(openmetrics: &str) -> String {
    let lines: Vec<&str> = openmetrics.lines().collect();
    let mut out = String::with_capacity(openmetrics.len());
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("# UNIT ") || *line == "# EOF" {
            continue;
        }
        let family =
            line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")).and_then(|r| r.split(' ').next());
        let counter =
            family.is_some_and(|name| lines[i..].iter().take(2).any(|l| *l == format!("# TYPE {name} counter")));
        match family {
            Some(name) if counter => out.push_str(&line.replacen(name, &format!("{name}_total"), 1)),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The process's own CPU time, resident memory, start time and bytes written to storage (in
/// all, from `/proc/self`, and by cause, from [`crate::wear`]), refreshed at each scrape.
pub struct ProcessMetrics {
    component: &'static str,
    cpu_seconds: Counter<f64, AtomicU64>,
    resident: Gauge,
    written: Counter,
    written_by: Family<WriteLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    component: String,
    reason: String,
}

impl ProcessMetrics {
    /// Registers the metrics; `process` names the process in their help texts and is the
    /// `component` label of its storage writes.
    pub fn register(registry: &mut Registry, process: &'static str) -> ProcessMetrics {
        let cpu_seconds = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "process_cpu",
            format!("CPU time of the {process} process"),
            Unit::Seconds,
            cpu_seconds.clone(),
        );
        let resident = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            format!("Resident memory of the {process} process"),
            Unit::Bytes,
            resident.clone(),
        );
        let written = Counter::default();
        registry.register_with_unit(
            "axle_disk_written",
            format!("Bytes the {process} process caused to be written to storage"),
            Unit::Bytes,
            written.clone(),
        );
        let written_by = Family::<WriteLabels, Counter>::default();
        registry.register(
            "axle_storage_bytes_written",
            "Bytes written to storage, by component and cause (other: not claimed by a cause)",
            written_by.clone(),
        );
        let start_time = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "process_start_time",
            format!("Start time of the {process} process since the unix epoch"),
            Unit::Seconds,
            start_time.clone(),
        );
        if let Some(started) = process_start_time() {
            start_time.set(started);
        }
        ProcessMetrics { component: process, cpu_seconds, resident, written, written_by }
    }

    /// Refreshes the figures; `causes` adds writes counted elsewhere than in [`crate::wear`]
    /// (the server's store keeps its own).
    pub fn refresh(&self, causes: &[(&'static str, u64)]) {
        let field = |file: &str, name: &str| -> Option<u64> {
            let text = std::fs::read_to_string(format!("/proc/self/{file}")).ok()?;
            text.lines().find_map(|l| l.strip_prefix(name))?.split_whitespace().next()?.parse().ok()
        };
        if let Some(kib) = field("status", "VmRSS:") {
            self.resident.set(i64::try_from(kib * 1024).unwrap_or(i64::MAX));
        }
        let mut claimed = 0;
        let ledger = crate::wear::snapshot();
        for (reason, bytes) in ledger.iter().map(|(r, b)| (*r, *b)).chain(causes.iter().copied()) {
            claimed += bytes;
            self.set_written(reason, bytes);
        }
        if let Some(bytes) = field("io", "write_bytes:") {
            self.written.inc_by(bytes.saturating_sub(self.written.get()));
            self.set_written("other", bytes.saturating_sub(claimed));
        }
        // utime and stime, in clock ticks (100 per second on Linux), fields 14 and 15.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let ticks: u64 = after_name.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
        set_counter(&self.cpu_seconds, ticks as f64 / 100.0);
    }
}

impl ProcessMetrics {
    fn set_written(&self, reason: &str, bytes: u64) {
        let labels = WriteLabels { component: self.component.to_string(), reason: reason.to_string() };
        let counter = self.written_by.get_or_create(&labels);
        counter.inc_by(bytes.saturating_sub(counter.get()));
    }
}

/// This process's start time: boot time plus its start in clock ticks (`/proc/self/stat`).
fn process_start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    // Field 22 (starttime); after the name, field 3 is the first.
    let ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + ticks / 100.0)
}

/// Sets a counter that mirrors a cumulative figure read elsewhere (it only moves forward).
pub fn set_counter(counter: &Counter<f64, AtomicU64>, value: f64) {
    let delta = value - counter.get();
    if delta > 0.0 {
        counter.inc_by(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_with_total() {
        let mut registry = Registry::default();
        let requests: Counter = Counter::default();
        requests.inc();
        registry.register("requests", "Requests", requests);
        let process = ProcessMetrics::register(&mut registry, "test");
        crate::wear::add("pod-state", 4096);
        process.refresh(&[("store-log", 8192)]);
        let (content_type, text) = render(&registry, "text/plain");
        assert!(
            text.contains("axle_storage_bytes_written_total{component=\"test\",reason=\"store-log\"} 8192\n"),
            "{text}"
        );
        assert!(text.contains("axle_storage_bytes_written_total{component=\"test\",reason=\"pod-state\"} 4096\n"));
        assert!(text.contains("reason=\"other\"}"), "what no cause claimed: {text}");
        assert!(text.contains("process_start_time_seconds "));
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        assert!(text.contains("# TYPE requests_total counter\nrequests_total 1\n"), "{text}");
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        assert!(text.contains("process_resident_memory_bytes "));
        let (content_type, text) = render(&registry, "application/openmetrics-text; version=1.0.0");
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(text.ends_with("# EOF\n"));
    }
}
