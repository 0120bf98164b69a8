use super::*;
use serde_json::json;

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(
        &dir.path().join("store.redb"),
        Options { change_log_capacity: 5, ring_capacity: 2, ..Options::default() },
    )
    .expect("store opens")
}

async fn put(store: &Store, key: &'static str, value: i64) -> Value {
    write(store, key, value, false).await
}

/// Stores `{"v": value}` under `key`, durably or in memory only.
async fn write(store: &Store, key: &'static str, value: i64, volatile: bool) -> Value {
    store
        .transact(move |txn| {
            let obj = json!({"metadata": {"name": key}, "v": value});
            if volatile {
                txn.put_volatile(key, obj)
            } else {
                txn.put(key, obj)
            }
        })
        .await
        .expect("store works")
        .expect("put succeeds")
}

#[tokio::test]
async fn put_assigns_increasing_resource_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let a = put(&store, "core/pods/default/a", 1).await;
    let b = put(&store, "core/pods/default/b", 2).await;
    assert_eq!(a["metadata"]["resourceVersion"], "1");
    assert_eq!(b["metadata"]["resourceVersion"], "2");
    assert_eq!(store.resource_version(), 2);
    assert_eq!(store.get("core/pods/default/a").expect("reads").expect("present")["v"], 1);
}

#[tokio::test]
async fn failed_transaction_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    put(&store, "core/pods/default/a", 1).await;
    let outcome: Result<(), &str> = store
        .transact(|txn| {
            txn.put("core/pods/default/a", json!({"metadata": {}, "v": 99})).map_err(|_| "store")?;
            txn.put("core/pods/default/z", json!({"metadata": {}})).map_err(|_| "store")?;
            Err("rejected")
        })
        .await
        .expect("store works");
    assert_eq!(outcome, Err("rejected"));
    assert_eq!(store.get("core/pods/default/a").expect("reads").expect("present")["v"], 1);
    assert!(store.get("core/pods/default/z").expect("reads").is_none());
    assert_eq!(store.resource_version(), 1);
    assert_eq!(put(&store, "core/pods/default/b", 2).await["metadata"]["resourceVersion"], "2");
}

#[tokio::test]
async fn list_pages_with_prefix_filter_and_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    for (key, v) in [("core/pods/a/1", 1), ("core/pods/a/2", 2), ("core/pods/a/3", 3), ("core/pods/b/1", 4)] {
        put(&store, key, v).await;
    }
    let all = store.list("core/pods/", None, 0, &|_| true).expect("lists");
    assert_eq!(all.items.len(), 4);
    assert_eq!(all.resource_version, 4);
    let first = store.list("core/pods/a/", None, 2, &|_| true).expect("lists");
    assert_eq!(first.items.len(), 2);
    let after = first.continue_after.expect("more to come");
    let second = store.list("core/pods/a/", Some(&after), 2, &|_| true).expect("lists");
    assert_eq!(second.items.len(), 1);
    assert!(second.continue_after.is_none());
    let odd = store.list("core/pods/", None, 0, &|o| o["v"].as_i64().is_some_and(|v| v % 2 == 1)).expect("lists");
    assert_eq!(odd.items.len(), 2);
}

#[tokio::test]
async fn events_come_from_ring_then_log_then_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    for i in 0..8 {
        put(&store, "core/configmaps/default/x", i).await;
    }
    // Ring holds 2 events, the log 5 (rv 4..=8).
    assert_eq!(store.events_after(6).expect("from ring").len(), 2);
    let from_log = store.events_after(3).expect("from log");
    assert_eq!(from_log.iter().map(|e| e.resource_version).collect::<Vec<_>>(), vec![4, 5, 6, 7, 8]);
    assert_eq!(from_log[0].kind, EventType::Modified);
    assert!(matches!(store.events_after(1), Err(StoreError::Expired { .. })));
    assert!(store.events_after(8).expect("nothing new").is_empty());
}

