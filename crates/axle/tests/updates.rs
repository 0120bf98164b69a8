//! Offline updates end to end: signed bundles built by `axle bundle create`, delivered by
//! `axle bundle apply` (the API upload) or a watched directory, to a car of a real server and
//! agent running runc, which pulls the campaign's images while it stages. Campaigns commit, deltas are small, a crash-looping version rolls back
//! to the exact previous state, an abort rolls back, every attack is refused with nothing
//! staged, and a server killed at seeded random moments always ends a campaign all-new or
//! all-old.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use support::{
    axle_bin, axle_ok, busybox_layout, free_port, import, path, random_bytes, start_gateway, start_sim, wait_for,
    Agent, Server, Signing,
};

/// A simulated car: a server pinned to the signing root, one agent, the busybox image.
struct Car {
    server: Server,
    _agent: Agent,
}

impl Car {
    fn start(signing: &Signing, extra: &[&str]) -> Car {
        let root = signing.root();
        let mut args = vec!["--trust-root", path(&root)];
        args.extend(extra);
        let server = Server::start_with(&args);
        let agent = Agent::start(&server, "hpc-1", 1);
        let layout = busybox_layout(server.data_dir());
        import(&server, &layout, "busybox:1");
        wait_for("the node to register", Duration::from_secs(20), || {
            server.kubectl_ok(&["get", "nodes", "--no-headers"]).contains(" Ready ").then_some(())
        });
        Car { server, _agent: agent }
    }

    fn apply(&self, bundle: &Path) -> Output {
        Command::new(axle_bin())
            .args(["bundle", "apply", path(bundle), "--kubeconfig", path(&self.server.kubeconfig), "--timeout", "180"])
            .output()
            .expect("axle bundle apply runs")
    }

    fn apply_ok(&self, bundle: &Path) -> String {
        let out = self.apply(bundle);
        assert!(out.status.success(), "apply {}: {}", bundle.display(), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn get(&self, api_path: &str) -> Value {
        let (status, body) = self.server.http("GET", api_path, None);
        assert_eq!(status, 200, "GET {api_path}: {body}");
        serde_json::from_str(&body).expect("json")
    }

    fn campaigns(&self) -> Vec<Value> {
        self.get("/apis/axle.dev/v1alpha1/campaigns")["items"].as_array().cloned().unwrap_or_default()
    }

    fn nav_version(&self) -> String {
        let nav = self.get("/apis/apps/v1/namespaces/default/deployments/nav");
        nav["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"].as_str().unwrap_or("").to_string()
    }

    fn installed_file(&self) -> Vec<u8> {
        std::fs::read(self.server.data_dir().join("files/firmware/brake.bin")).unwrap_or_default()
    }

    fn wait_rolled_out(&self) {
        let out = self.server.kubectl_ok(&["rollout", "status", "deployment/nav", "--timeout=90s"]);
        assert!(out.contains("successfully rolled out"), "{out}");
    }
}

/// A one-replica busybox Deployment `name` on hpc-1 running `command`, with `VERSION` set.
fn deployment(name: &str, version: &str, command: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms:
            - matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [hpc-1]}}]
      containers:
      - name: {name}
        image: busybox:1
        env: [{{name: VERSION, value: "{version}"}}]
        command: ["/bin/sh", "-c", "{command}"]
"#
    )
}

fn nav(version: &str, crash: bool) -> String {
    deployment("nav", version, if crash { "echo broken; exit 3" } else { "exec sleep 1000" })
}

/// Firmware of version `n`: one base image with a few bytes changed per version.
fn firmware(n: u8) -> Vec<u8> {
    let mut bytes = random_bytes(7, 512 * 1024);
    for k in 0..n as usize {
        bytes[1000 + k * 20_000..1000 + k * 20_000 + 8].copy_from_slice(&[n; 8]);
    }
    bytes
}

