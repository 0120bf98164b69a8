//! What the node's workloads use: CPU and memory per container and for the node, and restarts.
//!
//! Supervisors register each container when it starts (where its usage is read) and when it
//! ends. Two views come out of it:
//! - `/metrics`, Prometheus text with the kubelet's resource metric names
//!   (`container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`,
//!   `node_cpu_usage_seconds_total`, `node_memory_working_set_bytes`), read at scrape time;
//! - `/stats/summary`, the kubelet's Summary API (a subset), from which the API server answers
//!   `metrics.k8s.io` for `kubectl top`. CPU there is a rate, so a sampler reads the counters
//!   every [`SAMPLE_PERIOD`] and the rate is taken between its last two readings.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use runtime::{Usage, UsageSource};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// How often usage is sampled for rates (the `window` of `kubectl top`'s figures).
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// One container of one pod on this node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ContainerKey {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

struct Tracked {
    uid: String,
    running: Option<Running>,
    restarts: u32,
}

/// A running container: where its usage is read, where `kubectl exec` enters it and where
/// `kubectl attach` reaches it.
pub struct Running {
    pub usage: UsageSource,
    pub exec: runtime::ExecTarget,
    pub attach: runtime::AttachTarget,
}

struct Sample {
    at: SystemTime,
    node: Option<Usage>,
    containers: BTreeMap<ContainerKey, Usage>,
}

pub struct Stats {
    node_name: String,
    tracked: Mutex<BTreeMap<ContainerKey, Tracked>>,
    /// The sampler's last two readings (older first).
    samples: Mutex<(Option<Sample>, Option<Sample>)>,
    registry: Registry,
    container_cpu: Family<ContainerKey, Counter<f64, AtomicU64>>,
    container_memory: Family<ContainerKey, Gauge>,
    restarts: Family<ContainerKey, Counter>,
    node_cpu: Counter<f64, AtomicU64>,
    node_memory: Gauge,
    process: telemetry::exposition::ProcessMetrics,
}

