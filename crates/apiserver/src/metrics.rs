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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FirmwareLabels {
    node: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EcuLabels {
    node: String,
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
    firmware: Family<FirmwareLabels, Gauge>,
    flash_progress: Family<EcuLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    store_size: Gauge,
    process: telemetry::exposition::ProcessMetrics,
}

impl Metrics {
    pub fn new(others: &[std::sync::Arc<dyn telemetry::exposition::Registers>]) -> Metrics {
        let mut registry = Registry::default();
        for other in others {
            other.register(&mut registry);
        }
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
        let firmware = Family::<FirmwareLabels, Gauge>::default();
        registry.register(
            "axle_ecu_firmware_pods",
            "Firmware pods by ECU node and state (Flashing, Flashed, or why a flash failed)",
            firmware.clone(),
        );
        let flash_progress = Family::<EcuLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "axle_ecu_flash_progress_ratio",
            "Share of the firmware image sent to an ECU being flashed",
            flash_progress.clone(),
        );
        let store_size = Gauge::default();
        registry.register_with_unit("axle_store_size", "Size of the store file", Unit::Bytes, store_size.clone());
        let process = telemetry::exposition::ProcessMetrics::register(&mut registry, "server");
        Metrics {
            registry,
            requests,
            latency,
            watchers,
            pods,
            nodes,
            campaigns,
            firmware,
            flash_progress,
            store_size,
            process,
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

    /// The exposition, with the car's state read now. Returns (content type, body).
    pub fn render(&self, state: &State, accept: &str) -> (&'static str, String) {
        self.read_state(state);
        let store = state.store.write_stats();
        self.process.refresh(&[("store-log", store.log_bytes), ("store-checkpoint", store.checkpoint_bytes)]);
        telemetry::exposition::render(&self.registry, accept)
    }

    /// A firmware pod's state (its Ready condition's reason, as the ECU gateway writes it) and,
    /// while it is flashed, how far along.
    fn read_firmware_pod(&self, pod: &serde_json::Value) {
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        let ready = pod["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
        let state = ready.and_then(|c| c["reason"].as_str()).unwrap_or("Pending").to_string();
        let waiting = &pod["status"]["containerStatuses"][0]["state"]["waiting"];
        if waiting["reason"] == api::firmware::FLASHING {
            let progress = waiting["message"].as_str().and_then(api::firmware::parse_progress);
            if let Some((sent, total)) = progress.filter(|(_, total)| *total > 0) {
                self.flash_progress.get_or_create(&EcuLabels { node: node.clone() }).set(sent as f64 / total as f64);
            }
        }
        self.firmware.get_or_create(&FirmwareLabels { node, state }).inc();
    }

    fn read_state(&self, state: &State) {
        let list =
            |prefix: &str| state.store.list(prefix, None, 0, &|_| true).map(|page| page.items).unwrap_or_default();
        self.pods.clear();
        self.firmware.clear();
        self.flash_progress.clear();
        for pod in list("core/pods/") {
            if pod["spec"]["runtimeClassName"] == "ecu" {
                self.read_firmware_pod(&pod);
            }
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
        let size = std::fs::metadata(state.data_dir.join(store::FILE_NAME)).map(|m| m.len()).unwrap_or(0);
        self.store_size.set(i64::try_from(size).unwrap_or(i64::MAX));
    }
}

/// The Kubernetes verb of a request: GET, LIST, WATCH, POST, PUT, PATCH, DELETE.
pub fn verb(method: &hyper::Method, named: bool, watch: bool) -> String {
    match (method.as_str(), named, watch) {
        ("GET", false, true) => "WATCH".into(),
        ("GET", false, false) => "LIST".into(),
        (other, _, _) => other.to_string(),
    }
}