/// An image target: the OCI layout as a tar at `tar`, named `reference` by its meta file.
fn image_target(tar: &Path, layout: &Path, reference: &str) {
    let out = Command::new("tar").arg("-cf").arg(tar).arg("-C").arg(layout).arg(".").output().expect("tar runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta = format!("{}.meta.json", tar.display());
    std::fs::write(meta, format!(r#"{{"reference": "{reference}"}}"#)).expect("write");
}

/// A bundle source: the nav deployment at `version`, map-store, the brake firmware, and
/// optionally the busybox image.
fn source(dir: &Path, version: u8, crash: bool, image: Option<&Path>) -> PathBuf {
    let source = dir.join(format!("src-{version}{}", if crash { "-crash" } else { "" }));
    std::fs::create_dir_all(source.join("firmware")).expect("mkdir");
    std::fs::write(source.join("10-nav.yaml"), nav(&version.to_string(), crash)).expect("write");
    std::fs::write(source.join("20-map-store.yaml"), deployment("map-store", "1", "exec sleep 1000")).expect("write");
    std::fs::write(source.join("firmware/brake.bin"), firmware(version)).expect("write");
    std::fs::write(
        source.join("firmware/brake.bin.meta.json"),
        format!(r#"{{"hardwareId": "brake", "version": "{version}.0"}}"#),
    )
    .expect("write");
    if let Some(layout) = image {
        std::fs::create_dir_all(source.join("images")).expect("mkdir");
        image_target(&source.join("images/busybox.oci.tar"), layout, "busybox:1");
    }
    source
}

#[test]
fn bundles_commit_and_a_delta_against_the_last_bundle_is_five_times_smaller() {
    let signing = Signing::new(1);
    let car = Car::start(&signing, &[]);
    let work = tempfile::tempdir().expect("tempdir");
    let layout = busybox_layout(work.path());

    let v1 = work.path().join("v1.axb");
    signing.create(&source(work.path(), 1, false, Some(&layout)), &v1, 1, &["a"], &[]);
    let out = car.apply_ok(&v1);
    assert!(out.contains("committed"), "{out}");
    car.wait_rolled_out();
    assert_eq!(car.nav_version(), "1");
    assert_eq!(car.installed_file(), firmware(1));
    let campaign = &car.campaigns()[0];
    assert_eq!(campaign["status"]["phase"], "Committed");
    assert_eq!(campaign["status"]["progress"], "4/4");
    // The node pulled the new image by digest while the campaign staged, before any tag moved.
    let staging = &campaign["status"]["staging"];
    assert_eq!(staging["nodes"]["hpc-1"], "Staged", "{staging}");
    let images: Vec<&str> = staging["images"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    assert!(images.len() == 1 && images[0].starts_with("busybox@sha256:"), "{images:?}");

    // Version 2 against the bundle the car installed: a delta; the same content in full.
    let v2_source = source(work.path(), 2, false, Some(&layout));
    let delta = work.path().join("v2-delta.axb");
    let full = work.path().join("v2-full.axb");
    let delta_len = signing.create(&v2_source, &delta, 2, &["a"], &["--base", path(&v1)]);
    let full_len = signing.create(&v2_source, &full, 2, &["a"], &[]);
    assert!(delta_len * 5 <= full_len, "delta {delta_len} B is not 5× smaller than the full {full_len} B");
    // The same against what the car reports it has (its inventory) and the old source files.
    let inventory = work.path().join("car.json");
    let exported = axle_ok(&["inventory", "-o", "json", "--kubeconfig", path(&car.server.kubeconfig)]);
    std::fs::write(&inventory, exported).expect("write");
    let from_inventory = work.path().join("v2-inventory.axb");
    let v1_source = work.path().join("src-1");
    let inventory_len = signing.create(
        &v2_source,
        &from_inventory,
        2,
        &["a"],
        &["--base", path(&v1_source), "--inventory", path(&inventory)],
    );
    assert!(inventory_len * 5 <= full_len, "delta from the inventory {inventory_len} B vs full {full_len} B");
    let inspected = axle_ok(&["bundle", "inspect", path(&delta)]);
    assert!(inspected.contains("zstd-patch/1"), "{inspected}");
    car.apply_ok(&delta);
    car.wait_rolled_out();
    assert_eq!(car.nav_version(), "2");
    assert_eq!(car.installed_file(), firmware(2));

    // The inventory: bundle version, targets with versions, the workloads per node.
    let inventory = axle_ok(&["inventory", "-o", "json", "--kubeconfig", path(&car.server.kubeconfig)]);
    let inventory: Value = serde_json::from_str(&inventory).expect("json");
    assert_eq!(inventory["bundleVersion"], 2);
    let firmware_target =
        inventory["targets"].as_array().into_iter().flatten().find(|t| t["name"] == "firmware/brake.bin");
    assert_eq!(firmware_target.map(|t| t["version"].clone()), Some(Value::from("2.0")));
    assert!(inventory["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|w| w["node"] == "hpc-1" && w["image"] == "busybox:1"));
    let table = car.server.kubectl_ok(&["get", "campaigns"]);
    assert!(table.contains("PHASE") && table.matches("Committed").count() == 2, "{table}");
}

/// Delivers version `version` of the source with a nav pod that cannot be placed, so its
/// campaign waits for health; returns the campaign's name once it verifies.
fn deliver_unplaceable(car: &Car, signing: &Signing, work: &Path, version: u8) -> String {
    let stuck_source = source(work, version, false, None);
    let stuck = nav(&version.to_string(), false).replace("values: [hpc-1]", "values: [hpc-9]");
    std::fs::write(stuck_source.join("10-nav.yaml"), stuck).expect("write");
    let bundle = work.join(format!("v{version}.axb"));
    signing.create(&stuck_source, &bundle, u64::from(version), &["a"], &["--health-timeout", "600"]);
    let out = Command::new(axle_bin())
        .args(["bundle", "apply", path(&bundle), "--no-wait", "--kubeconfig", path(&car.server.kubeconfig)])
        .output()
        .expect("apply runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the campaign to verify", Duration::from_secs(60), || {
        car.campaigns()
            .into_iter()
            .find(|c| c["spec"]["version"] == version && c["status"]["phase"] == "Verifying")
            .map(|c| c["metadata"]["name"].as_str().unwrap_or("").to_string())
    })
}

/// A car with version 1 of the bundle source committed: (signing, car, work dir, the bundle).
fn car_at_version_1() -> (Signing, Car, tempfile::TempDir, PathBuf) {
    let signing = Signing::new(1);
    let car = Car::start(&signing, &[]);
    let work = tempfile::tempdir().expect("tempdir");
    let v1 = work.path().join("v1.axb");
    signing.create(&source(work.path(), 1, false, None), &v1, 1, &["a"], &[]);
    car.apply_ok(&v1);
    (signing, car, work, v1)
}

#[test]
fn a_crash_looping_version_rolls_back_and_an_abort_rolls_back() {
    let (signing, car, work, v1) = car_at_version_1();
    car.wait_rolled_out();

    let broken = work.path().join("v2-broken.axb");
    signing.create(
        &source(work.path(), 2, true, None),
        &broken,
        2,
        &["a"],
        &["--base", path(&v1), "--health-timeout", "120"],
    );
    let out = car.apply(&broken);
    assert!(
        !out.status.success(),
        "a crash-looping version must not commit: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rolled back (Unhealthy, target 10-nav.yaml)"), "{stderr}");
    // Everything back as it was: the deployment, the firmware file, serving pods.
    assert_eq!(car.nav_version(), "1");
    assert_eq!(car.installed_file(), firmware(1));
    car.wait_rolled_out();
    let events = car.server.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.kind=Campaign"]);
    assert!(events.contains("RolledBack") && events.contains("Unhealthy"), "{events}");

    // An abort while the car waits for health (a pod that cannot be placed never gets ready).
    let name = deliver_unplaceable(&car, &signing, work.path(), 3);
    car.server.kubectl_ok(&["annotate", &format!("campaign/{name}"), "axle.dev/abort=true"]);
    let aborted = wait_for("the campaign to roll back", Duration::from_secs(60), || {
        car.campaigns()
            .into_iter()
            .find(|c| c["metadata"]["name"] == name.as_str() && c["status"]["phase"] == "RolledBack")
    });
    assert_eq!(aborted["status"]["reason"], "Aborted");
    assert_eq!(car.nav_version(), "1");
    car.wait_rolled_out();
}

#[test]
fn a_rollback_that_cannot_finish_ends_failed_and_the_next_bundle_commits() {
    let (signing, car, work, _) = car_at_version_1();

    // Version 2 waits for health forever (its pod cannot be placed) and is aborted...
    let name = deliver_unplaceable(&car, &signing, work.path(), 2);
    // ...but the firmware cannot be put back: its directory has become a file.
    let firmware_dir = car.server.data_dir().join("files/firmware");
    std::fs::rename(&firmware_dir, work.path().join("firmware-moved")).expect("move the directory away");
    std::fs::write(&firmware_dir, b"in the way").expect("a file in its place");
    car.server.kubectl_ok(&["annotate", &format!("campaign/{name}"), "axle.dev/abort=true"]);
    let failed = wait_for("the campaign to give up rolling back", Duration::from_secs(90), || {
        car.campaigns().into_iter().find(|c| c["metadata"]["name"] == name.as_str() && c["status"]["phase"] == "Failed")
    });
    assert_eq!(failed["status"]["reason"], "RollbackFailed");
    assert_eq!(failed["status"]["rollbackAttempts"], 5);
    let message = failed["status"]["message"].as_str().unwrap_or("");
    // Rolling back because of the abort, or because the firmware file went missing first.
    assert!(message.contains("rolling back failed 5 times, last: ") && message.contains("File exists"), "{message}");
    let events = car.server.kubectl_ok(&["get", "events", "--field-selector", "reason=RollbackFailed"]);
    assert!(events.contains("parts of both versions"), "{events}");

    // The pipeline is free: once the obstacle is gone, the next bundle commits.
    std::fs::remove_file(&firmware_dir).expect("remove the obstacle");
    let v3 = work.path().join("v3.axb");
    signing.create(&source(work.path(), 3, false, None), &v3, 3, &["a"], &[]);
    car.apply_ok(&v3);
    assert_eq!(car.nav_version(), "3");
    assert_eq!(car.installed_file(), firmware(3));
}

/// Files under the server's content store and update state: what a refused bundle must not
/// change.
fn staged_state(car: &Car) -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["content/blobs", "updates", "files"] {
        let mut pending = vec![car.server.data_dir().join(dir)];
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current).into_iter().flatten().flatten() {
                if entry.path().is_dir() {
                    pending.push(entry.path());
                } else {
                    found.push(entry.path().display().to_string());
                }
            }
        }
    }
    found.sort();
    found
}

fn flip_byte(bundle: &Path, out: &Path, offset: usize) {
    let mut bytes = std::fs::read(bundle).expect("read");
    bytes[offset] ^= 0x20;
    std::fs::write(out, bytes).expect("write");
}

#[test]
fn attacks_are_rejected_before_anything_is_staged() {
    // Two signatures per role: a and b.
    let signing = Signing::new(2);
    let car = Car::start(&signing, &[]);
    let work = tempfile::tempdir().expect("tempdir");
    let v1_source = source(work.path(), 1, false, None);
    let v1 = work.path().join("v1.axb");
    signing.create(&v1_source, &v1, 1, &["a", "b"], &[]);
    car.apply_ok(&v1);

    let v2_source = source(work.path(), 2, false, None);
    let good = work.path().join("v2.axb");
    signing.create(&v2_source, &good, 2, &["a", "b"], &[]);
    let bytes = std::fs::read(&good).expect("read");
    // A letter of a signed hash: the JSON stays valid, the signature does not.
    let hash_at = bytes.windows(11).position(|w| w == b"\"sha256\": \"").expect("metadata") + 11;
    let metadata_at = (hash_at..hash_at + 64).find(|&i| bytes[i].is_ascii_lowercase()).expect("a hex letter");

    let mut attacks: Vec<(&str, PathBuf, &str)> = Vec::new();
    let flipped_target = work.path().join("flipped-target.axb");
    // The firmware payload (incompressible) is most of the bundle: its middle is in it.
    flip_byte(&good, &flipped_target, bytes.len() / 2);
    attacks.push(("a flipped byte in a target", flipped_target, "TargetMismatch"));
    let flipped_metadata = work.path().join("flipped-metadata.axb");
    flip_byte(&good, &flipped_metadata, metadata_at);
    attacks.push(("a flipped byte in the metadata", flipped_metadata, "SignatureThresholdNotMet"));
    attacks.push(("a replay of the installed bundle", v1.clone(), "NotNewer"));
    let expired = work.path().join("expired.axb");
    signing.create(&v2_source, &expired, 3, &["a", "b"], &["--expires-days=-1"]);
    attacks.push(("an expired bundle", expired, "Expired"));
    let stranger = work.path().join("stranger.axb");
    signing.create(&v2_source, &stranger, 4, &["stranger", "a"], &[]);
    attacks.push(("a signature by an unknown key", stranger, "SignatureThresholdNotMet"));
    let one_signature = work.path().join("one-signature.axb");
    signing.create(&v2_source, &one_signature, 5, &["a"], &[]);
    attacks.push(("a threshold not met", one_signature.clone(), "SignatureThresholdNotMet"));
    // A delta against a version the car never had.
    let other_source = source(work.path(), 9, false, None);
    let other = work.path().join("other.axb");
    signing.create(&other_source, &other, 6, &["a", "b"], &[]);
    let wrong_base = work.path().join("wrong-base.axb");
    signing.create(&v2_source, &wrong_base, 7, &["a", "b"], &["--base", path(&other)]);
    attacks.push(("a delta against the wrong base", wrong_base, "WrongBase"));
    // Validly signed, but a file target would be installed outside the files directory.
    for (attack, install_path, version) in
        [("a file target with an absolute path", "/etc/evil", 8), ("a file target climbing out", "../../evil", 9)]
    {
        let escaping = source(work.path(), version, false, None);
        std::fs::write(escaping.join("firmware/brake.bin.meta.json"), format!(r#"{{"path": "{install_path}"}}"#))
            .expect("write");
        let bundle = work.path().join(format!("escape-{version}.axb"));
        signing.create(&escaping, &bundle, u64::from(version), &["a", "b"], &[]);
        attacks.push((attack, bundle, "InvalidTarget"));
    }

    let before = staged_state(&car);
    let campaigns_before = car.campaigns().len();
    for (attack, bundle, reason) in &attacks {
        let out = car.apply(bundle);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{attack} was accepted");
        assert!(stderr.contains("rejected") && stderr.contains(reason), "{attack}: {stderr}");
        assert_eq!(staged_state(&car), before, "{attack} left something behind");
        assert_eq!(car.campaigns().len(), campaigns_before, "{attack} started a campaign");
    }
    let events = car.server.kubectl_ok(&["get", "events", "--field-selector", "reason=Rejected"]);
    assert!(events.matches("Rejected").count() >= attacks.len(), "{events}");

    // The second key holder signs: the threshold is met and the same bundle installs.
    axle_ok(&["bundle", "sign", path(&one_signature), "--role", "targets", "--key", path(&signing.key("b"))]);
    axle_ok(&["bundle", "sign", path(&one_signature), "--role", "bundle", "--key", path(&signing.key("b"))]);
    axle_ok(&["bundle", "verify", path(&one_signature), "--root", path(&signing.root()), "--installed-version", "1"]);
    car.apply_ok(&one_signature);
    assert_eq!(car.installed_file(), firmware(2));
}

#[test]
fn a_bundle_on_a_mounted_medium_is_taken_once() {
    let signing = Signing::new(1);
    let medium = tempfile::tempdir().expect("tempdir");
    let car = Car::start(&signing, &["--bundle-dir", path(medium.path())]);
    let work = tempfile::tempdir().expect("tempdir");
    signing.create(&source(work.path(), 1, false, None), &medium.path().join("update.axb"), 1, &["a"], &[]);
    let committed = wait_for("the campaign from the medium to commit", Duration::from_secs(120), || {
        car.campaigns().into_iter().find(|c| c["status"]["phase"] == "Committed")
    });
    assert_eq!(committed["spec"]["version"], 1);
    let bundle =
        car.get(&format!("/apis/axle.dev/v1alpha1/bundles/{}", committed["spec"]["bundle"].as_str().unwrap_or("")));
    assert!(bundle["spec"]["source"].as_str().unwrap_or("").starts_with("dir:"), "{bundle}");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(car.campaigns().len(), 1, "a bundle left on the medium is taken once");
    assert_eq!(car.installed_file(), firmware(1));
}

/// A small deterministic generator for the kill points.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[test]
fn a_server_killed_at_random_points_of_campaigns_ends_each_all_new_or_all_old() {
    let signing = Signing::new(1);
    let mut car = Car::start(&signing, &[]);
    let work = tempfile::tempdir().expect("tempdir");
    let v1 = work.path().join("v1.axb");
    signing.create(&source(work.path(), 1, false, None), &v1, 1, &["a"], &[]);
    car.apply_ok(&v1);
    let mut installed: u8 = 1;
    let mut random = Seeded(0x5eed_2026);
    let mut outcomes = Vec::new();
    for round in 0..20u8 {
        let version = round + 2;
        // Every third version crash-loops: it must roll back, kill or no kill.
        let crash = round % 3 == 2;
        let bundle = work.path().join(format!("v{version}.axb"));
        signing.create(
            &source(work.path(), version, crash, None),
            &bundle,
            version.into(),
            &["a"],
            &["--health-timeout", "60"],
        );
        let out = Command::new(axle_bin())
            .args(["bundle", "apply", path(&bundle), "--no-wait", "--kubeconfig", path(&car.server.kubeconfig)])
            .output()
            .expect("apply runs");
        assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(random.below(2500)));
        car.server.crash_and_restart();
        let finished = wait_for("the campaign to finish after the restart", Duration::from_secs(120), || {
            car.campaigns().into_iter().find(|c| {
                c["spec"]["version"] == version
                    && matches!(c["status"]["phase"].as_str(), Some("Committed" | "RolledBack"))
            })
        });
        let phase = finished["status"]["phase"].as_str().unwrap_or("").to_string();
        if phase == "Committed" {
            assert!(!crash, "round {round}: a crash-looping version committed");
            installed = version;
        }
        // All-new or all-old: the deployment and the file agree with the outcome.
        assert_eq!(car.nav_version(), installed.to_string(), "round {round} ({phase})");
        assert_eq!(car.installed_file(), firmware(installed), "round {round} ({phase})");
        outcomes.push(phase);
    }
    car.wait_rolled_out();
    assert!(outcomes.iter().any(|p| p == "Committed") && outcomes.iter().any(|p| p == "RolledBack"), "{outcomes:?}");
}

fn ecu_pod(name: &str, node: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  nodeName: {node}\n  \
         runtimeClassName: ecu\n  tolerations: [{{key: axle.dev/ecu, operator: Exists}}]\n  \
         containers: [{{name: firmware, image: \"{image}\"}}]\n"
    )
}

/// A firmware image whose header names `header_version`, tagged `name:tag`, as an OCI tar in
/// `source` (with its meta file).
fn firmware_target(work: &Path, source: &Path, name: &str, tag: &str, header_version: &str) -> Vec<u8> {
    let mut firmware = format!("AXLE-FW {name} {header_version}\n").into_bytes();
    firmware.extend(random_bytes(u64::from(tag.as_bytes()[0]) * 31 + name.len() as u64, 150_000));
    let layout_dir = work.join(format!("{name}-{tag}"));
    let layout = images::sample::write_firmware_image(&layout_dir, tag, &firmware).expect("firmware image");
    image_target(&source.join(format!("{name}.oci.tar")), &layout, &format!("{name}:{tag}"));
    firmware
}

#[test]
fn a_campaign_flashing_two_ecus_and_a_container_commits_or_rolls_back_all_of_them() {
    let signing = Signing::new(1);
    let car = Car::start(&signing, &[]);
    let dir = car.server.data_dir().to_path_buf();
    let (brake_port, door_port) = (free_port(), free_port());
    let _brake = start_sim(&dir, brake_port, &[]);
    let _door = start_sim(&dir, door_port, &[]);
    let _gateway = start_gateway(&car.server, &[("brake-ecu", brake_port), ("door-ecu", door_port)], &dir);
    wait_for("the ECUs to be nodes", Duration::from_secs(30), || {
        let out = car.server.kubectl_ok(&["get", "nodes", "-l", "axle.dev/ecu=true", "--no-headers"]);
        (out.matches(" Ready ").count() == 2).then_some(())
    });
    let bank = |port: u16| std::fs::read(dir.join(format!("bank-{port}.bin"))).unwrap_or_default();
    let work = tempfile::tempdir().expect("tempdir");

    // Version 1: firmware for both ECUs and the nav container, one campaign.
    let source = source(work.path(), 1, false, None);
    let brake_v1 = firmware_target(work.path(), &source, "brake-fw", "2.0.0", "2.0.0");
    let door_v1 = firmware_target(work.path(), &source, "door-fw", "2.0.0", "2.0.0");
    std::fs::write(source.join("brake.yaml"), ecu_pod("brake-firmware", "brake-ecu", "brake-fw:2.0.0")).expect("write");
    std::fs::write(source.join("door.yaml"), ecu_pod("door-firmware", "door-ecu", "door-fw:2.0.0")).expect("write");
    let v1 = work.path().join("car-v1.axb");
    signing.create(&source, &v1, 1, &["a"], &[]);
    car.apply_ok(&v1);
    assert_eq!(bank(brake_port), brake_v1, "brake flashed by the campaign");
    assert_eq!(bank(door_port), door_v1, "door flashed by the campaign");
    assert_eq!(car.nav_version(), "1");

    // Version 2: both ECUs and nav change; the door firmware reads back a wrong version.
    let source = self::source(work.path(), 2, false, None);
    firmware_target(work.path(), &source, "brake-fw", "3.0.0", "3.0.0");
    firmware_target(work.path(), &source, "door-fw", "3.0.0", "9.9.9");
    std::fs::write(source.join("brake.yaml"), ecu_pod("brake-firmware", "brake-ecu", "brake-fw:3.0.0")).expect("write");
    std::fs::write(source.join("door.yaml"), ecu_pod("door-firmware", "door-ecu", "door-fw:3.0.0")).expect("write");
    let v2 = work.path().join("car-v2.axb");
    signing.create(&source, &v2, 2, &["a"], &["--base", path(&v1), "--health-timeout", "120"]);
    let out = car.apply(&v2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("rolled back (Unhealthy, target door.yaml)"), "{stderr}");
    // All of it returns: both ECUs reflashed with version 1, nav and the file at version 1.
    wait_for("both ECUs to run version 1 again", Duration::from_secs(60), || {
        (bank(brake_port) == brake_v1 && bank(door_port) == door_v1).then_some(())
    });
    assert_eq!(car.nav_version(), "1");
    assert_eq!(car.installed_file(), firmware(1));
    car.wait_rolled_out();
    wait_for("the ECU pods to run version 1", Duration::from_secs(30), || {
        let phases = car.server.kubectl_ok(&[
            "get",
            "pods",
            "brake-firmware",
            "door-firmware",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ]);
        (phases == "Running Running").then_some(())
    });
    wait_for("the ECU nodes to report version 1", Duration::from_secs(30), || {
        let versions = car.server.kubectl_ok(&[
            "get",
            "nodes",
            "-l",
            "axle.dev/ecu=true",
            "-o",
            "jsonpath={.items[*].metadata.annotations.axle\\.dev/sw-version}",
        ]);
        (versions == "2.0.0 2.0.0").then_some(())
    });
}
