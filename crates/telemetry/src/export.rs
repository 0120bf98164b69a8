//! OTLP/HTTP export (protobuf, gzip) of a process's logs and metrics, buffered on disk while
//! the endpoint cannot be reached.
//!
//! Every `interval` the log records gathered since the last export become one batch (one
//! `ExportLogsServiceRequest`), and every `metrics_interval` the process's Prometheus
//! exposition becomes one (`ExportMetricsServiceRequest`). While the endpoint answers and
//! nothing waits on disk, a batch is sent at once; otherwise it joins the [`DiskQueue`], which
//! is drained in order once the endpoint answers again, retrying with exponential back-off
//! (1 s doubling to 60 s). So data arrives in the order it was made, and an online car writes
//! nothing to its flash for telemetry.

use crate::otlp::{self, Attributes, Log};
use crate::queue::{Batch, DiskQueue, Signal};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use prost::Message;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Log records kept in memory between two exports; beyond, the oldest are dropped (counted).
const SINK_CAPACITY: usize = 20_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Where and how a process exports.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The OTLP/HTTP base URL (`http://collector:4318`); `/v1/logs` and `/v1/metrics` are
    /// appended.
    pub endpoint: String,
    /// Resource attributes of everything this process sends (`service.name`,
    /// `k8s.node.name`, `vehicle.id`).
    pub resource: Attributes,
    pub buffer_dir: PathBuf,
    /// Bytes the buffer may take on disk.
    pub buffer_limit: u64,
    pub interval: Duration,
    pub metrics_interval: Duration,
}

/// Log records waiting for the next export. Cloned handles share one buffer.
#[derive(Clone, Default)]
pub struct LogSink(Arc<Mutex<SinkState>>);

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSink").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct SinkState {
    records: std::collections::VecDeque<Log>,
    dropped: u64,
}

impl LogSink {
    pub fn push(&self, log: Log) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.records.len() >= SINK_CAPACITY {
            state.records.pop_front();
            state.dropped += 1;
        }
        state.records.push_back(log);
    }

    /// Everything gathered, and how many were dropped for lack of room.
    fn take(&self) -> (Vec<Log>, u64) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (state.records.drain(..).collect(), std::mem::take(&mut state.dropped))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    signal: &'static str,
}

/// The exporter's own figures, for the process's `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct ExportMetrics {
    sent: Family<SignalLabels, Counter>,
    dropped: Family<SignalLabels, Counter>,
    buffered_bytes: Gauge,
    buffered_batches: Gauge,
}

impl crate::exposition::Registers for ExportMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "axle_telemetry_sent",
            "Log records and metric data points delivered to the OTLP endpoint",
            self.sent.clone(),
        );
        registry.register(
            "axle_telemetry_dropped",
            "Log records and metric data points dropped: oldest first when the offline buffer is full, or refused by the endpoint",
            self.dropped.clone(),
        );
        registry.register_with_unit(
            "axle_telemetry_buffer",
            "Bytes the offline buffer takes on disk",
            Unit::Bytes,
            self.buffered_bytes.clone(),
        );
        registry.register(
            "axle_telemetry_buffer_batches",
            "Export batches waiting in the offline buffer",
            self.buffered_batches.clone(),
        );
    }
}

impl ExportMetrics {
    fn count(family: &Family<SignalLabels, Counter>, signal: Signal, n: u64) {
        if n > 0 {
            family.get_or_create(&SignalLabels { signal: signal.name() }).inc_by(n);
        }
    }
}

/// The process's metrics, as a Prometheus text exposition.
pub type MetricsSource = Box<dyn Fn() -> String + Send + Sync>;

/// Why a batch did not arrive.
enum SendError {
    /// Try again later (no connection, timeout, 429, 502–504).
    Retry(String),
    /// The endpoint refused it for good (another 4xx or 5xx): retrying cannot help.
    Refused(String),
}

type HttpClient = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Exporter {
    config: ExportConfig,
    queue: DiskQueue,
    client: HttpClient,
    metrics: ExportMetrics,
    /// When the drain may be tried again, after a failure.
    retry_at: Option<Instant>,
    backoff: Duration,
}

pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// Exports until `shutdown`; what is still pending then goes to the buffer for the next start.
pub async fn run(
    config: ExportConfig,
    sink: LogSink,
    metrics: ExportMetrics,
    source: MetricsSource,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let queue = match DiskQueue::open(&config.buffer_dir, config.buffer_limit) {
        Ok(queue) => queue,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the telemetry buffer; telemetry is not exported");
            return;
        }
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let started = unix_nanos(SystemTime::now());
    let mut exporter = Exporter { config, queue, client, metrics, retry_at: None, backoff: BACKOFF_START };
    if !exporter.queue.is_empty() {
        tracing::info!(batches = exporter.queue.len(), "telemetry buffered while offline is waiting for delivery");
    }
    let mut next_metrics = Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(exporter.config.interval) => false,
            _ = shutdown.changed() => true,
        };
        let (logs, lost) = sink.take();
        ExportMetrics::count(&exporter.metrics.dropped, Signal::Logs, lost);
        let mut batches = Vec::new();
        if !logs.is_empty() {
            let request = otlp::logs_request(&exporter.config.resource, &logs);
            batches.push(Batch {
                signal: Signal::Logs,
                count: logs.len() as u32,
                body: gzip(&request.encode_to_vec()),
            });
        }
        if Instant::now() >= next_metrics && !stopping {
            next_metrics = Instant::now() + exporter.config.metrics_interval;
            let now = unix_nanos(SystemTime::now());
            let (request, points) = otlp::metrics_request(&exporter.config.resource, &source(), started, now);
            batches.push(Batch { signal: Signal::Metrics, count: points as u32, body: gzip(&request.encode_to_vec()) });
        }
        for batch in batches {
            exporter.deliver_or_keep(batch, stopping).await;
        }
        if stopping {
            return;
        }
        exporter.drain().await;
        exporter.metrics.buffered_bytes.set(i64::try_from(exporter.queue.bytes()).unwrap_or(i64::MAX));
        exporter.metrics.buffered_batches.set(exporter.queue.len() as i64);
    }
}

impl Exporter {
    /// Sends a fresh batch if nothing waits before it and the endpoint is up; else buffers it.
    async fn deliver_or_keep(&mut self, batch: Batch, stopping: bool) {
        if self.queue.is_empty() && self.retry_at.is_none() && !stopping {
            match self.send(&batch).await {
                Ok(()) => return ExportMetrics::count(&self.metrics.sent, batch.signal, u64::from(batch.count)),
                Err(SendError::Refused(why)) => {
                    tracing::warn!(signal = batch.signal.name(), %why, "the OTLP endpoint refused a batch; dropped");
                    return ExportMetrics::count(&self.metrics.dropped, batch.signal, u64::from(batch.count));
                }
                Err(SendError::Retry(why)) => self.failed(&why),
            }
        }
        match self.queue.push(&batch) {
            Ok(dropped) => {
                for (signal, n) in dropped {
                    ExportMetrics::count(&self.metrics.dropped, signal, n);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot buffer telemetry; dropped");
                ExportMetrics::count(&self.metrics.dropped, batch.signal, u64::from(batch.count));
            }
        }
    }

    /// Delivers what waits on disk, oldest first, until it is empty or the endpoint fails.
    async fn drain(&mut self) {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        loop {
            let batch = match self.queue.front() {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the telemetry buffer");
                    break;
                }
            };
            match self.send(&batch).await {
                Ok(()) => ExportMetrics::count(&self.metrics.sent, batch.signal, u64::from(batch.count)),
                Err(SendError::Refused(why)) => {
                    tracing::warn!(signal = batch.signal.name(), %why, "the OTLP endpoint refused a buffered batch; dropped");
                    ExportMetrics::count(&self.metrics.dropped, batch.signal, u64::from(batch.count));
                }
                Err(SendError::Retry(why)) => return self.failed(&why),
            }
            if let Err(e) = self.queue.pop() {
                tracing::warn!(error = %e, "cannot advance the telemetry buffer");
                break;
            }
        }
        if self.retry_at.take().is_some() {
            tracing::info!("the OTLP endpoint answers again; buffered telemetry delivered");
        }
        self.backoff = BACKOFF_START;
    }

    fn failed(&mut self, why: &str) {
        if self.retry_at.is_none() {
            tracing::info!(endpoint = %self.config.endpoint, %why, "the OTLP endpoint cannot be reached; buffering telemetry on disk");
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_CAP);
    }

    async fn send(&self, batch: &Batch) -> Result<(), SendError> {
        let path = match batch.signal {
            Signal::Logs => "/v1/logs",
            Signal::Metrics => "/v1/metrics",
        };
        let url = format!("{}{path}", self.config.endpoint.trim_end_matches('/'));
        let request = hyper::Request::post(&url)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(Full::new(Bytes::from(batch.body.clone())))
            .map_err(|e| SendError::Refused(format!("invalid endpoint {url}: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| SendError::Retry(format!("{url}: {e}")))?;
            let status = response.status();
            // Read the (small) answer so the connection can be reused.
            let _ = response.into_body().collect().await;
            match status.as_u16() {
                200..=299 => Ok(()),
                429 | 502..=504 => Err(SendError::Retry(format!("{url} answered {status}"))),
                _ => Err(SendError::Refused(format!("{url} answered {status}"))),
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(SendError::Retry(format!("{url} did not answer in time"))))
    }
}