impl Stats {
    /// `export`: the OTLP exporter's own figures, shown here when the agent exports.
    pub fn new(node_name: &str, export: Option<&telemetry::export::ExportMetrics>) -> Stats {
        let mut registry = Registry::default();
        if let Some(export) = export {
            telemetry::exposition::Registers::register(export, &mut registry);
        }
        let container_cpu = Family::<ContainerKey, Counter<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "container_cpu_usage",
            "Cumulative CPU time of the container",
            Unit::Seconds,
            container_cpu.clone(),
        );
        let container_memory = Family::<ContainerKey, Gauge>::default();
        registry.register_with_unit(
            "container_memory_working_set",
            "Working set of the container (usage minus inactive file cache)",
            Unit::Bytes,
            container_memory.clone(),
        );
        let restarts = Family::<ContainerKey, Counter>::default();
        registry.register("axle_container_restarts", "Restarts of the container in its pod", restarts.clone());
        let node_cpu = Counter::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "node_cpu_usage",
            "Cumulative CPU time of the node (not idle, not waiting for I/O)",
            Unit::Seconds,
            node_cpu.clone(),
        );
        let node_memory = Gauge::default();
        registry.register_with_unit(
            "node_memory_working_set",
            "Memory in use on the node (total minus available)",
            Unit::Bytes,
            node_memory.clone(),
        );
        let process = telemetry::exposition::ProcessMetrics::register(&mut registry, "agent");
        Stats {
            node_name: node_name.to_string(),
            tracked: Mutex::new(BTreeMap::new()),
            samples: Mutex::new((None, None)),
            registry,
            container_cpu,
            container_memory,
            restarts,
            node_cpu,
            node_memory,
            process,
        }
    }

    /// A container (re)started: its usage is read from `source` until it ends.
    pub fn started(&self, key: ContainerKey, uid: &str, running: Running, restarts: u32) {
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        tracked.insert(key, Tracked { uid: uid.to_string(), running: Some(running), restarts });
    }

    /// A container ended; its restarts stay counted while the pod is here.
    pub fn ended(&self, key: &ContainerKey) {
        let mut tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tracked.get_mut(key) {
            t.running = None;
        }
    }

    /// The main process of some running container of the pod (the pod's namespaces).
    pub fn any_running_pid(&self, namespace: &str, pod: &str) -> Option<i32> {
        let tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        tracked
            .iter()
            .filter(|(key, _)| key.namespace == namespace && key.pod == pod)
            .find_map(|(_, t)| t.running.as_ref().map(|r| r.exec.pid()))
    }

    /// Where a running container is entered (None: not running here).
    pub fn exec_target(&self, key: &ContainerKey) -> Option<runtime::ExecTarget> {
        let tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        tracked.get(key)?.running.as_ref().map(|r| r.exec.clone())
    }

    /// Where a running container is attached to (None: not running here).
    pub fn attach_target(&self, key: &ContainerKey) -> Option<runtime::AttachTarget> {
        let tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        tracked.get(key)?.running.as_ref().map(|r| r.attach.clone())
    }

    /// The pod left the node.
    pub fn forget_pod(&self, uid: &str) {
        self.tracked.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, t| t.uid != uid);
    }

    fn read(&self) -> Sample {
        let sources: Vec<(ContainerKey, UsageSource)> = {
            let tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
            tracked.iter().filter_map(|(k, t)| Some((k.clone(), t.running.as_ref()?.usage.clone()))).collect()
        };
        let containers = sources.into_iter().filter_map(|(key, source)| Some((key, source.read()?))).collect();
        Sample { at: SystemTime::now(), node: runtime::node_usage(), containers }
    }

    /// Samples until `shutdown`, for the rates of the summary.
    pub async fn sample(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let sample = self.read();
            {
                let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
                samples.0 = samples.1.take();
                samples.1 = Some(sample);
            }
            tokio::select! {
                _ = tokio::time::sleep(SAMPLE_PERIOD) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The Prometheus exposition, read now.
    pub fn metrics(&self, accept: &str) -> (&'static str, String) {
        let sample = self.read();
        self.container_cpu.clear();
        self.container_memory.clear();
        for (key, usage) in &sample.containers {
            telemetry::exposition::set_counter(
                &self.container_cpu.get_or_create(key),
                usage.cpu_nanoseconds as f64 / 1e9,
            );
            self.container_memory.get_or_create(key).set(saturating_i64(usage.memory_working_set_bytes));
        }
        self.restarts.clear();
        for (key, tracked) in self.tracked.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            self.restarts.get_or_create(key).inc_by(u64::from(tracked.restarts));
        }
        if let Some(node) = sample.node {
            telemetry::exposition::set_counter(&self.node_cpu, node.cpu_nanoseconds as f64 / 1e9);
            self.node_memory.set(saturating_i64(node.memory_working_set_bytes));
        }
        self.process.refresh(&[]);
        telemetry::exposition::render(&self.registry, accept)
    }

    /// The kubelet Summary API's shape (`/stats/summary`), for what the API needs: node and
    /// per-container CPU rate (`usageNanoCores`, between the last two samples) and memory.
    pub fn summary(&self) -> Value {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(older), Some(newer)) = (&samples.0, &samples.1) else {
            return json!({"node": {"nodeName": self.node_name}, "pods": []});
        };
        let seconds = newer.at.duration_since(older.at).unwrap_or_default().as_secs_f64().max(0.001);
        let unix = newer.at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let time = api::meta::format_unix(i64::try_from(unix).unwrap_or(0));
        let entry = |now: &Usage, before: Option<&Usage>| {
            let mut cpu = json!({"time": time, "usageCoreNanoSeconds": now.cpu_nanoseconds});
            if let Some(before) = before {
                let nanos = now.cpu_nanoseconds.saturating_sub(before.cpu_nanoseconds) as f64;
                cpu["usageNanoCores"] = json!((nanos / seconds) as u64);
            }
            (cpu, json!({"time": time, "workingSetBytes": now.memory_working_set_bytes}))
        };
        let mut node = json!({"nodeName": self.node_name, "startTime": time});
        if let Some(usage) = &newer.node {
            let (cpu, memory) = entry(usage, older.node.as_ref());
            node["cpu"] = cpu;
            node["memory"] = memory;
        }
        let tracked = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        let mut pods: BTreeMap<(String, String), Value> = BTreeMap::new();
        for (key, usage) in &newer.containers {
            let uid = tracked.get(key).map(|t| t.uid.clone()).unwrap_or_default();
            let pod = pods.entry((key.namespace.clone(), key.pod.clone())).or_insert_with(
                || json!({"podRef": {"namespace": key.namespace, "name": key.pod, "uid": uid}, "containers": []}),
            );
            let (cpu, memory) = entry(usage, older.containers.get(key));
            if let Some(list) = pod["containers"].as_array_mut() {
                list.push(json!({"name": key.container, "cpu": cpu, "memory": memory}));
            }
        }
        json!({"node": node, "pods": pods.into_values().collect::<Vec<_>>(), "window": format!("{seconds:.1}s")})
    }
}

