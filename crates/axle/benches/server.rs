//! `cargo bench -p axle --bench server`: the API server's figures against the budgets of
//! `shared/design/SYSTEM.md` §9. Prints a table for people and one JSON line for machines.
//!
//! Figures: start → first successful `GET /version`; idle PSS after 5 s; binary size; list of
//! 1,000 pods as JSON and as a Table; watch fan-out (50 watchers, 1,000 writes, events lost);
//! bytes written to disk per pod update; the cost of TLS (handshake + GET on a new connection
//! against a GET on a kept one, idle PSS with and without TLS). Everything runs as shipped,
//! over TLS with the admin's client certificate.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{axle_bin, free_port, http, median, pss_kib, register_kubeconfig, write_bytes, Server};

/// Start → first 200 on `path`: over a fresh data directory each run (a car's very first boot,
/// which creates the store) or over one reused directory (every later boot). Median in ms.
fn startup_ms(runs: usize, path: &str, fresh: bool) -> f64 {
    let mut samples = Vec::new();
    let reused = tempfile::tempdir().expect("tempdir");
    for _ in 0..runs {
        let fresh_dir = tempfile::tempdir().expect("tempdir");
        let dir = if fresh { fresh_dir.path() } else { reused.path() };
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let mut child = Command::new(axle_bin())
            .args(["server", "--listen", &addr, "--data-dir"])
            .arg(dir)
            .env("AXLE_LOG", "warn")
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
        let kubeconfig = dir.join("admin.kubeconfig");
        loop {
            // The first answer over TLS needs the CA, which a first boot creates.
            register_kubeconfig(&addr, &kubeconfig);
            if let Ok((200, _)) = http(&addr, "GET", path, None) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "server never answered");
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        let _ = child.kill();
        let _ = child.wait();
    }
    median(samples)
}

fn pod_json(name: &str, image: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"spec":{{"nodeName":"hpc-1","containers":[{{"name":"c","image":"{image}","command":["sleep","3600"],"ports":[{{"containerPort":8080}}]}}]}}}}"#
    )
}

