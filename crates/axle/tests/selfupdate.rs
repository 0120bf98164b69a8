//! Axle updates itself: a server run by `axle launch` receives a signed bundle whose target is
//! an Axle binary stamped with another version (`axle stamp`), puts it on trial and commits
//! it; versions that exit at start, hang, or fail their self-check fall back to the running
//! version with the reason in the campaign; and a power cut (SIGKILL of launcher and server
//! together) at seeded moments of install, trial and commit always leaves a complete version
//! running, the API answering and the workloads in place.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use support::launched::{watch_downtime, Car};
use support::{axle_ok, path, wait_for};

/// The version the test build reports.
const V1: &str = env!("CARGO_PKG_VERSION");

#[test]
fn a_new_version_is_tried_and_committed() {
    let mut car = Car::start();
    assert_eq!(car.running_version().as_deref(), Some(V1));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let downtime = watch_downtime(car.port, stop.clone());
    let started = Instant::now();
    let (bundle, size) = car.deliver("2.0.0", &[], 30);
    let campaign = car.finished_campaign(bundle, Duration::from_secs(120));
    let to_committed = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let downtime = downtime.join().expect("downtime");
    assert_eq!(campaign["status"]["phase"], "Committed", "{campaign}");
    assert_eq!(car.running_version().as_deref(), Some("2.0.0"));
    let status = car.status();
    assert!(status.contains("slot b: 2.0.0 active"), "{status}");
    assert!(status.contains("last trial: 2.0.0") && status.contains("committed"), "{status}");
    let version = axle_ok(&["version", "--data-dir", path(&car.data())]);
    assert!(version.starts_with(&format!("axle {V1}\n")), "{version}");
    assert!(version.contains("slot b: 2.0.0 active"), "{version}");
    // The workload never stopped: the same pod runs, the node is Ready.
    car.wait_pod_running();
    // After a restart (power cut, then the launcher again) v2 is what runs.
    car.power_cut();
    car.launch();
    car.wait_api(Duration::from_secs(30));
    assert_eq!(car.running_version().as_deref(), Some("2.0.0"));
    // Through the API with `axle bundle apply`, which waits across the hand-over.
    let (bundle, file, _) = car.build("2.1.0", &[], 30, &["server"]);
    let kubeconfig = car.data().join("admin.kubeconfig");
    let applied = axle_ok(&["bundle", "apply", path(&file), "--kubeconfig", path(&kubeconfig), "--timeout", "120"]);
    assert!(applied.contains("committed: version"), "{applied}");
    car.finished_campaign(bundle, Duration::from_secs(10));
    assert_eq!(car.running_version().as_deref(), Some("2.1.0"));
    eprintln!(
        "self-update v{V1} → v2.0.0: bundle {size} bytes (delta), apply → committed {:.1} s, longest API downtime {} ms",
        to_committed.as_secs_f64(),
        downtime.as_millis()
    );
}

#[test]
fn broken_versions_fall_back_with_the_reason() {
    let mut car = Car::start();
    for (fault, reason) in [
        ("exit-at-start", "exited with code 1 during its trial"),
        ("hang-at-start", "did not report healthy within 4 s"),
        ("fail-self-check", "failed its self-check: this build is stamped to fail its self-check"),
    ] {
        let (bundle, _) = car.deliver("2.0.0", &[fault], 4);
        let campaign = car.finished_campaign(bundle, Duration::from_secs(120));
        assert_eq!(campaign["status"]["phase"], "RolledBack", "{fault}: {campaign}");
        let message = campaign["status"]["message"].as_str().unwrap_or("");
        assert!(message.contains(reason), "{fault}: {message}");
        assert_eq!(car.running_version().as_deref(), Some(V1), "{fault}");
        let status = car.status();
        assert!(status.contains(&format!("slot a: {V1} active")), "{fault}: {status}");
        assert!(status.contains("fell back"), "{fault}: {status}");
    }
    car.wait_pod_running();
}

/// Seeded moments after delivery: spread over staging, hand-over, trial and commit.
fn moments(seed: u64, count: usize, span: Duration) -> Vec<Duration> {
    let bytes = support::random_bytes(seed, count * 8);
    bytes
        .chunks(8)
        .map(|c| {
            let n = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
            Duration::from_millis(n % span.as_millis() as u64)
        })
        .collect()
}

/// The version the agent of hpc-1 reports in its Node.
fn agent_version(car: &Car) -> Option<String> {
    let node = car.get("/api/v1/nodes/hpc-1")?;
    node["status"]["nodeInfo"]["kubeletVersion"].as_str()?.rsplit("-axle.").next().map(String::from)
}

