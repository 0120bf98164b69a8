//! The controllers' own figures on the server's `/metrics`: reconcile passes per controller,
//! by result, and how long they took (the names follow controller-runtime's
//! `reconcile_total` / `reconcile_time_seconds`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PassLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms … 8 s.
    Histogram::new(exponential_buckets(0.000_5, 2.0, 15))
}

#[derive(Clone, Debug)]
pub struct ReconcileMetrics {
    passes: Family<PassLabels, Counter>,
    durations: Family<ControllerLabels, Histogram, fn() -> Histogram>,
}

impl Default for ReconcileMetrics {
    fn default() -> Self {
        ReconcileMetrics { passes: Family::default(), durations: Family::new_with_constructor(duration_histogram) }
    }
}

impl telemetry::exposition::Registers for ReconcileMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "axle_controller_reconcile",
            "Reconcile passes by controller and result (success, error)",
            self.passes.clone(),
        );
        registry.register_with_unit(
            "axle_controller_reconcile_duration",
            "Time a controller's reconcile pass took",
            Unit::Seconds,
            self.durations.clone(),
        );
    }
}

impl ReconcileMetrics {
    /// Times `pass` as one reconcile of `controller` and counts its result.
    pub async fn measure<T, E>(
        &self,
        controller: &'static str,
        pass: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = pass.await;
        self.durations.get_or_create(&ControllerLabels { controller }).observe(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "success" } else { "error" };
        self.passes.get_or_create(&PassLabels { controller, result: outcome }).inc();
        result
    }
}