/// One pod's view of the node's stats: its supervisor reports its containers here.
#[derive(Clone)]
pub struct PodStats {
    stats: Arc<Stats>,
    namespace: String,
    pod: String,
    uid: String,
}

impl PodStats {
    pub fn new(stats: Arc<Stats>, pod: &Value) -> PodStats {
        PodStats {
            stats,
            namespace: api::meta::namespace_of(pod).to_string(),
            pod: api::meta::name_of(pod).to_string(),
            uid: api::meta::uid_of(pod).to_string(),
        }
    }

    fn key(&self, container: &str) -> ContainerKey {
        ContainerKey { namespace: self.namespace.clone(), pod: self.pod.clone(), container: container.to_string() }
    }

    pub fn started(&self, container: &str, running: Running, restarts: u32) {
        self.stats.started(self.key(container), &self.uid, running, restarts);
    }

    pub fn ended(&self, container: &str) {
        self.stats.ended(&self.key(container));
    }

    pub fn forget(&self) {
        self.stats.forget_pod(&self.uid);
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(container: &str) -> ContainerKey {
        ContainerKey { namespace: "car".into(), pod: "nav".into(), container: container.into() }
    }

    #[tokio::test]
    async fn this_process_is_measured_as_a_container() {
        let stats = Stats::new("hpc-1", None);
        // Any live pid works as a process group source; a cgroup that is not there reads
        // nothing, so it has no series.
        let pid = std::process::id() as i32;
        let running = |usage| Running {
            usage,
            exec: runtime::ExecTarget::Process { pid },
            attach: runtime::AttachTarget::detached(),
        };
        stats.started(key("app"), "uid-1", running(UsageSource::ProcessGroup(pid)), 2);
        stats.started(key("gone"), "uid-1", running(UsageSource::Cgroup("/axle/not-there".into())), 0);
        let (_, text) = stats.metrics("text/plain");
        assert!(text.contains("node_memory_working_set_bytes "), "{text}");
        assert!(text.contains("axle_container_restarts_total{namespace=\"car\",pod=\"nav\",container=\"app\"} 2"));
        assert!(text.contains("container_memory_working_set_bytes{namespace=\"car\",pod=\"nav\",container=\"app\"}"));
        assert!(!text.contains("container_memory_working_set_bytes{namespace=\"car\",pod=\"nav\",container=\"gone\"}"));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let sampling = tokio::time::timeout(SAMPLE_PERIOD + Duration::from_secs(2), stats.sample(rx));
        let _ = sampling.await;
        drop(tx);
        let summary = stats.summary();
        assert!(summary["node"]["cpu"]["usageNanoCores"].is_u64(), "{summary}");
        assert!(summary["node"]["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 0);
        stats.forget_pod("uid-1");
        let (_, text) = stats.metrics("text/plain");
        assert!(!text.contains("axle_container_restarts_total{"), "{text}");
    }
}
