//! Axle updates itself: a server run by `axle launch` receives a signed bundle whose target is
//! an Axle binary stamped with another version (`axle stamp`), puts it on trial and commits
//! it; versions that exit at start, hang, or fail their self-check fall back to the running
//! version with the reason in the campaign; and a power cut (SIGKILL of launcher and server
//! together) at seeded moments of install, trial and commit always leaves a complete version
//! running, the API answering and the workloads in place.

mod support;

use serde_json::Value;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{axle_bin, axle_ok, free_port, path, wait_for, Signing};

/// The version the test build reports.
const V1: &str = env!("CARGO_PKG_VERSION");

/// A car whose server runs under `axle launch`, in a process group of its own (so a power cut
/// takes launcher and server at once), on a fixed address; one agent runs a pod.
struct Car {
    dir: tempfile::TempDir,
    port: u16,
    launcher: Option<Child>,
    agent: Option<Child>,
    signing: Signing,
    /// The stripped v1 binary the launcher started from.
    v1: PathBuf,
    /// The binary the car runs: the base of the next delta.
    installed: PathBuf,
    /// The binary each delivered bundle carries, by bundle version, if it updates the server.
    delivered: std::collections::BTreeMap<u64, Option<PathBuf>>,
    bundles: u64,
    /// A file the next bundle carries besides the binary: (name, content).
    extra_target: Option<(String, String)>,
}

impl Car {
    fn start() -> Car {
        Car::start_with_agent(false)
    }

    /// With `launched`, the agent runs under `axle launch` too (and can update itself).
    fn start_with_agent(launched: bool) -> Car {
        let dir = tempfile::tempdir().expect("tempdir");
        // A debug build carries ~150 MB of debug info; the car gets it stripped, as a release.
        let v1 = dir.path().join("axle-v1");
        let out = Command::new("strip").arg("-o").arg(&v1).arg(axle_bin()).output().expect("strip (binutils) runs");
        assert!(out.status.success(), "strip: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::create_dir_all(dir.path().join("usb")).expect("usb dir");
        let mut car = Car {
            dir,
            port: free_port(),
            launcher: None,
            agent: None,
            signing: Signing::new(1),
            installed: v1.clone(),
            v1,
            delivered: Default::default(),
            bundles: 0,
            extra_target: None,
        };
        car.launch();
        car.wait_api(Duration::from_secs(30));
        let agent_dir = car.dir.path().join("agent");
        let mut agent = if launched {
            let mut c = Command::new(&car.v1);
            c.args(["launch", "--data-dir", path(&agent_dir), "--"]);
            c
        } else {
            Command::new(axle_bin())
        };
        let agent = agent
            .args(["agent", "--server", &car.url(), "--node-name", "hpc-1", "--heartbeat-seconds", "1"])
            .arg("--token-file")
            .arg(car.data().join("node-token"))
            .arg("--data-dir")
            .arg(&agent_dir)
            .env("AXLE_LOG", "info")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(car.dir.path().join("agent.log")).expect("log"))
            .spawn()
            .expect("agent starts");
        car.agent = Some(agent);
        let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nav", "namespace": "default"},
            "spec": {"nodeName": "hpc-1", "runtimeClassName": "process", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": "none", "command": ["/bin/sleep", "3600"]}]}}"#;
        let (status, body) = car.http("POST", "/api/v1/namespaces/default/pods", Some(pod)).expect("create pod");
        assert_eq!(status, 201, "{body}");
        car.wait_pod_running();
        car
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("launcher.log"))
            .expect("log");
        let data = self.data();
        let child = Command::new(&self.v1)
            .args(["launch", "--data-dir", path(&data), "--", "server", "--data-dir", path(&data)])
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--trust-root", path(&self.signing.root()), "--bundle-dir", path(&self.dir.path().join("usb"))])
            .env("AXLE_LOG", "info")
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("axle launch starts");
        self.launcher = Some(child);
    }

