//! `axle up`: a whole simulated car on this machine, as separate processes, on embedded
//! defaults — the first thing a new user runs: the API server, one agent per simulated
//! computer (`hpc-1`, `hpc-2`), two simulated ECUs behind the ECU gateway, a sample image and a
//! sample firmware in the car's registry (made here: no internet needed) and the sample
//! manifests of `examples/`. Ctrl-C stops everything.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The sample manifests, embedded so `axle up` works from any directory.
const EXAMPLES: &[(&str, &str)] = &[
    ("10-namespace.yaml", include_str!("../../../examples/10-namespace.yaml")),
    ("20-config.yaml", include_str!("../../../examples/20-config.yaml")),
    ("30-nav.yaml", include_str!("../../../examples/30-nav.yaml")),
    ("35-head-unit.yaml", include_str!("../../../examples/35-head-unit.yaml")),
    ("40-telemetry.yaml", include_str!("../../../examples/40-telemetry.yaml")),
];

/// The image the examples run, imported at start.
const SAMPLE_IMAGE: &str = "axle/sample:1.0";

/// The simulated ECUs: name and the software version their bank starts with.
const ECUS: &[(&str, &str)] = &[("brake-ecu", "1.0.0"), ("door-ecu", "3.1.0")];

/// What a user applies to flash the brake ECU (its firmware is imported at start).
const BRAKE_FIRMWARE_POD: &str = "# Flashes brake-ecu with brake-fw:2.0.0 over DoIP/UDS (runtimeClassName: ecu).
apiVersion: v1
kind: Pod
metadata:
  name: brake-firmware
  namespace: car
spec:
  nodeName: brake-ecu
  runtimeClassName: ecu
  tolerations: [{key: axle.dev/ecu, operator: Exists}]
  containers:
  - name: firmware
    image: brake-fw:2.0.0
";

/// A free TCP port of the loopback (for a simulated ECU).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The simulated car's Linux computers, one agent each.
const NODES: &[&str] = &["hpc-1", "hpc-2"];