/// Times GETs of `path` with `accept` over one keep-alive connection; median in ms.
fn time_gets(addr: &str, path: &str, accept: &str, runs: usize) -> f64 {
    let mut reader = BufReader::new(support::connect(addr, None).expect("connect"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n");
    let mut samples = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        // One write per request: otherwise delayed ACKs add 40 ms to every request.
        reader.get_mut().write_all(request.as_bytes()).expect("send");
        reader.get_mut().flush().expect("send");
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0u8; length];
        std::io::Read::read_exact(&mut reader, &mut body).expect("body");
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    median(samples)
}

/// 50 watchers, 1,000 writes: how many events each watcher missed, and the time until the
/// last watcher saw the last write.
fn watch_fan_out(server: &Server, watchers: usize, writes: usize) -> (usize, f64) {
    let (_, list) = server.http("GET", "/api/v1/namespaces/default/configmaps", None);
    let list: serde_json::Value = serde_json::from_str(&list).expect("list");
    let rv = list["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    let counts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for _ in 0..watchers {
        let (addr, rv, counts) = (server.addr.clone(), rv.clone(), counts.clone());
        handles.push(std::thread::spawn(move || {
            let mut stream = support::connect(&addr, None).expect("connect");
            write!(stream, "GET /api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send");
            stream.flush().expect("send");
            let reader = BufReader::new(stream);
            let mut seen = 0;
            for line in reader.lines().map_while(Result::ok) {
                let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if event["type"] == "ADDED" {
                    seen += 1;
                    if seen == writes {
                        break;
                    }
                }
            }
            counts.lock().expect("lock").push(seen);
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..4 {
        let addr = server.addr.clone();
        writers.push(std::thread::spawn(move || {
            for i in (w..writes).step_by(4) {
                let body = format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"fan-{i}"}},"data":{{"i":"{i}"}}}}"#
                );
                let (status, _) =
                    http(&addr, "POST", "/api/v1/namespaces/default/configmaps", Some(("application/json", &body)))
                        .expect("write");
                assert_eq!(status, 201);
            }
        }));
    }
    for w in writers {
        w.join().expect("writer");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for h in handles {
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if h.is_finished() {
            h.join().expect("watcher");
        }
    }
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let counts = counts.lock().expect("lock");
    let lost = (watchers - counts.len()) * writes + counts.iter().map(|c| writes - c).sum::<usize>();
    (lost, elapsed)
}

fn main() {
    let binary_mb = std::fs::metadata(axle_bin()).map(|m| m.len() as f64 / 1e6).unwrap_or(f64::NAN);
    let start_ms = startup_ms(20, "/version", false);
    let first_boot_ms = startup_ms(10, "/version", true);
    let start_list_ms = startup_ms(20, "/api/v1/namespaces/default/pods", false);

    let plain_pss_mb = {
        let plain = Server::start_with(&["--insecure-http"]);
        std::thread::sleep(Duration::from_secs(5));
        pss_kib(plain.child.id()) as f64 / 1024.0
    };
    let server = Server::start();
    let pid = server.child.id();
    std::thread::sleep(Duration::from_secs(5));
    let idle_pss_mb = pss_kib(pid) as f64 / 1024.0;
    // TLS: a new connection per GET (full handshake, client certificate verified) against
    // GETs on one kept connection.
    let mut full_handshakes = (*server.admin_tls()).clone();
    full_handshakes.resumption = rustls::client::Resumption::disabled();
    let full_handshakes = Arc::new(full_handshakes);
    let handshake_get_ms = median(
        (0..50)
            .map(|_| {
                let started = Instant::now();
                let (status, _) =
                    support::http_over_tls(&server.addr, "127.0.0.1", full_handshakes.clone(), "GET", "/version", None)
                        .expect("GET");
                assert_eq!(status, 200);
                started.elapsed().as_secs_f64() * 1000.0
            })
            .collect(),
    );
    let kept_get_ms = time_gets(&server.addr, "/version", "application/json", 50);
    let idle_writes_before = write_bytes(pid);
    std::thread::sleep(Duration::from_secs(2));
    let idle_write_bytes = write_bytes(pid) - idle_writes_before;

    for i in 0..1000 {
        let (status, body) = server.http(
            "POST",
            "/api/v1/namespaces/default/pods",
            Some(("application/json", &pod_json(&format!("p{i}"), "busybox:1.36"))),
        );
        assert_eq!(status, 201, "{body}");
    }
    let list_json_ms = time_gets(&server.addr, "/api/v1/namespaces/default/pods", "application/json", 20);
    let table_accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let list_table_ms = time_gets(&server.addr, "/api/v1/namespaces/default/pods", table_accept, 20);

    let updates = 200;
    let before = write_bytes(pid);
    for i in 0..updates {
        let patch = format!(r#"{{"metadata":{{"labels":{{"rev":"r{i}"}}}}}}"#);
        let (status, _) =
            server.http("PATCH", "/api/v1/namespaces/default/pods/p1", Some(("application/merge-patch+json", &patch)));
        assert_eq!(status, 200);
    }
    let bytes_per_update = (write_bytes(pid) - before) as f64 / updates as f64;
    let loaded_pss_mb = pss_kib(pid) as f64 / 1024.0;

    let (lost, fan_out_ms) = watch_fan_out(&server, 50, 1000);

    println!("| figure | value | bar |");
    println!("|---|--:|---|");
    println!("| start → first GET /version, existing store (median of 20) | {start_ms:.1} ms | ≤ 15 ms |");
    println!("| start → first list of pods, existing store (median of 20) | {start_list_ms:.1} ms | — |");
    println!("| first boot → first GET /version, store created (median of 10) | {first_boot_ms:.1} ms | — |");
    println!("| idle PSS after 5 s (server alone, TLS on) | {idle_pss_mb:.2} MB | ≤ 5 MB |");
    println!("| idle PSS after 5 s (server alone, --insecure-http) | {plain_pss_mb:.2} MB | — |");
    println!("| full TLS handshake (client certificate) + GET /version, new connection each (median of 50) | {handshake_get_ms:.2} ms | — |");
    println!("| GET /version on a kept TLS connection (median of 50) | {kept_get_ms:.2} ms | — |");
    println!("| disk writes while idle (2 s) | {idle_write_bytes} B | 0 |");
    println!("| binary size (release, stripped) | {binary_mb:.2} MB | — |");
    println!("| list 1,000 pods, JSON (median of 20) | {list_json_ms:.1} ms | ≤ 10 ms |");
    println!("| list 1,000 pods, Table (median of 20) | {list_table_ms:.1} ms | ≤ 10 ms |");
    println!("| PSS with 1,000 pods stored | {loaded_pss_mb:.2} MB | — |");
    println!("| watch fan-out: 50 watchers × 1,000 writes, events lost | {lost} | 0 |");
    println!("| watch fan-out: all 50 watchers saw all 1,000 writes | {fan_out_ms:.0} ms | — |");
    println!("| bytes written per pod update | {bytes_per_update:.0} B | — |");
    println!(
        "{}",
        serde_json::json!({"idle_pss_insecure_http_mb": plain_pss_mb, "tls_handshake_get_ms": handshake_get_ms, "kept_connection_get_ms": kept_get_ms, "start_ms": start_ms, "start_to_list_ms": start_list_ms, "first_boot_ms": first_boot_ms, "idle_pss_mb": idle_pss_mb, "idle_write_bytes": idle_write_bytes,
            "binary_mb": binary_mb, "list_1000_pods_json_ms": list_json_ms, "list_1000_pods_table_ms": list_table_ms,
            "loaded_pss_mb": loaded_pss_mb, "watch_events_lost": lost, "watch_fan_out_ms": fan_out_ms,
            "bytes_written_per_pod_update": bytes_per_update})
    );
}