    /// SIGKILL of the launcher's whole process group: launcher and server die at once.
    fn power_cut(&mut self) {
        if let Some(mut child) = self.launcher.take() {
            // SAFETY: kill(2) of the process group the test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    fn http(&self, method: &str, api_path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
        support::http(&format!("127.0.0.1:{}", self.port), method, api_path, body.map(|b| ("application/json", b)))
    }

    fn get(&self, api_path: &str) -> Option<Value> {
        let (status, body) = self.http("GET", api_path, None).ok()?;
        (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    fn wait_api(&self, timeout: Duration) {
        wait_for("the API to answer", timeout, || self.get("/version").map(|_| ()));
    }

    /// The version the running server reports.
    fn running_version(&self) -> Option<String> {
        let version = self.get("/version")?;
        let git = version["gitVersion"].as_str()?;
        git.rsplit("+axle-").next().map(String::from)
    }

    fn wait_pod_running(&self) {
        wait_for("the pod to run", Duration::from_secs(60), || {
            let pod = self.get("/api/v1/namespaces/default/pods/nav")?;
            (pod["status"]["phase"] == "Running").then_some(())
        });
    }

    /// A bundle with an Axle binary stamped `version` (and `faults`), trial settings in its
    /// metadata, delivered on the USB stick; returns the bundle's version and size.
    fn deliver(&mut self, version: &str, faults: &[&str], trial_seconds: u64) -> (u64, u64) {
        self.deliver_to(version, faults, trial_seconds, &["server"])
    }

    /// As `deliver`, for these components (`server`, `agent`).
    fn deliver_to(&mut self, version: &str, faults: &[&str], trial_seconds: u64, components: &[&str]) -> (u64, u64) {
        self.bundles += 1;
        let source = self.dir.path().join(format!("source-{}", self.bundles));
        std::fs::create_dir_all(&source).expect("source");
        let mut args = vec!["stamp", path(&self.v1), "--set-version", version];
        for fault in faults {
            args.extend(["--fault", fault]);
        }
        let binary = source.join("axle");
        args.extend(["-o", path(&binary)]);
        axle_ok(&args);
        if let Some((name, content)) = self.extra_target.take() {
            std::fs::write(source.join(name), content).expect("extra target");
        }
        let meta = serde_json::json!({"trialSeconds": trial_seconds, "attempts": 2, "components": components});
        std::fs::write(source.join("axle.meta.json"), meta.to_string()).expect("meta");
        // Deltas against what the car runs.
        let base = self.dir.path().join(format!("base-{}", self.bundles));
        std::fs::create_dir_all(&base).expect("base");
        std::fs::hard_link(&self.installed, base.join("axle")).expect("base binary");
        self.delivered.insert(self.bundles, components.contains(&"server").then(|| binary.clone()));
        let name = format!("selfupdate-{}", self.bundles);
        let bundle = self.dir.path().join(format!("{name}.axb"));
        let size = self.signing.create(&source, &bundle, self.bundles, &["a"], &["--fast", "--base", path(&base)]);
        // Onto the stick atomically, as a finished copy.
        let usb = self.dir.path().join("usb").join(format!("{name}.axb"));
        std::fs::copy(&bundle, usb.with_extension("part")).expect("copy");
        std::fs::rename(usb.with_extension("part"), &usb).expect("rename");
        (self.bundles, size)
    }

    /// The campaign of a bundle version once it has finished (the API may be down meanwhile).
    fn finished_campaign(&mut self, bundle: u64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            let list = self.get("/apis/axle.dev/v1alpha1/campaigns").unwrap_or_default();
            let found = list["items"].as_array().into_iter().flatten().find(|c| c["spec"]["version"] == bundle);
            if let Some(campaign) = found {
                match campaign["status"]["phase"].as_str() {
                    Some("Committed") => {
                        if let Some(Some(binary)) = self.delivered.get(&bundle) {
                            self.installed = binary.clone();
                        }
                        return campaign.clone();
                    }
                    Some("RolledBack") => return campaign.clone(),
                    _ => {}
                }
                last = campaign["status"].clone();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the campaign of bundle {bundle} did not finish: {last}\n{}", self.diagnose());
    }

    /// The slots and the ends of the launcher's and the agent's logs, for a failure message.
    fn diagnose(&self) -> String {
        let tail = |file: &str| {
            let log = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().rev().take(30).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        format!("slots:\n{}\nlauncher log:\n{}\nagent log:\n{}", self.status(), tail("launcher.log"), tail("agent.log"))
    }

    fn status(&self) -> String {
        axle_ok(&["selfupdate", "status", "--data-dir", path(&self.data())])
    }
}

impl Drop for Car {
    fn drop(&mut self) {
        if let Some(child) = &self.launcher {
            // SAFETY: kill(2) of the process group the test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGTERM) };
        }
        if let Some(agent) = &self.agent {
            // SAFETY: kill(2) of the process group the test started.
            unsafe { libc::kill(-(agent.id() as i32), libc::SIGTERM) };
        }
        std::thread::sleep(Duration::from_millis(300));
        self.power_cut();
        if let Some(mut agent) = self.agent.take() {
            // SAFETY: as above.
            unsafe { libc::kill(-(agent.id() as i32), libc::SIGKILL) };
            let _ = agent.wait();
        }
    }
}

/// Polls the API every 20 ms until `stop`; the longest stretch it did not answer.
fn watch_downtime(port: u16, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let (mut longest, mut down_since): (Duration, Option<Instant>) = (Duration::ZERO, None);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let up = support::http(&format!("127.0.0.1:{port}"), "GET", "/version", None).is_ok_and(|(s, _)| s == 200);
            match (up, down_since) {
                (false, None) => down_since = Some(Instant::now()),
                (true, Some(since)) => {
                    longest = longest.max(since.elapsed());
                    down_since = None;
                }
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        longest
    })
}

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
    let version = axle_ok(&["version"]);
    assert!(version.starts_with(&format!("axle {V1}")), "{version}");
    // The workload never stopped: the same pod runs, the node is Ready.
    car.wait_pod_running();
    // After a restart (power cut, then the launcher again) v2 is what runs.
    car.power_cut();
    car.launch();
    car.wait_api(Duration::from_secs(30));
    assert_eq!(car.running_version().as_deref(), Some("2.0.0"));
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