#[tokio::test]
async fn delete_emits_event_with_deletion_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    put(&store, "core/pods/default/a", 1).await;
    let deleted = store.transact(|txn| txn.delete("core/pods/default/a")).await.expect("works").expect("deletes");
    assert_eq!(deleted.expect("existed")["metadata"]["resourceVersion"], "2");
    let events = store.events_after(1).expect("events");
    assert_eq!(events[0].kind, EventType::Deleted);
    assert!(store.get("core/pods/default/a").expect("reads").is_none());
}

/// Runs `attempt` until the store file is free: the writer thread of a dropped handle lets go
/// of it when its channel closes, a moment after the handle drops.
pub(crate) async fn when_released<T>(mut attempt: impl FnMut() -> Result<T, StoreError>) -> T {
    loop {
        match attempt() {
            Err(StoreError::Redb(e)) if e.contains("already open") => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await
            }
            other => return other.expect("the store file opens"),
        }
    }
}

/// Opens the store again once the writer thread of the previous handle has ended.
pub(crate) async fn reopen(path: &std::path::Path, options: Options) -> Store {
    when_released(|| Store::open(path, options.clone())).await
}

#[tokio::test]
async fn reopen_keeps_data_and_resource_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(&dir);
        put(&store, "core/pods/default/a", 1).await;
        put(&store, "core/pods/default/b", 2).await;
    }
    let store = reopen(&dir.path().join("store.redb"), Options::default()).await;
    assert_eq!(store.resource_version(), 2);
    assert_eq!(store.events_after(0).expect("log survives restart").len(), 2);
    assert_eq!(put(&store, "core/pods/default/c", 3).await["metadata"]["resourceVersion"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_group_committed_without_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("core/pods/default/p{i}");
            store.transact(move |txn| txn.put(&key, json!({"metadata": {}}))).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("store").expect("put");
    }
    assert_eq!(store.resource_version(), 50);
    assert_eq!(store.list("core/pods/", None, 0, &|_| true).expect("lists").items.len(), 50);
}

#[tokio::test]
async fn sealed_objects_are_encrypted_on_disk_and_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let sealing = Sealing { key: [42; 32], prefixes: vec!["core/secrets/".into()] };
    let options =
        || Options { change_log_capacity: 5, ring_capacity: 1, sealing: Some(sealing.clone()), ..Options::default() };
    let store = Store::open(&path, options()).expect("opens");
    let secret = json!({"metadata": {"name": "db"}, "data": {"password": "c2VjcmV0LWh1bnRlcjI="}});
    store.transact(move |txn| txn.put("core/secrets/car/db", secret)).await.expect("works").expect("put");
    let config = json!({"metadata": {"name": "c"}, "data": {"plain": "visible-value"}});
    store.transact(move |txn| txn.put("core/configmaps/car/c", config)).await.expect("works").expect("put");
    // A third write pushes the first changes out of the one-entry ring: the log is read from disk.
    put(&store, "core/pods/default/p", 1).await;
    drop(store);
    drop(reopen(&path, options()).await); // the writer has finished: the file is complete
    let bytes = std::fs::read(&path).expect("store file");
    assert!(!bytes.windows(12).any(|w| w == b"c2VjcmV0LWh1"), "the secret is on disk in the clear");
    assert!(bytes.windows(13).any(|w| w == b"visible-value"), "other kinds stay plain");

    let store = reopen(&path, options()).await;
    let read = store.get("core/secrets/car/db").expect("reads").expect("present");
    assert_eq!(read["data"]["password"], "c2VjcmV0LWh1bnRlcjI=");
    let listed = store.list("core/secrets/", None, 0, &|_| true).expect("lists");
    assert_eq!(listed.items.len(), 1);
    let raw = store.list_raw("core/secrets/", None, 0).expect("lists raw");
    assert!(raw.items[0].starts_with(b"{"), "raw lists are plain JSON for the reply");
    let events = store.events_after(0).expect("the log");
    assert_eq!(events[0].object["data"]["password"], "c2VjcmV0LWh1bnRlcjI=");
    drop(store);
    // Without the key the secret does not open (but the store does, and other objects read).
    let store = reopen(&path, Options { sealing: None, ..options() }).await;
    assert!(matches!(store.get("core/secrets/car/db"), Err(StoreError::Sealed { .. })));
    assert!(store.get("core/configmaps/car/c").expect("reads").is_some());
}

