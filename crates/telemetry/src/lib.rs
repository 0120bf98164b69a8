//! Telemetry shared by Axle's processes.
//!
//! [`exposition`] renders a Prometheus registry for scrapers (OpenMetrics or the classic text
//! format) and keeps the process's own CPU, memory and disk-write figures.

pub mod exposition;
