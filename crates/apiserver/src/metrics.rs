//! `/metrics`: the server's Prometheus text exposition.
//!
//! Request counts and latencies by verb, group, resource and code, and the open watches, are
//! counted as requests happen. What the car holds — pods per node and phase, nodes by
//! readiness, campaigns by phase, the store's size — is read from the store when Prometheus
//! scrapes, so nothing is maintained between scrapes. The process's own CPU time, resident
//! memory and bytes written to disk come from `/proc/self`.

use crate::State;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub verb: String,
    pub group: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    pub group: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    node: String,
    namespace: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    kind: String,
    ready: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

/// An open watch, counted while it lives.
pub struct Watching(Gauge);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn latency_histogram() -> Histogram {
    // 0.25 ms … 4 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<ResourceLabels, Histogram, fn() -> Histogram>,
    watchers: Family<WatchLabels, Gauge>,
    pods: Family<PodLabels, Gauge>,
    nodes: Family<NodeLabels, Gauge>,
    campaigns: Family<PhaseLabels, Gauge>,
    store_size: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    resident: Gauge,
    written: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "API requests by verb, group, resource, subresource and HTTP code",
            requests.clone(),
        );
        let latency = Family::<ResourceLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "apiserver_request_duration",
            "Time to answer an API request (for watches: to start the stream)",
            Unit::Seconds,
            latency.clone(),
        );
        let watchers = Family::<WatchLabels, Gauge>::default();
        registry.register("apiserver_registered_watchers", "Open watches by group and resource", watchers.clone());
        let pods = Family::<PodLabels, Gauge>::default();
        registry.register("axle_pods", "Pods by node, namespace and phase", pods.clone());
        let nodes = Family::<NodeLabels, Gauge>::default();
        registry.register("axle_nodes", "Nodes by kind (hpc or ecu) and readiness", nodes.clone());
        let campaigns = Family::<PhaseLabels, Gauge>::default();
        registry.register("axle_campaigns", "Update campaigns by phase", campaigns.clone());
        let store_size = Gauge::default();
        registry.register_with_unit("axle_store_size", "Size of the store file", Unit::Bytes, store_size.clone());
        let cpu_seconds = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "process_cpu",
            "CPU time of the server process",
            Unit::Seconds,
            cpu_seconds.clone(),
        );
        let resident = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the server process",
            Unit::Bytes,
            resident.clone(),
        );
        let written = Counter::default();
        registry.register_with_unit(
            "axle_disk_written",
            "Bytes the server process caused to be written to storage (store, content, state)",
            Unit::Bytes,
            written.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            watchers,
            pods,
            nodes,
            campaigns,
            store_size,
            cpu_seconds,
            resident,
            written,
        }
    }

    /// Counts one answered request.
    pub fn observe(&self, labels: RequestLabels, seconds: f64) {
        let resource = ResourceLabels {
            verb: labels.verb.clone(),
            group: labels.group.clone(),
            resource: labels.resource.clone(),
        };
        self.latency.get_or_create(&resource).observe(seconds);
        self.requests.get_or_create(&labels).inc();
    }

    /// Counts an open watch on one resource until the returned guard drops.
    pub fn watching(&self, group: &str, resource: &str) -> Watching {
        let gauge = self
            .watchers
            .get_or_create(&WatchLabels { group: group.to_string(), resource: resource.to_string() })
            .clone();
        gauge.inc();
        Watching(gauge)
    }

    /// The exposition, with the car's state read now: OpenMetrics when the scraper asks for it
    /// (Prometheus does), else the classic text format (0.0.4) that `promtool` and older
    /// scrapers read. Returns (content type, body).
    pub fn render(&self, state: &State, accept: &str) -> (&'static str, String) {
        self.read_state(state);
        self.read_process();
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::warn!("cannot encode the metrics");
        }
        if accept.contains("application/openmetrics-text") {
            ("application/openmetrics-text; version=1.0.0; charset=utf-8", text)
        } else {
            ("text/plain; version=0.0.4; charset=utf-8", classic_text(&text))
        }
    }

    fn read_state(&self, state: &State) {
        let list =
            |prefix: &str| state.store.list(prefix, None, 0, &|_| true).map(|page| page.items).unwrap_or_default();
        self.pods.clear();
        for pod in list("core/pods/") {
            let labels = PodLabels {
                node: pod["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                namespace: api::meta::namespace_of(&pod).to_string(),
                phase: pod["status"]["phase"].as_str().unwrap_or("Pending").to_string(),
            };
            self.pods.get_or_create(&labels).inc();
        }
        self.nodes.clear();
        for node in list("core/nodes/") {
            let ready = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .and_then(|c| c["status"].as_str())
                .unwrap_or("Unknown")
                .to_lowercase();
            let kind = if node["metadata"]["labels"]["axle.dev/ecu"] == "true" { "ecu" } else { "hpc" };
            self.nodes.get_or_create(&NodeLabels { kind: kind.into(), ready }).inc();
        }
        self.campaigns.clear();
        for campaign in list("axle.dev/campaigns/") {
            let phase = campaign["status"]["phase"].as_str().filter(|p| !p.is_empty()).unwrap_or("Pending");
            self.campaigns.get_or_create(&PhaseLabels { phase: phase.to_string() }).inc();
        }
        let size = std::fs::metadata(state.data_dir.join("store.redb")).map(|m| m.len()).unwrap_or(0);
        self.store_size.set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    fn read_process(&self) {
        let field = |file: &str, name: &str| -> Option<u64> {
            let text = std::fs::read_to_string(format!("/proc/self/{file}")).ok()?;
            text.lines().find_map(|l| l.strip_prefix(name))?.split_whitespace().next()?.parse().ok()
        };
        if let Some(kib) = field("status", "VmRSS:") {
            self.resident.set(i64::try_from(kib * 1024).unwrap_or(i64::MAX));
        }
        if let Some(bytes) = field("io", "write_bytes:") {
            self.written.inc_by(bytes.saturating_sub(self.written.get()));
        }
        // utime and stime, in clock ticks (100 per second on Linux), fields 14 and 15.
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let ticks: u64 = after_name.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
        let seconds = ticks as f64 / 100.0;
        let delta = seconds - self.cpu_seconds.get();
        if delta > 0.0 {
            self.cpu_seconds.inc_by(delta);
        }
    }
}

/// OpenMetrics → the classic text format: counters are named with their `_total` in HELP and
/// TYPE, and the `# UNIT` and `# EOF` lines go.
fn classic_text(openmetrics: &str) -> String {
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

/// The Kubernetes verb of a request: GET, LIST, WATCH, POST, PUT, PATCH, DELETE.
pub fn verb(method: &hyper::Method, named: bool, watch: bool) -> String {
    match (method.as_str(), named, watch) {
        ("GET", false, true) => "WATCH".into(),
        ("GET", false, false) => "LIST".into(),
        (other, _, _) => other.to_string(),
    }
}