#[test]
fn agents_update_themselves_and_fall_back() {
    let mut car = Car::start_with_agent(true);
    assert_eq!(agent_version(&car).as_deref(), Some(V1));
    let (bundle, _) = car.deliver_to("2.0.0", &[], 20, &["agent"]);
    let campaign = car.finished_campaign(bundle, Duration::from_secs(120));
    assert_eq!(campaign["status"]["phase"], "Committed", "{campaign}");
    assert_eq!(campaign["status"]["agents"]["hpc-1"], "Committed 2.0.0");
    wait_for("the agent to report 2.0.0", Duration::from_secs(30), || {
        (agent_version(&car).as_deref() == Some("2.0.0")).then_some(())
    });
    assert_eq!(car.running_version().as_deref(), Some(V1), "the server was not part of it");
    car.wait_pod_running();

    let (bundle, _) = car.deliver_to("3.0.0", &["exit-at-start"], 5, &["agent"]);
    let campaign = car.finished_campaign(bundle, Duration::from_secs(120));
    assert_eq!(campaign["status"]["phase"], "RolledBack", "{campaign}");
    let message = campaign["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("the agent of hpc-1 version 3.0.0 fell back") && message.contains("exited with code 1"),
        "{message}"
    );
    assert_eq!(agent_version(&car).as_deref(), Some("2.0.0"));
    car.wait_pod_running();

    // The agent commits 4.0.0, then another target of the campaign fails (a pod that exits
    // after a few seconds): the campaign rolls back and the agent returns to 2.0.0 by itself.
    let failing_pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: doomed, namespace: default}\nspec:\n  \
        nodeName: hpc-1\n  runtimeClassName: process\n  restartPolicy: Never\n  \
        containers: [{name: app, image: none, command: [/bin/sh, -c, 'sleep 5; exit 3']}]\n";
    car.extra_target = Some(("doomed.yaml".into(), failing_pod.into()));
    let (bundle, _) = car.deliver_to("4.0.0", &[], 20, &["agent"]);
    let campaign = car.finished_campaign(bundle, Duration::from_secs(120));
    assert_eq!(campaign["status"]["phase"], "RolledBack", "{campaign}");
    let path = format!("/apis/axle.dev/v1alpha1/campaigns/{}", api_name(&campaign));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = car.get(&path).map(|c| c["status"]["agents"]["hpc-1"].clone()).unwrap_or_default();
        if report == "RolledBack to 2.0.0" && agent_version(&car).as_deref() == Some("2.0.0") {
            break;
        }
        assert!(Instant::now() < deadline, "the agent did not return to 2.0.0: {report}\n{}", car.diagnose());
        std::thread::sleep(Duration::from_millis(200));
    }
    car.wait_pod_running();
}

fn api_name(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn selfupdate_status_json(car: &Car) -> Value {
    let text = axle_ok(&["selfupdate", "status", "--data-dir", path(&car.data()), "-o", "json"]);
    serde_json::from_str(&text).expect("json")
}

#[test]
fn a_power_cut_at_any_moment_leaves_a_complete_version_running() {
    let mut car = Car::start();
    let mut expected = V1.to_string();
    for (i, moment) in moments(7, 20, Duration::from_millis(4000)).into_iter().enumerate() {
        let version = format!("3.0.{i}");
        let (bundle, _) = car.deliver(&version, &[], 20);
        std::thread::sleep(moment);
        // Where the cut falls (read just before it, for the log).
        let phase = car.get("/apis/axle.dev/v1alpha1/campaigns").and_then(|list| {
            let found = list["items"].as_array()?.iter().find(|c| c["spec"]["version"] == bundle)?.clone();
            Some(found["status"]["phase"].as_str().unwrap_or("new").to_string())
        });
        let trial = selfupdate_status_json(&car)["trial"].is_object();
        eprintln!("cut {i} {moment:?} after delivering {version}: campaign {phase:?}, trial pending: {trial}");
        car.power_cut();
        car.launch();
        let campaign = car.finished_campaign(bundle, Duration::from_secs(120));
        let running = car.running_version();
        if campaign["status"]["phase"] == "Committed" {
            expected = version.clone();
        }
        assert_eq!(running.as_deref(), Some(expected.as_str()), "cut {i} at {moment:?}: {campaign}");
        let record = selfupdate_status_json(&car);
        assert_eq!(record["active_version"], expected.as_str(), "cut {i}");
        assert!(record["trial"].is_null(), "cut {i}: a trial is left over: {record}");
        car.wait_pod_running();
    }
    assert!(Path::new(&car.data()).join("selfupdate").is_dir());
}
