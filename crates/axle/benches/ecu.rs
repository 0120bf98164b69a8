//! `cargo bench -p axle --bench ecu`: flashing over DoIP/UDS on loopback against the simulated
//! ECU. Prints a table and one JSON line.
//!
//! Figures: 1 MiB and 8 MiB images — throughput, payload bytes ÷ bytes on the wire (whole
//! session, identification and read-back included), time per phase; two ECUs flashed in
//! parallel against one.

use ecu::flasher::{self, Target, Timing};
use ecu::keys::DemoKey;
use ecu::sim::{self, SimConfig};
use std::collections::HashMap;
use std::time::{Duration, Instant};

async fn sim(dir: &std::path::Path, name: &str) -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let udp = tokio::net::UdpSocket::bind(address).await.expect("udp");
    let config = SimConfig {
        listen: address,
        logical_address: 0x00E0,
        flash: dir.join(format!("{name}.bin")),
        sw_version: "1.0.0".into(),
        vin: "WAXLE000000000001".into(),
        serial: name.into(),
        max_block_length: 4092,
        erase_delay: Duration::from_millis(50),
        drop_after_blocks: None,
        forced_nrc: HashMap::new(),
        corrupt_checksum: false,
        ab_banks: false,
    };
    tokio::spawn(sim::serve(config, listener, udp));
    let target = Target { address, tester_address: 0x0E80, ecu_address: 0x00E0 };
    flasher::identify(&target, &Timing::default()).await.expect("sim answers");
    target
}

fn image(version: &str, size: usize) -> Vec<u8> {
    let mut image = format!("AXLE-FW bench {version}\n").into_bytes();
    let mut state = 0x1234_5678u32;
    image.extend((0..size).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as u8
    }));
    image
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        println!("| figure | value | bar |");
        println!("|---|--:|---|");
        let mut json = serde_json::Map::new();
        for (label, size) in [("1 MiB", 1usize << 20), ("8 MiB", 8usize << 20)] {
            let target = sim(dir.path(), &label.replace(" ", "")).await;
            let firmware = image("2.0.0", size);
            let started = Instant::now();
            let report = flasher::flash(&target, &Timing::default(), &DemoKey, &firmware, Some("2.0.0"), &mut |_| {})
                .await
                .expect("flashed");
            let seconds = started.elapsed().as_secs_f64();
            let throughput = size as f64 / seconds / (1 << 20) as f64;
            let efficiency = report.payload_bytes as f64 / report.wire_bytes as f64;
            println!("| flash {label}: total time | {:.0} ms | — |", seconds * 1000.0);
            println!("| flash {label}: throughput | {throughput:.1} MiB/s | — |");
            println!("| flash {label}: payload ÷ bytes on the wire | {efficiency:.4} | ≥ 0.97 |");
            let phases: Vec<String> =
                report.phases.iter().map(|(p, d)| format!("{p} {:.0}", d.as_secs_f64() * 1000.0)).collect();
            println!("| flash {label}: phases (ms) | {} | — |", phases.join(", "));
            json.insert(format!("flash_{}_ms", size >> 20), serde_json::json!(seconds * 1000.0));
            json.insert(format!("efficiency_{}mib", size >> 20), serde_json::json!(efficiency));
        }
        // Two ECUs at once against one: the gateway flashes ECUs side by side.
        let firmware = image("3.0.0", 4 << 20);
        let a = sim(dir.path(), "a").await;
        let started = Instant::now();
        flasher::flash(&a, &Timing::default(), &DemoKey, &firmware, Some("3.0.0"), &mut |_| {}).await.expect("one");
        let one = started.elapsed().as_secs_f64();
        let (c, d) = (sim(dir.path(), "c").await, sim(dir.path(), "d").await);
        let started = Instant::now();
        let (ra, rb) = tokio::join!(
            async { flasher::flash(&c, &Timing::default(), &DemoKey, &firmware, Some("3.0.0"), &mut |_| {}).await },
            async { flasher::flash(&d, &Timing::default(), &DemoKey, &firmware, Some("3.0.0"), &mut |_| {}).await },
        );
        ra.expect("c");
        rb.expect("d");
        let two = started.elapsed().as_secs_f64();
        println!("| 4 MiB to one ECU | {:.0} ms | — |", one * 1000.0);
        println!("| 4 MiB to two ECUs in parallel | {:.0} ms ({:.2}× one) | < 2× |", two * 1000.0, two / one);
        json.insert("one_ecu_ms".into(), serde_json::json!(one * 1000.0));
        json.insert("two_ecus_parallel_ms".into(), serde_json::json!(two * 1000.0));
        println!("{}", serde_json::Value::Object(json));
    });
}
