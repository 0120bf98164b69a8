//! Telemetry shared by Axle's processes.
//!
//! - [`exposition`] renders a Prometheus registry for scrapers (OpenMetrics or the classic
//!   text format) and keeps the process's own CPU, memory and disk-write figures;
//! - [`export`] sends the process's logs and metrics to an OpenTelemetry endpoint (OTLP over
//!   HTTP, protobuf: [`otlp`]), keeping them in a bounded on-disk buffer ([`queue`]) while the
//!   car is offline; [`capture`] turns the process's own `tracing` events into log records;
//! - [`wear`] counts every storage write of the process by cause.

pub mod capture;
pub mod export;
pub mod exposition;
pub mod otlp;
pub mod queue;
pub mod wear;