/// The store's files as a power cut would leave them: copied aside while the store runs.
fn power_cut_copy(from: &std::path::Path, to: &std::path::Path) {
    std::fs::copy(from, to).expect("copy the redb file");
    let (log, copy) = (log_dir(from), log_dir(to));
    if log.exists() {
        std::fs::create_dir_all(&copy).expect("log dir");
        for entry in std::fs::read_dir(&log).expect("log") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy a segment");
        }
    }
}

async fn put_volatile(store: &Store, key: &'static str, value: i64) -> Value {
    write(store, key, value, true).await
}

#[tokio::test]
async fn volatile_writes_are_served_and_watched_but_not_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let store = Store::open(&path, Options::default()).expect("opens");
    put(&store, "coordination.k8s.io/leases/kube-node-lease/hpc-1", 1).await;
    let durable = store.write_stats();
    assert_eq!(durable.log_records, 1);

    for v in 2..=20 {
        let renewed = put_volatile(&store, "coordination.k8s.io/leases/kube-node-lease/hpc-1", v).await;
        assert_eq!(renewed["metadata"]["resourceVersion"], v.to_string());
    }
    let after = store.write_stats();
    assert_eq!(after.log_records, 1, "the run's first record already made its resourceVersions durable");
    assert_eq!(after.volatile_changes, 19);
    let lease = store.get("coordination.k8s.io/leases/kube-node-lease/hpc-1").expect("reads").expect("present");
    assert_eq!(lease["v"], 20);
    let listed = store.list("coordination.k8s.io/leases/", None, 0, &|_| true).expect("lists");
    assert_eq!(listed.items[0]["v"], 20);
    assert_eq!(listed.resource_version, 20);
    let events = store.events_after(1).expect("watch");
    assert_eq!(events.len(), 19);
    assert!(events.iter().all(|e| e.kind == EventType::Modified && e.volatile));

    // A power cut: the lease is back at its durable version, and no resourceVersion handed
    // out before is handed out again.
    let copy = dir.path().join("cut.redb");
    power_cut_copy(&path, &copy);
    let cut = Store::open(&copy, Options::default()).expect("opens after the cut");
    assert_eq!(cut.get("coordination.k8s.io/leases/kube-node-lease/hpc-1").expect("reads").expect("present")["v"], 1);
    assert!(cut.resource_version() > 20);
    assert!(matches!(cut.events_after(10), Err(StoreError::Expired { .. })), "volatile history of the lost run");
    assert_eq!(cut.events_after(0).expect("durable history").len(), 1);
    let next = put(&cut, "core/pods/default/a", 1).await;
    assert!(next["metadata"]["resourceVersion"].as_str().expect("rv").parse::<u64>().expect("number") > 20);

    // A clean close keeps the exact resourceVersion (the durable version of the key).
    drop(store);
    let store = reopen(&path, Options::default()).await;
    assert_eq!(store.resource_version(), 20);
    assert_eq!(store.get("coordination.k8s.io/leases/kube-node-lease/hpc-1").expect("reads").expect("present")["v"], 1);
}

#[tokio::test]
async fn a_run_that_begins_with_volatile_writes_logs_one_record_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    for v in 1..=5 {
        put_volatile(&store, "coordination.k8s.io/leases/kube-node-lease/hpc-1", v).await;
    }
    let stats = store.write_stats();
    assert_eq!((stats.log_records, stats.durable_changes, stats.volatile_changes), (1, 0, 5));
}

#[tokio::test]
async fn deleting_a_volatile_object_writes_nothing_and_a_durable_one_is_logged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    put_volatile(&store, "core/events/default/e1", 1).await;
    put(&store, "core/configmaps/default/c", 1).await;
    put_volatile(&store, "core/configmaps/default/c", 2).await;
    let before = store.write_stats();
    let gone = store.transact(|txn| txn.delete("core/events/default/e1")).await.expect("works").expect("deletes");
    assert!(gone.is_some());
    assert_eq!(store.write_stats().log_records, before.log_records, "a volatile-only object leaves no trace");
    let gone = store.transact(|txn| txn.delete("core/configmaps/default/c")).await.expect("works").expect("deletes");
    assert_eq!(gone.expect("existed")["v"], 2, "the deleted object is what readers saw");
    assert_eq!(store.write_stats().log_records, before.log_records + 1);
    assert!(store.get("core/configmaps/default/c").expect("reads").is_none());
    assert!(store.list("core/", None, 0, &|_| true).expect("lists").items.is_empty());
}

