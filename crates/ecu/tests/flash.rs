//! The flasher against the simulated ECU over loopback: a whole flash with the version read
//! back, a dropped connection mid-transfer, an invalid key, a rejected image.

use ecu::flasher::{self, Progress, Target, Timing};
use ecu::keys::DemoKey;
use ecu::sim::{self, SimConfig};
use ecu::EcuError;
use std::collections::HashMap;
use std::time::Duration;

async fn start_sim(dir: &std::path::Path, tweak: impl FnOnce(&mut SimConfig)) -> (Target, SimConfig) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let udp = tokio::net::UdpSocket::bind(address).await.expect("udp");
    let mut config = SimConfig {
        listen: address,
        logical_address: 0x00E0,
        flash: dir.join("bank.bin"),
        sw_version: "1.0.0".into(),
        vin: "WAXLE000000000001".into(),
        serial: "SIM-0001".into(),
        max_block_length: 4092,
        erase_delay: Duration::from_millis(100),
        drop_after_blocks: None,
        forced_nrc: HashMap::new(),
        corrupt_checksum: false,
        ab_banks: false,
    };
    tweak(&mut config);
    tokio::spawn(sim::serve(config.clone(), listener, udp));
    let target = Target { address, tester_address: 0x0E80, ecu_address: 0x00E0 };
    // Answers once it has opened its bank.
    flasher::identify(&target, &Timing::default()).await.expect("the sim answers");
    (target, config)
}

fn image(version: &str, size: usize) -> Vec<u8> {
    let mut image = format!("AXLE-FW nav-ecu {version}\n").into_bytes();
    image.extend((0..size).map(|i| (i * 7 % 251) as u8));
    image
}

#[tokio::test]
async fn a_flash_programs_the_bank_and_reads_the_new_version_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (target, config) = start_sim(dir.path(), |_| {}).await;
    let timing = Timing::default();
    assert_eq!(flasher::identify(&target, &timing).await.expect("identify").0, "1.0.0");
    let firmware = image("2.0.0", 1_100_000);
    let mut blocks = 0;
    let report = flasher::flash(&target, &timing, &DemoKey, &firmware, Some("2.0.0"), &mut |p| {
        if let Progress::Bytes { .. } = p {
            blocks += 1;
        }
    })
    .await
    .expect("flashed");
    assert_eq!(report.version_before, "1.0.0");
    assert_eq!(report.version_after, "2.0.0");
    assert_eq!(std::fs::read(&config.flash).expect("bank"), firmware);
    assert!(blocks > 255, "the block counter wrapped ({blocks} blocks)");
    let efficiency = report.payload_bytes as f64 / report.wire_bytes as f64;
    assert!(efficiency > 0.95, "payload/wire {efficiency:.3}");
    // Flashing the version it has is a no-op.
    let again = flasher::flash(&target, &timing, &DemoKey, &firmware, Some("2.0.0"), &mut |_| {}).await.expect("no-op");
    assert_eq!(again.payload_bytes, 0);
}

#[tokio::test]
async fn a_dropped_connection_restarts_the_transfer_and_completes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (target, config) = start_sim(dir.path(), |c| c.drop_after_blocks = Some(5)).await;
    let firmware = image("2.1.0", 100_000);
    let report = flasher::flash(&target, &Timing::default(), &DemoKey, &firmware, Some("2.1.0"), &mut |_| {})
        .await
        .expect("completes after a retry");
    assert_eq!(report.attempts, 2);
    assert_eq!(std::fs::read(&config.flash).expect("bank"), firmware);
}

#[tokio::test]
async fn an_invalid_key_or_a_rejected_image_fails_and_keeps_the_old_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (target, _) = start_sim(dir.path(), |c| {
        c.forced_nrc.insert(0x27, 0x35);
    })
    .await;
    let err = flasher::flash(&target, &Timing::default(), &DemoKey, &image("3.0.0", 1000), Some("3.0.0"), &mut |_| {})
        .await
        .expect_err("invalid key");
    assert!(matches!(err, EcuError::Nrc { service: 0x27, nrc: 0x35 }), "{err}");
    assert_eq!(err.reason(), "InvalidKey");
    assert_eq!(flasher::identify(&target, &Timing::default()).await.expect("identify").0, "1.0.0");

    let other = tempfile::tempdir().expect("tempdir");
    let (target, config) = start_sim(other.path(), |c| c.corrupt_checksum = true).await;
    let before = std::fs::read(&config.flash).expect("bank");
    let err = flasher::flash(&target, &Timing::default(), &DemoKey, &image("3.0.0", 1000), Some("3.0.0"), &mut |_| {})
        .await
        .expect_err("rejected");
    assert!(matches!(err, EcuError::ImageRejected(_)), "{err}");
    assert_eq!(std::fs::read(&config.flash).expect("bank"), before, "the bank is untouched");
    assert_eq!(flasher::identify(&target, &Timing::default()).await.expect("identify").0, "1.0.0");
}

#[tokio::test]
async fn with_ab_banks_an_image_goes_to_the_inactive_bank_and_the_other_keeps_the_one_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (target, config) = start_sim(dir.path(), |c| c.ab_banks = true).await;
    let initial = std::fs::read(&config.flash).expect("bank A");
    let timing = Timing::default();
    let v2 = image("2.0.0", 50_000);
    flasher::flash(&target, &timing, &DemoKey, &v2, Some("2.0.0"), &mut |_| {}).await.expect("v2");
    assert_eq!(std::fs::read(sim::bank_b(&config)).expect("bank B"), v2, "v2 went to bank B");
    assert_eq!(std::fs::read(&config.flash).expect("bank A"), initial, "bank A keeps the image before");
    let v3 = image("3.0.0", 50_000);
    flasher::flash(&target, &timing, &DemoKey, &v3, Some("3.0.0"), &mut |_| {}).await.expect("v3");
    assert_eq!(std::fs::read(&config.flash).expect("bank A"), v3, "v3 went to bank A");
    assert_eq!(std::fs::read(sim::bank_b(&config)).expect("bank B"), v2);
    // After a power cycle the ECU runs the active bank.
    let (restarted, _) = start_sim(dir.path(), |c| c.ab_banks = true).await;
    assert_eq!(flasher::identify(&restarted, &timing).await.expect("identify").0, "3.0.0");
}

#[tokio::test]
async fn the_sim_serves_the_sockets_it_announces_and_closes_a_further_one() {
    use tokio::io::AsyncReadExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let (target, _) = start_sim(dir.path(), |_| {}).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(target.address).await.expect("a socket"));
    }
    let mut fifth = tokio::net::TcpStream::connect(target.address).await.expect("connects");
    let mut byte = [0u8; 1];
    let read =
        tokio::time::timeout(Duration::from_secs(10), fifth.read(&mut byte)).await.expect("closed, not left open");
    assert_eq!(read.expect("read"), 0, "the fifth tester is closed at once");
    drop(held);
    // Places free up again: a tester gets through.
    let again = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if flasher::identify(&target, &Timing::default()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    again.await.expect("a tester gets through once the sockets are free");
}
