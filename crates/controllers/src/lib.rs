//! Axle's controllers: level-triggered reconcilers (see STYLE.md) that look at desired and
//! observed state through the API and take the next idempotent step. They are ordinary API
//! clients — they run in the server process but hold no shortcut into its store — so a crash
//! or a missed event is a non-event: the next pass sees the truth.

pub mod cronjob;
pub mod daemonset;
pub mod dependencies;
pub mod deployment;
pub mod job;
pub mod metrics;
pub mod node_lifecycle;
pub mod placement;
pub mod replicaset;
pub mod updates;
pub mod workloads;