#[tokio::test]
async fn checkpoints_move_changes_into_redb_and_a_power_cut_replays_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let options = Options { checkpoint_bytes: 300, ..Options::default() };
    let store = Store::open(&path, options.clone()).expect("opens");
    for i in 0..60 {
        let key = format!("core/configmaps/default/c{}", i % 7);
        store
            .transact(move |txn| txn.put(&key, json!({"metadata": {"name": "c"}, "data": {"i": i.to_string()}})))
            .await
            .expect("store")
            .expect("put");
    }
    let stats = store.write_stats();
    assert!(stats.checkpoints >= 1, "checkpoints ran: {stats:?}");
    assert_eq!(stats.durable_changes, 60);
    let copy = dir.path().join("cut.redb");
    power_cut_copy(&path, &copy);
    let cut = Store::open(&copy, options).expect("opens after the cut");
    let items = cut.list("core/configmaps/", None, 0, &|_| true).expect("lists").items;
    assert_eq!(items.len(), 7);
    for item in items {
        let i: u64 = item["data"]["i"].as_str().expect("i").parse().expect("number");
        assert!(i >= 53, "every object is at its last acknowledged version");
    }
    assert_eq!(cut.get("core/configmaps/default/c3").expect("reads").expect("present")["data"]["i"], "59");
}

#[tokio::test]
async fn an_object_over_the_size_limit_is_refused_and_the_ring_is_bounded_in_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options { max_object_bytes: 200, ring_bytes: 150, ..Options::default() };
    let store = Store::open(&dir.path().join("store.redb"), options).expect("opens");
    let big = json!({"metadata": {"name": "big"}, "data": "x".repeat(300)});
    let refused = store.transact(move |txn| txn.put("core/configmaps/default/big", big)).await.expect("store");
    assert!(matches!(refused, Err(StoreError::TooLarge { limit: 200, .. })), "{refused:?}");
    assert!(store.get("core/configmaps/default/big").expect("reads").is_none());
    for i in 0..6 {
        put(&store, "core/configmaps/default/small", i).await;
    }
    // About 60 bytes each: the ring keeps two, the log serves the rest.
    assert!(store.hub.events_after(1).is_none(), "the ring no longer reaches back");
    assert_eq!(store.events_after(1).expect("from the log").len(), 5);
}

/// What `probe` finds once it finds something (within 30 s).
async fn eventually<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "not within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A disk whose writes fail with EIO while `failing` is set (reads go on).
#[derive(Debug)]
struct FailingDisk {
    file: redb::backends::FileBackend,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl FailingDisk {
    fn check(&self) -> Result<(), std::io::Error> {
        match self.failing.load(Ordering::SeqCst) {
            true => Err(std::io::Error::from_raw_os_error(libc::EIO)),
            false => Ok(()),
        }
    }
}

impl redb::StorageBackend for FailingDisk {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.check()?;
        self.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.check()?;
        self.file.write(offset, data)
    }
    fn close(&self) -> Result<(), std::io::Error> {
        self.file.close()
    }
}

