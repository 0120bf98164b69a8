//! `cargo bench -p axle --bench selfupdate`: what a self-update of the server costs, on the
//! release build. Prints a table for people and one JSON line for machines.
//!
//! Five updates in a row (v1 → v2 → … → v6, each a binary stamped with the next version,
//! delivered as a delta on the watched "USB stick"): bundle size, time from delivery to the
//! campaign Committed, and the longest stretch the API did not answer during the switch.

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::launched::{watch_downtime, Car};
use support::median;

fn main() {
    let mut car = Car::start();
    let (mut sizes, mut committed, mut downtimes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 2..=6 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let downtime = watch_downtime(car.port, stop.clone());
        let started = Instant::now();
        let (bundle, size) = car.deliver(&format!("{round}.0.0"), &[], 30);
        let campaign = car.finished_campaign(bundle, Duration::from_secs(120));
        committed.push(started.elapsed().as_secs_f64());
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        downtimes.push(downtime.join().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN));
        assert_eq!(campaign["status"]["phase"], "Committed", "{campaign}");
        sizes.push(size as f64);
    }
    let binary_mib = std::fs::metadata(&car.v1).map(|m| m.len() as f64 / (1 << 20) as f64).unwrap_or(0.0);
    let (size, to_commit, downtime) = (median(sizes), median(committed), median(downtimes));
    println!("| self-update of the server, release build ({binary_mib:.1} MiB), median of 5 | value |");
    println!("|---|--:|");
    println!("| bundle for a version bump (delta) | {size:.0} bytes |");
    println!("| delivery on the stick → campaign Committed (stick polled every 2 s) | {to_commit:.2} s |");
    println!("| longest stretch the API did not answer | {downtime:.0} ms |");
    println!("{}", json!({"bundle_bytes": size, "to_committed_s": to_commit, "api_downtime_ms": downtime}));
}
