//! `axle up`, the main job: the simulated car starts, serves the sample workloads, takes the
//! sample update from its simulated USB stick, and stops cleanly on Ctrl-C.

mod support;

use std::process::Command;
use std::time::Duration;
use support::{axle_bin, spawn_with_lines, wait_for};

#[test]
fn up_starts_the_car_with_sample_workloads_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut up, rx) = spawn_with_lines(
        Command::new(axle_bin()).args(["up", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path()),
    );
    let banner = wait_for("axle up to report the car is up", Duration::from_secs(30), || {
        rx.try_recv().ok().filter(|l| l.starts_with("Axle is up"))
    });
    assert!(banner.contains("https://127.0.0.1:"), "{banner}");
    let kubeconfig = dir.path().join("server/admin.kubeconfig");
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "deployments", "-n", "car", "-o", "name"])
        .output()
        .expect("kubectl runs");
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(names.contains("deployment.apps/nav") && names.contains("deployment.apps/map-store"), "{names}");
    let nodes = wait_for("both simulated computers to register", Duration::from_secs(30), || {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "nodes", "--no-headers"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let ready = |l: &&str| l.starts_with("hpc-") && l.split_whitespace().nth(1) == Some("Ready");
        (text.lines().filter(ready).count() == 2).then_some(text)
    });
    assert!(nodes.contains("hpc-1") && nodes.contains("hpc-2"), "{nodes}");
    wait_for("the sample process pod to run on hpc-2", Duration::from_secs(30), || {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "pod", "telemetry", "-n", "car", "-o", "jsonpath={.status.phase} {.spec.nodeName}"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout) == "Running hpc-2").then_some(())
    });
    let log = wait_for("the telemetry log to show the configured region", Duration::from_secs(20), || {
        // Container logs are kept in memory (the agents' default --log-storage).
        let pods = std::fs::read_dir(agent::memory_dir(&dir.path().join("hpc-2")).join("pods")).ok()?;
        let pod_dir = pods.filter_map(Result::ok).next()?.path();
        let text = std::fs::read_to_string(pod_dir.join("logger/0.log")).ok()?;
        text.contains("region=eu").then_some(text)
    });
    assert!(log.contains(" stdout F "), "{log}");
    // The containerized sample (runc, image imported by `axle up`) reads its ConfigMap volume.
    wait_for("the head-unit container to log through kubectl", Duration::from_secs(60), || {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["logs", "head-unit", "-n", "car"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).contains("units=metric").then_some(())
    });
    // The deployments run, nav only once map-store is Ready (its dependency).
    wait_for("nav to roll out after map-store", Duration::from_secs(60), || {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["rollout", "status", "deployment/nav", "-n", "car", "--timeout=1s"])
            .output()
            .ok()?;
        out.status.success().then_some(())
    });
    // The simulated ECUs are nodes, and the prepared firmware pod flashes one.
    wait_for("the ECU nodes", Duration::from_secs(30), || {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "nodes", "-l", "axle.dev/ecu=true", "--no-headers"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).matches(" Ready ").count() == 2).then_some(())
    });
    let applied = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("apply")
        .arg("-f")
        .arg(dir.path().join("brake-firmware.yaml"))
        .output()
        .expect("kubectl apply");
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    wait_for("brake-ecu to be flashed", Duration::from_secs(60), || {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "pod", "brake-firmware", "-n", "car", "-o", "jsonpath={.status.phase}"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout) == "Running").then_some(())
    });
    // The sample update, as the banner shows it: built, signed with the development key,
    // delivered on the simulated USB stick, committed.
    let bundle = dir.path().join("nav-2.axb");
    let created = Command::new(axle_bin())
        .args(["bundle", "create"])
        .arg(dir.path().join("update-nav-2"))
        .arg("-o")
        .arg(&bundle)
        .args(["--version", "2", "--key"])
        .arg(dir.path().join("update-keys/dev.key"))
        .output()
        .expect("axle bundle create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    std::fs::copy(&bundle, dir.path().join("usb/nav-2.axb")).expect("copy to the medium");
    wait_for("the update campaign to commit", Duration::from_secs(120), || {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "campaigns", "-o", "jsonpath={.items[*].status.phase}"])
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout) == "Committed").then_some(())
    });
    // Ctrl-C: everything stops, the exit is clean.
    let _ = Command::new("kill").args(["-INT", &up.id().to_string()]).status();
    let status = up.wait().expect("axle up exits");
    assert!(status.success(), "{status:?}");
    let server_gone = std::fs::read_to_string(&kubeconfig)
        .ok()
        .and_then(|k| {
            k.lines()
                .find(|l| l.contains("server:"))
                .map(|l| l.trim().trim_start_matches("server: https://").to_string())
        })
        .map(|addr| std::net::TcpStream::connect(addr).is_err())
        .unwrap_or(false);
    assert!(server_gone, "the server process stopped with axle up");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let root = dir.path().to_string_lossy().to_string();
    assert!(!mounts.contains(&root), "container mounts outlived axle up:\n{mounts}");
    for node in ["hpc-1", "hpc-2"] {
        let _ = std::fs::remove_dir_all(agent::memory_dir(&dir.path().join(node)));
    }
}
