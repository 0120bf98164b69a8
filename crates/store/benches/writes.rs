//! `cargo bench -p store --bench writes`: storage bytes per durable object change, for the
//! store as it is (write-ahead log + checkpoints) and for the mechanisms it was chosen over,
//! on the same workload. Bytes are the kernel's count for this process (`/proc/self/io`
//! `write_bytes`), so page granularity is included. Prints a table and a JSON line.
//!
//! Workloads: 400 changes one after the other (each acknowledged before the next: a car's
//! controllers and agents), and 2,000 changes from 16 concurrent writers (a burst: group
//! commit), over 40 objects of about 2 KiB (a pod with its status), round-robin. And what one
//! open of a closed store writes (nothing happens at an idle store; an open is not idle).

use redb::{ReadableTable as _, TableDefinition};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Instant;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
const KEYS: usize = 40;

fn written() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("write_bytes:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// A pod with its status, about 2 KiB of JSON.
fn pod(i: usize, round: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "namespace": "car", "uid": format!("5c1e0d2a-{i:04}-4e7b-9a51-0242ac120002"),
                     "labels": {"app": "nav", "tier": "hmi"}, "annotations": {"axle.dev/depends-on": "map-store=Ready"}},
        "spec": {"nodeName": "hpc-1", "containers": [{"name": "nav", "image": "registry.car/nav:2.4.1",
                 "command": ["/usr/bin/nav", "--map", "/data/maps"], "resources": {"limits": {"memory": "256Mi", "cpu": "500m"}}}]},
        "status": {"phase": "Running", "podIP": "10.0.0.7", "startTime": "2026-12-07T10:00:00Z", "round": round,
                   "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": format!("2026-12-07T10:{:02}:00Z", round % 60)},
                                  {"type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-12-07T10:00:00Z"},
                                  {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-07T10:00:00Z"},
                                  {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-07T10:00:00Z"}],
                   "containerStatuses": [{"name": "nav", "ready": true, "restartCount": round, "image": "registry.car/nav:2.4.1",
                                          "imageID": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                                          "containerID": format!("axle://{i:064}"),
                                          "state": {"running": {"startedAt": "2026-12-07T10:00:00Z"}}}]}})
}

fn scratch(name: &str) -> PathBuf {
    // On the build's disk: a tmpfs /tmp would count nothing.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-store").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

struct Figure {
    mechanism: &'static str,
    workload: &'static str,
    bytes_per_change: f64,
    changes_per_second: f64,
    durable_when_acknowledged: bool,
}

/// The store before the log: one redb commit (fsync) per batch, object and change-log entry.
fn redb_per_commit(changes: usize, durable_every: usize) -> (u64, f64) {
    let dir = scratch(&format!("redb-{durable_every}"));
    let db = redb::Database::builder().set_cache_size(256 << 10).create(dir.join("store.redb")).expect("redb");
    let before = written();
    let started = Instant::now();
    for n in 0..changes {
        let mut txn = db.begin_write().expect("write");
        if durable_every > 1 && (n + 1) % durable_every != 0 {
            txn.set_durability(redb::Durability::None).expect("durability");
        }
        {
            let key = format!("core/pods/car/pod-{}", n % KEYS);
            let bytes = serde_json::to_vec(&pod(n % KEYS, n / KEYS)).expect("json");
            txn.open_table(OBJECTS).expect("objects").insert(key.as_str(), bytes.as_slice()).expect("insert");
            let change =
                serde_json::to_vec(&json!({"type": "MODIFIED", "key": key, "object": pod(n % KEYS, n / KEYS)}))
                    .expect("json");
            let mut log = txn.open_table(CHANGES).expect("changes");
            log.insert(n as u64 + 1, change.as_slice()).expect("insert");
            let _ = log.first().expect("the oldest change");
        }
        txn.commit().expect("commit");
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(db);
    (written() - before, changes as f64 / seconds)
}

/// The store as it is, `writers` at a time; includes its close (the final checkpoint).
fn store(changes: usize, writers: usize) -> (u64, f64) {
    let dir = scratch(&format!("store-{writers}"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    runtime.block_on(async {
        let store = store::Store::open(&dir.join("store.redb"), store::Options::default()).expect("store");
        let before = written();
        let started = Instant::now();
        let per_writer = changes / writers;
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..per_writer {
                        let n = w * per_writer + i;
                        let key = format!("core/pods/car/pod-{}", n % KEYS);
                        let obj = pod(n % KEYS, n / KEYS);
                        store.transact(move |txn| txn.put(&key, obj)).await.expect("store").expect("put");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer");
        }
        store.close().await.expect("close");
        let seconds = started.elapsed().as_secs_f64();
        (written() - before, changes as f64 / seconds)
    })
}

/// What one open of a closed store with 40 pods costs: bytes written (redb checks its
/// checksums at every open and records that it did) and milliseconds, the median of 5 opens.
fn open_cost() -> (u64, f64) {
    let dir = scratch("open");
    let path = dir.join("store.redb");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
    runtime.block_on(async {
        let store = store::Store::open(&path, store::Options::default()).expect("store");
        for i in 0..KEYS {
            let key = format!("core/pods/car/pod-{i}");
            store.transact(move |txn| txn.put(&key, pod(i, 0))).await.expect("store").expect("put");
        }
        store.close().await.expect("close");
    });
    let mut samples = Vec::new();
    for _ in 0..5 {
        // The writer thread of the previous handle lets go of the file a moment after it drops.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (before, started) = (written(), Instant::now());
        let store = store::Store::open(&path, store::Options::default()).expect("store reopens");
        samples.push((written() - before, started.elapsed().as_secs_f64() * 1000.0));
        drop(store);
    }
    samples.sort_by(|a, b| a.1.total_cmp(&b.1));
    samples[samples.len() / 2]
}

fn main() {
    let mut figures = Vec::new();
    let mut add = |mechanism, workload, changes: usize, (bytes, rate): (u64, f64), durable| {
        figures.push(Figure {
            mechanism,
            workload,
            bytes_per_change: bytes as f64 / changes as f64,
            changes_per_second: rate,
            durable_when_acknowledged: durable,
        })
    };
    add("redb commit per change (before)", "one by one", 400, redb_per_commit(400, 1), true);
    add("redb, durable commit every 64th", "one by one", 400, redb_per_commit(400, 64), false);
    add("log + checkpoints (now)", "one by one", 400, store(400, 1), true);
    add("log + checkpoints (now)", "16 writers", 2000, store(2000, 16), true);

    println!("{:<34} {:<11} {:>16} {:>12} {:>10}", "MECHANISM", "WORKLOAD", "BYTES/CHANGE", "CHANGES/S", "DURABLE");
    for f in &figures {
        println!(
            "{:<34} {:<11} {:>16.0} {:>12.0} {:>10}",
            f.mechanism,
            f.workload,
            f.bytes_per_change,
            f.changes_per_second,
            if f.durable_when_acknowledged { "yes" } else { "NO" }
        );
    }
    let json: Vec<Value> = figures
        .iter()
        .map(|f| {
            json!({"mechanism": f.mechanism, "workload": f.workload, "bytesPerChange": f.bytes_per_change.round(),
                   "changesPerSecond": f.changes_per_second.round(), "durableWhenAcknowledged": f.durable_when_acknowledged})
        })
        .collect();
    println!("{}", Value::Array(json));
    let (bytes, ms) = open_cost();
    println!("opening a closed store of {KEYS} pods: {bytes} bytes written, {ms:.1} ms (median of 5)");
    println!("{}", json!({"openBytes": bytes, "openMs": ms}));
}
