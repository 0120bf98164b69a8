//! `cargo bench -p axle --bench hostile`: the server's memory and answer time under floods. Prints
//! a table for people and one JSON line for machines. Needs the `.venv` of `.ci/run` (Python
//! opens the flood's connections, from 127.0.0.2 … 127.0.0.6, so that kubectl-like requests from
//! 127.0.0.1 are not counted against the same address).
//!
//! Figures: PSS and median `GET` of one ConfigMap (a new TLS connection each) when idle, while
//! 600 idle TCP connections are held (512 admitted: the caps), and while 500 watches are open
//! (and how many of them see one write).

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::flood::Flood;
use support::{median, pss_kib, Server};

/// PSS in MB and the median GET in ms, now.
fn measure(server: &Server) -> (f64, f64) {
    let samples: Vec<f64> = (0..15)
        .map(|_| {
            let started = Instant::now();
            let (status, _) = server.http("GET", "/api/v1/namespaces/default/configmaps/canary", None);
            assert_eq!(status, 200);
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    (pss_kib(server.child.id()) as f64 / 1024.0, median(samples))
}

fn main() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let pems = server.admin_pem_files(dir.path());
    server.apply_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: canary}\ndata: {k: v}\n", &[]);
    std::thread::sleep(Duration::from_secs(3));
    let idle = measure(&server);

    let connections = Flood::start(&server, "idle", 600, &pems);
    let under_connections = measure(&server);
    connections.stop();
    std::thread::sleep(Duration::from_secs(12)); // the handshake timeout closes the rest

    let watches = Flood::start(&server, "watch", 500, &pems);
    let under_watches = measure(&server);
    server.kubectl_ok(&["patch", "configmap", "canary", "--type", "merge", "-p", r#"{"data":{"k":"w"}}"#]);
    let saw_the_write = watches.stop();

    println!("{:<46} {:>10} {:>16}", "CONDITION", "PSS (MB)", "GET median (ms)");
    for (name, (pss, ms)) in
        [("idle", idle), ("600 idle connections (512 admitted)", under_connections), ("500 watches", under_watches)]
    {
        println!("{name:<46} {pss:>10.1} {ms:>16.2}");
    }
    println!("watches that saw one write: {saw_the_write} of 500 (128 per source address admitted, 5 addresses)");
    println!(
        "{}",
        json!({"idle": {"pssMb": idle.0, "getMs": idle.1},
               "idleConnections": {"pssMb": under_connections.0, "getMs": under_connections.1},
               "watches": {"pssMb": under_watches.0, "getMs": under_watches.1, "sawWrite": saw_the_write}})
    );
}
