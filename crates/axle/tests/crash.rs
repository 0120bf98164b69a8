//! kill -9 in the middle of a burst of writes: every acknowledged write survives, nothing that
//! was never written appears, and a watch resumes from a resourceVersion seen before the crash.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{http, Server};

#[test]
fn kill9_during_write_burst_loses_no_acknowledged_write() {
    let server = Server::start();
    let (_, before) = server.http("GET", "/api/v1/namespaces/default/configmaps", None);
    let rv_before: serde_json::Value = serde_json::from_str(&before).expect("list JSON");
    let rv_before = rv_before["metadata"]["resourceVersion"].as_str().expect("list rv").to_string();

    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let attempted = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..8 {
        let (addr, acknowledged, attempted, stop) =
            (server.addr.clone(), acknowledged.clone(), attempted.clone(), stop.clone());
        writers.push(std::thread::spawn(move || {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("w{writer}-{i}");
                attempted.lock().expect("lock").insert(name.clone());
                let body = format!(
                    r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}},"data":{{"i":"{i}"}}}}"#
                );
                match http(&addr, "POST", "/api/v1/namespaces/default/configmaps", Some(("application/json", &body))) {
                    Ok((201, _)) => {
                        acknowledged.lock().expect("lock").insert(name);
                    }
                    // The server died under us (no reply, or a cut one): this write's fate is
                    // unknown, which is allowed.
                    Ok((0, _)) | Err(_) => break,
                    Ok((status, body)) => panic!("write {name} failed with {status}: {body}"),
                }
            }
        }));
    }
    // Let the burst run, then pull the plug.
    std::thread::sleep(Duration::from_millis(1500));
    let dir = server.crash();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let attempted = attempted.lock().expect("lock").clone();
    assert!(acknowledged.len() > 50, "the burst made progress before the kill ({} writes)", acknowledged.len());

    let server = Server::start_in(dir);
    let (status, list) = server.http("GET", "/api/v1/namespaces/default/configmaps", None);
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&list).expect("list JSON");
    let stored: BTreeSet<String> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged writes lost after kill -9: {lost:?}");
    let phantom: Vec<&String> = stored.difference(&attempted).collect();
    assert!(phantom.is_empty(), "objects nobody wrote appeared: {phantom:?}");
    for item in list["items"].as_array().expect("items") {
        let name = item["metadata"]["name"].as_str().unwrap_or("");
        let index = name.rsplit('-').next().unwrap_or("");
        assert_eq!(item["data"]["i"].as_str(), Some(index), "object {name} is intact");
    }

    // A watch from before the crash resumes: it replays every stored change in order.
    let path = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv_before}&timeoutSeconds=2");
    let (status, events) = server.http("GET", &path, None);
    assert_eq!(status, 200);
    let added: BTreeSet<String> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "ADDED")
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(added, stored, "the resumed watch sees exactly the stored objects being added");
}