/// Child processes, stopped (SIGTERM, then SIGKILL) when dropped.
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &self.0 {
            // SAFETY: plain libc call on a pid we own.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        // Agents stop their pods first, each within its grace period (the examples use 2 s).
        let deadline = Instant::now() + Duration::from_secs(15);
        for (name, child) in &mut self.0 {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        tracing::warn!(process = %name, "did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

pub async fn run(data_dir: PathBuf, listen: std::net::SocketAddr) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let me = std::env::current_exe().context("cannot find the axle executable")?;
    let server_dir = data_dir.join("server");
    let kubeconfig = server_dir.join("admin.kubeconfig");
    let _ = std::fs::remove_file(&kubeconfig);
    let mut processes = Processes(Vec::new());
    let (update_key, root) = development_trust(&data_dir)?;
    let medium = data_dir.join("usb");
    std::fs::create_dir_all(&medium).with_context(|| format!("cannot create {}", medium.display()))?;
    let server_args = [
        "server",
        "--listen",
        &listen.to_string(),
        "--data-dir",
        &path_str(&server_dir),
        "--trust-root",
        &path_str(&root),
        "--bundle-dir",
        &path_str(&medium),
    ];
    let server = spawn(&me, &data_dir, "server", &server_args)?;
    processes.0.push(("server".into(), server));
    wait_for_file(&kubeconfig, &mut processes).await?;

    let config = client::Config::from_kubeconfig(&kubeconfig)?;
    let server_url = config.server.clone();
    let token_file = path_str(&server_dir.join("node-token"));
    let ca_file = path_str(&server_dir.join("pki/ca.crt"));
    for node in NODES {
        let agent_dir = path_str(&data_dir.join(node));
        let args = [
            "agent",
            "--server",
            &server_url,
            "--ca-file",
            &ca_file,
            "--token-file",
            &token_file,
            "--node-name",
            node,
            "--data-dir",
            &agent_dir,
        ];
        let agent = spawn(&me, &data_dir, node, &args)?;
        processes.0.push((node.to_string(), agent));
    }
    // The ECUs: simulated, each a DoIP entity on a port of its own, behind one gateway.
    let mut ecu_config = String::from("ecus:\n");
    for (name, version) in ECUS {
        let port = free_port()?;
        let bank = path_str(&data_dir.join(format!("{name}.flash")));
        let listen = format!("127.0.0.1:{port}");
        let args =
            ["ecu-sim", "--listen", &listen, "--logical-address", "0x00E0", "--flash", &bank, "--sw-version", version];
        let sim = spawn(&me, &data_dir, name, &args)?;
        processes.0.push((name.to_string(), sim));
        ecu_config.push_str(&format!(
            "- {{name: {name}, address: \"{listen}\", logicalAddress: 0x00E0, hardwareId: SIM-{name}}}\n"
        ));
    }
    let ecus_file = data_dir.join("ecus.yaml");
    std::fs::write(&ecus_file, ecu_config).with_context(|| format!("cannot write {}", ecus_file.display()))?;
    let gateway_dir = path_str(&data_dir.join("ecu-gateway"));
    let args = [
        "ecu-gateway",
        "--server",
        &server_url,
        "--ca-file",
        &ca_file,
        "--token-file",
        &token_file,
        "--config",
        &path_str(&ecus_file),
        "--data-dir",
        &gateway_dir,
    ];
    let gateway = spawn(&me, &data_dir, "ecu-gateway", &args)?;
    processes.0.push(("ecu-gateway".into(), gateway));

    let client = client::Client::new(config);
    let layout = images::sample::write_host_image(&data_dir, "1.0", api::meta::go_arch())
        .context("cannot build the sample image")?;
    crate::image::import(&client, &layout, Some(SAMPLE_IMAGE)).await?;
    // A firmware for the brake ECU, and the pod that flashes it, ready to apply.
    let mut firmware = b"AXLE-FW brake-ecu 2.0.0\n".to_vec();
    firmware.extend((0..256 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let firmware_layout = images::sample::write_firmware_image(&data_dir, "2.0.0", &firmware)
        .context("cannot build the sample firmware")?;
    crate::image::import(&client, &firmware_layout, Some("brake-fw:2.0.0")).await?;
    let firmware_pod = data_dir.join("brake-firmware.yaml");
    std::fs::write(&firmware_pod, BRAKE_FIRMWARE_POD)
        .with_context(|| format!("cannot write {}", firmware_pod.display()))?;
    for (file, text) in EXAMPLES {
        for manifest in client::parse_manifests(text).map_err(|e| anyhow::anyhow!("examples/{file}: {e}"))? {
            client.apply(&manifest, "axle-up").await.with_context(|| format!("cannot apply examples/{file}"))?;
        }
    }
    let update = write_update_source(&data_dir)?;
    println!("Axle is up: the car's API server runs at {server_url}.");
    println!();
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get nodes -o wide");
    println!("  kubectl get pods,deployments -n car -o wide");
    println!("  kubectl logs -n car head-unit -f");
    println!("  axle image ls");
    println!("  kubectl get nodes -l axle.dev/ecu=true -L axle.dev/hardware-id   # the simulated ECUs");
    println!("  kubectl apply -f {}   # flash brake-ecu over DoIP/UDS", firmware_pod.display());
    println!("  kubectl get pod -n car brake-firmware -w");
    println!("  kubectl explain deployment.spec");
    println!("  axle bundle create {} -o /tmp/nav-2.axb --version 2 --key {}", update.display(), update_key.display());
    println!(
        "  axle bundle apply /tmp/nav-2.axb --kubeconfig {}   # or copy it to {}",
        kubeconfig.display(),
        medium.display()
    );
    println!("  kubectl get campaigns; axle inventory");
    println!("  axle wear --window-seconds 30   # what the car writes to flash (an idle car: nothing)");
    println!();
    println!(
        "Logs: {}/*.log. Container logs are kept in memory (axle agent --log-storage memory, the default):",
        data_dir.display()
    );
    println!("a chatty workload wears no flash; they are gone after a reboot. Press Ctrl-C to stop.");
    wait_for_exit(&mut processes).await
}

/// A development signing key and the trust root the simulated car pins (a real car pins the
/// root of its maker's offline keys). Made once, kept in `DATA_DIR/update-keys`.
fn development_trust(data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    use bundle::trust::{KeyPair, Root, ROLES};
    let dir = data_dir.join("update-keys");
    let (key_path, root_path) = (dir.join("dev.key"), dir.join("root.json"));
    if key_path.is_file() && root_path.is_file() {
        return Ok((key_path, root_path));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _ = std::fs::remove_file(&key_path);
    let _ = std::fs::remove_file(dir.join("dev.pub"));
    let key = KeyPair::generate()?;
    key.save(&dir.join("dev"))?;
    let roles: Vec<(&str, Vec<bundle::trust::PublicKey>, usize)> =
        ROLES.iter().map(|r| (*r, vec![key.public()], 1)).collect();
    let root = bundle::trust::sign(Root::metadata(1, "2099-12-31T00:00:00Z", &roles), &[&key]);
    std::fs::write(&root_path, serde_json::to_vec_pretty(&root)?)
        .with_context(|| format!("cannot write {}", root_path.display()))?;
    Ok((key_path, root_path))
}

/// The source of a sample update: nav version 2 and a map file, for `axle bundle create`.
fn write_update_source(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let source = data_dir.join("update-nav-2");
    let maps = source.join("maps");
    std::fs::create_dir_all(&maps).with_context(|| format!("cannot create {}", maps.display()))?;
    let nav = EXAMPLES.iter().find(|(file, _)| *file == "30-nav.yaml").map(|(_, text)| *text).unwrap_or("");
    std::fs::write(source.join("30-nav.yaml"), nav.replace("nav up,", "nav 2 up,"))?;
    let map: Vec<u8> = (0..512 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(maps.join("europe.map"), map)?;
    std::fs::write(maps.join("europe.map.meta.json"), r#"{"version": "2026.11"}"#)?;
    Ok(source)
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

fn spawn(me: &Path, data_dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Child> {
    let log = std::fs::File::create(data_dir.join(format!("{name}.log")))?;
    Command::new(me)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {name}"))
}

async fn wait_for_file(path: &Path, processes: &mut Processes) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        for (name, child) in &mut processes.0 {
            if let Ok(Some(status)) = child.try_wait() {
                anyhow::bail!("{name} exited with {status} during start; see its log");
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "{} did not appear in time", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs until Ctrl-C/SIGTERM or until a component dies.
async fn wait_for_exit(processes: &mut Processes) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                for (name, child) in &mut processes.0 {
                    if let Ok(Some(status)) = child.try_wait() {
                        anyhow::bail!("{name} exited unexpectedly with {status}; see its log");
                    }
                }
            }
        }
    }
    println!("Stopping…");
    Ok(())
}
