//! A car whose server (and, if asked, agent) runs under `axle launch`: for the self-update
//! tests and bench. Bundles carry an Axle binary stamped with another version (`axle stamp`)
//! and arrive on a watched "USB stick" directory.

use super::{axle_bin, axle_ok, free_port, path, Signing};
use serde_json::Value;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A car whose server runs under `axle launch`, in a process group of its own (so a power cut
/// takes launcher and server at once), on a fixed address; one agent runs a pod.
pub struct Car {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub launcher: Option<Child>,
    pub agent: Option<Child>,
    pub signing: Signing,
    /// The stripped v1 binary the launcher started from.
    pub v1: PathBuf,
    /// The binary the car runs: the base of the next delta.
    pub installed: PathBuf,
    /// The binary each delivered bundle carries, by bundle version, if it updates the server.
    pub delivered: std::collections::BTreeMap<u64, Option<PathBuf>>,
    pub bundles: u64,
    /// A file the next bundle carries besides the binary: (name, content).
    pub extra_target: Option<(String, String)>,
}

impl Car {
    pub fn start() -> Car {
        Car::start_with_agent(false)
    }

    /// With `launched`, the agent runs under `axle launch` too (and can update itself).
    pub fn start_with_agent(launched: bool) -> Car {
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
            .arg("--ca-file")
            .arg(car.data().join("pki/ca.crt"))
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

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn launch(&mut self) {
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
    pub fn power_cut(&mut self) {
        if let Some(mut child) = self.launcher.take() {
            // SAFETY: kill(2) of the process group the test started.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    pub fn http(&self, method: &str, api_path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
        let addr = format!("127.0.0.1:{}", self.port);
        // The server writes its kubeconfig once it answers; requests go over TLS as its admin.
        super::register_kubeconfig(&addr, &self.data().join("admin.kubeconfig"));
        super::http(&addr, method, api_path, body.map(|b| ("application/json", b)))
    }

    pub fn get(&self, api_path: &str) -> Option<Value> {
        let (status, body) = self.http("GET", api_path, None).ok()?;
        (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    pub fn wait_api(&self, timeout: Duration) {
        super::wait_for("the API to answer", timeout, || self.get("/version").map(|_| ()));
    }

    /// The version the running server reports.
    pub fn running_version(&self) -> Option<String> {
        let version = self.get("/version")?;
        let git = version["gitVersion"].as_str()?;
        git.rsplit("+axle-").next().map(String::from)
    }

    pub fn wait_pod_running(&self) {
        super::wait_for("the pod to run", Duration::from_secs(60), || {
            let pod = self.get("/api/v1/namespaces/default/pods/nav")?;
            (pod["status"]["phase"] == "Running").then_some(())
        });
    }

    /// A bundle with an Axle binary stamped `version` (and `faults`), trial settings in its
    /// metadata, delivered on the USB stick; returns the bundle's version and size.
    pub fn deliver(&mut self, version: &str, faults: &[&str], trial_seconds: u64) -> (u64, u64) {
        self.deliver_to(version, faults, trial_seconds, &["server"])
    }

    /// As `deliver`, for these components (`server`, `agent`).
    pub fn deliver_to(
        &mut self,
        version: &str,
        faults: &[&str],
        trial_seconds: u64,
        components: &[&str],
    ) -> (u64, u64) {
        let (bundle, file, size) = self.build(version, faults, trial_seconds, components);
        // Onto the stick atomically, as a finished copy.
        let usb = self.dir.path().join("usb").join(file.file_name().expect("bundle name"));
        std::fs::copy(&file, usb.with_extension("part")).expect("copy");
        std::fs::rename(usb.with_extension("part"), &usb).expect("rename");
        (bundle, size)
    }

    /// Builds the bundle of `deliver_to` without delivering it: (bundle version, file, size).
    pub fn build(
        &mut self,
        version: &str,
        faults: &[&str],
        trial_seconds: u64,
        components: &[&str],
    ) -> (u64, PathBuf, u64) {
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
        (self.bundles, bundle, size)
    }

    /// The campaign of a bundle version once it has finished (the API may be down meanwhile).
    pub fn finished_campaign(&mut self, bundle: u64, timeout: Duration) -> Value {
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
    pub fn diagnose(&self) -> String {
        let tail = |file: &str| {
            let log = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().rev().take(30).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        format!("slots:\n{}\nlauncher log:\n{}\nagent log:\n{}", self.status(), tail("launcher.log"), tail("agent.log"))
    }

    pub fn status(&self) -> String {
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
pub fn watch_downtime(
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let (mut longest, mut down_since): (Duration, Option<Instant>) = (Duration::ZERO, None);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let up = super::http(&format!("127.0.0.1:{port}"), "GET", "/version", None).is_ok_and(|(s, _)| s == 200);
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
