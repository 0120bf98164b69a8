//! ECUs over DoIP/UDS with third-party peers: an independent tester (PyPI `doipclient` +
//! `udsoncan`) drives `axle ecu-sim`; Axle's flasher programs an independent ECU (PyPI
//! `python-uds-server` behind a thin DoIP shim); `tshark` dissects a flash session as DoIP and
//! UDS with nothing malformed; and the ECU gateway makes ECUs nodes that firmware pods flash.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{axle_bin, free_port, python, spawn_with_lines, start_gateway, start_sim, wait_for, Killed};

#[test]
fn an_independent_tester_reads_and_reprograms_the_simulated_ecu() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _sim = start_sim(dir.path(), port, &[]);
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/test_ecu_sim.py");
    let out = Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&suite)
        .env("AXLE_ECU", format!("127.0.0.1:{port}"))
        .env("AXLE_ECU_ADDRESS", "0x00E0")
        .output()
        .expect("pytest runs (.venv with doipclient and udsoncan: bash .ci/run)");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let bank = std::fs::read(dir.path().join(format!("bank-{port}.bin"))).expect("bank");
    assert!(bank.starts_with(b"AXLE-FW udsoncan-test 9.9.9\n"), "the tester's image is in the bank");
}

#[test]
fn our_flasher_programs_an_independent_uds_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/uds_server_shim.py");
    let (child, lines) = spawn_with_lines(Command::new(python()).arg(&shim).arg(port.to_string()));
    let _shim = Killed(child);
    wait_for("python-uds-server to listen", Duration::from_secs(20), || lines.try_recv().ok().filter(|l| l == "ready"));
    let mut image = b"AXLE-FW independent 7.0.0\n".to_vec();
    image.extend((0..40_000u32).map(|i| (i % 241) as u8));
    std::fs::write(dir.path().join("fw.bin"), &image).expect("image");
    let out = Command::new(axle_bin())
        .arg("ecu-flash")
        .arg(dir.path().join("fw.bin"))
        .args(["--target", &format!("127.0.0.1:{port}"), "--ecu-address", "0x00E0", "--expect-version", "7.0.0"])
        .output()
        .expect("axle ecu-flash runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1.0.0 → 7.0.0"), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn tshark_dissects_a_flash_session_as_clean_doip_and_uds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let _sim = start_sim(dir.path(), port, &[]);
    let capture = dir.path().join("flash.pcapng");
    let tshark = Command::new("tshark")
        .args(["-i", "lo", "-B", "64", "-f", &format!("tcp port {port}"), "-w"])
        .arg(&capture)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark runs (Debian package tshark)");
    let tshark = Killed(tshark);
    // The file gets its header once the capture runs.
    wait_for("tshark to capture", Duration::from_secs(20), || std::fs::metadata(&capture).ok().filter(|m| m.len() > 0));
    std::thread::sleep(Duration::from_millis(300));
    let mut image = b"AXLE-FW brake-ecu 2.0.0\n".to_vec();
    image.extend((0..600_000u32).map(|i| (i % 253) as u8));
    std::fs::write(dir.path().join("fw.bin"), &image).expect("image");
    let out = Command::new(axle_bin())
        .arg("ecu-flash")
        .arg(dir.path().join("fw.bin"))
        .args(["--target", &format!("127.0.0.1:{port}"), "--ecu-address", "0x00E0", "--expect-version", "2.0.0"])
        .output()
        .expect("axle ecu-flash runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child: SIGINT makes tshark finish the file.
    unsafe { libc::kill(tshark.0.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(700));
    let decode = format!("tcp.port=={port},doip");
    let problems = Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args([
            "-d",
            &decode,
            "-Y",
            // TCP's own analysis (a duplicate ACK, a SACK on a loaded loopback), and segments that
            // carry no data, are not ours to judge.
            "_ws.malformed || (_ws.expert.severity >= warning && !tcp.analysis.flags && tcp.len > 0) \
             || (doip && !(doip.version == 2 || doip.version == 3))",
        ])
        .output()
        .expect("tshark reads");
    assert!(
        String::from_utf8_lossy(&problems.stdout).trim().is_empty(),
        "tshark flags: {}",
        String::from_utf8_lossy(&problems.stdout)
    );
    let fields = Command::new("tshark")
        .arg("-r")
        .arg(&capture)
        .args(["-d", &decode, "-T", "fields", "-e", "doip.type", "-e", "uds.sid"])
        .output()
        .expect("tshark reads");
    let text = String::from_utf8_lossy(&fields.stdout);
    for (doip_type, uds) in [
        ("0x0005", ""),
        ("0x0006", ""),
        ("0x8002", ""),
        ("0x8001", "0x34"),
        ("0x8001", "0x36"),
        ("0x8001", "0x37"),
        ("0x8001", "0x11"),
    ] {
        assert!(text.lines().any(|l| l.starts_with(doip_type) && l.ends_with(uds)), "no {doip_type} {uds} in:\n{text}");
    }
    let transfers = text.lines().filter(|l| l == &"0x8001\t0x36").count();
    let blocks = image.len().div_ceil(4090);
    assert_eq!(transfers, blocks * 2, "every TransferData request and response dissected");
}

#[test]
fn firmware_pods_flash_ecus_that_are_nodes() {
    let server = support::Server::start_with(&["--node-grace-seconds", "3"]);
    let dir = server.data_dir().to_path_buf();
    let (brake_port, locked_port) = (free_port(), free_port());
    let mut brake = start_sim(&dir, brake_port, &[]);
    let _locked = start_sim(&dir, locked_port, &["--nrc", "27:35"]);
    let _gateway = start_gateway(&server, &[("brake-ecu", brake_port), ("locked-ecu", locked_port)], &dir);
    let node = wait_for("the ECUs to be nodes", Duration::from_secs(30), || {
        let out = server.kubectl_ok(&["get", "nodes", "-l", "axle.dev/ecu=true", "--no-headers"]);
        (out.matches(" Ready ").count() == 2).then_some(out)
    });
    assert!(node.contains("brake-ecu"), "{node}");
    let version = server.kubectl_ok(&[
        "get",
        "node",
        "brake-ecu",
        "-o",
        "jsonpath={.metadata.annotations.axle\\.dev/sw-version}",
    ]);
    assert_eq!(version, "1.0.0");

    let mut firmware = b"AXLE-FW brake 2.0.0\n".to_vec();
    firmware.extend((0..200_000u32).map(|i| (i % 249) as u8));
    let layout = images::sample::write_firmware_image(&dir, "2.0.0", &firmware).expect("firmware image");
    support::import(&server, &layout, "brake-fw:2.0.0");
    let pod = |name: &str, node: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  runtimeClassName: ecu\n  \
             tolerations: [{{key: axle.dev/ecu, operator: Exists}}]\n  containers: [{{name: firmware, image: \"brake-fw:2.0.0\"}}]\n"
        )
    };
    server.apply_stdin(&pod("brake-firmware", "brake-ecu"), &[]);
    wait_for("the firmware pod to run", Duration::from_secs(60), || {
        (server.kubectl_ok(&["get", "pod", "brake-firmware", "-o", "jsonpath={.status.phase}"]) == "Running")
            .then_some(())
    });
    assert_eq!(std::fs::read(dir.join(format!("bank-{brake_port}.bin"))).expect("bank"), firmware);
    wait_for("the inventory to show the new version", Duration::from_secs(20), || {
        let v = server.kubectl_ok(&[
            "get",
            "node",
            "brake-ecu",
            "-o",
            "jsonpath={.metadata.annotations.axle\\.dev/sw-version}",
        ]);
        (v == "2.0.0").then_some(())
    });
    let events = server.kubectl_ok(&["get", "events", "--field-selector", "involvedObject.name=brake-firmware"]);
    assert!(events.contains("Flashed"), "{events}");

    // An ECU that refuses the key: Failed, with the NRC as the reason.
    server.apply_stdin(&pod("locked-firmware", "locked-ecu"), &[]);
    let reason = wait_for("the locked ECU's pod to fail", Duration::from_secs(60), || {
        let out =
            server.kubectl_ok(&["get", "pod", "locked-firmware", "-o", "jsonpath={.status.phase} {.status.reason}"]);
        out.starts_with("Failed").then_some(out)
    });
    assert!(reason.contains("InvalidKey"), "{reason}");
    // The server's metrics tell each ECU's firmware state.
    let (_, metrics) = server.http("GET", "/metrics", None);
    assert!(metrics.contains("axle_ecu_firmware_pods{node=\"brake-ecu\",state=\"Flashed\"} 1"), "{metrics}");
    assert!(metrics.contains("axle_ecu_firmware_pods{node=\"locked-ecu\",state=\"InvalidKey\"} 1"), "{metrics}");

    // A powered-off ECU is a NotReady node.
    let _ = brake.0.kill();
    let _ = brake.0.wait();
    wait_for("brake-ecu to go NotReady", Duration::from_secs(30), || {
        let out = server.kubectl_ok(&["get", "node", "brake-ecu", "--no-headers"]);
        out.contains("NotReady").then_some(())
    });
}