#[tokio::test]
async fn an_io_error_in_the_database_is_survived_by_reopening_it_once_the_cause_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener: database::Opener = {
        let (path, failing) = (path.clone(), failing.clone());
        Box::new(move || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| redb::DatabaseError::Storage(e.into()))?;
            let file = redb::backends::FileBackend::new(file)?;
            Database::builder().create_with_backend(FailingDisk { file, failing: failing.clone() })
        })
    };
    // Every batch is checkpointed into the database at once.
    let options = Options { checkpoint_bytes: 1, ..Options::default() };
    let store = Store::open_with(&path, options.clone(), opener).expect("store opens");
    put(&store, "core/pods/default/in-database", 1).await;
    store.close().await.expect("checkpointed");

    failing.store(true, Ordering::SeqCst);
    // The write is acknowledged from the log; its checkpoint fails, and so does the reopen.
    put(&store, "core/pods/default/in-log", 2).await;
    let why = eventually(|| store.health().err()).await;
    assert!(why.contains("Input/output"), "{why}");
    assert_eq!(store.get("core/pods/default/in-log").expect("served from memory").expect("present")["v"], 2);

    failing.store(false, Ordering::SeqCst);
    // The writer reopens the database by itself; what it held is readable again.
    let held = eventually(|| store.get("core/pods/default/in-database").ok()).await;
    assert_eq!(held.expect("present")["v"], 1);
    put(&store, "core/pods/default/after", 3).await;
    assert!(store.health().is_ok());
    store.close().await.expect("closes cleanly: the checkpoint goes through");
    drop(store);

    let store = reopen(&path, options).await;
    for (key, v) in [("in-database", 1), ("in-log", 2), ("after", 3)] {
        let found = store.get(&format!("core/pods/default/{key}")).expect("reads").expect("present");
        assert_eq!(found["v"], v, "{key}");
    }
}

/// Writes `count` objects, the first half checkpointed into the database and the rest only
/// logged, as a power cut would leave them.
async fn damaged_store_fixture(path: &std::path::Path, count: i64) {
    // A short log: what is checkpointed leaves it.
    let store = Store::open(path, Options { change_log_capacity: 4, ..Options::default() }).expect("store opens");
    for i in 0..count {
        let key: &'static str = Box::leak(format!("core/configmaps/default/c{i}").into_boxed_str());
        put(&store, key, i).await;
        if i + 1 == count / 2 {
            store.close().await.expect("checkpointed");
        }
    }
    // Closed here, so that no checkpoint of the writer thread's own close moves segments
    // while the test copies them.
    store.close().await.expect("closed");
}

#[tokio::test]
async fn a_damaged_store_is_refused_and_recovery_rebuilds_it_from_what_reads_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pristine = dir.path().join("pristine");
    std::fs::create_dir(&pristine).expect("mkdir");
    damaged_store_fixture(&pristine.join("store.redb"), 40).await;
    let size = std::fs::metadata(pristine.join("store.redb")).expect("stat").len();
    let (mut refused, mut opened, mut from_database) = (0, 0, 0);
    // Bit flips spread over the whole file.
    for trial in 0..24u64 {
        let case = dir.path().join(format!("case{trial}"));
        std::fs::create_dir(&case).expect("mkdir");
        let path = case.join("store.redb");
        power_cut_copy(&pristine.join("store.redb"), &path);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = (trial * 7919 * 4099) % size;
        bytes[at as usize] ^= 1 << (trial % 8);
        std::fs::write(&path, &bytes).expect("write");

        let store = match Store::open(&path, Options::default()) {
            Ok(store) => {
                opened += 1;
                store
            }
            Err(e) => {
                assert!(e.is_damage(), "trial {trial}: byte {at}: refused for another reason: {e}");
                refused += 1;
                let recovery = recover(&path, &Options::default()).expect("recovery runs");
                assert_eq!(recovery.kept_aside.len(), 2, "{recovery}");
                assert!(recovery.objects == 40 || !recovery.lost.is_empty(), "{recovery}");
                from_database += recovery.from_database;
                reopen(&path, Options::default()).await
            }
        };
        // Whatever opens serves only what was written: each object as it was, or not at all.
        let page = store.list("core/configmaps/", None, 0, &|_| true).expect("lists");
        for object in &page.items {
            let name = object["metadata"]["name"].as_str().expect("a name");
            let i: i64 = name.trim_start_matches("core/configmaps/default/c").parse().expect("a number");
            assert_eq!(object["v"], i, "trial {trial}: byte {at}: {name} holds what was written");
        }
    }
    assert!(refused > 0 && opened > 0, "{refused} refused, {opened} opened as they were");
    assert!(from_database > 0, "recovery read objects from a damaged database");
}
