//! `axle wear`: what the car writes to its flash, by component and cause, projected per day
//! and against a flash part's endurance.
//!
//! It reads `axle_storage_bytes_written_total` from the server's `/metrics` and from every
//! agent's (through `nodes/NAME/proxy/metrics`) twice, `--window` apart: the difference is what
//! the car writes now, not what its start wrote.

use anyhow::Context as _;
use std::collections::BTreeMap;

/// A part's endurance: `--flash-size`, `--pe-cycles`, over `--years`.
pub struct Flash {
    pub size_bytes: u64,
    pub pe_cycles: u64,
    pub years: f64,
}

/// (component, node, reason) → bytes written so far.
type Sample = BTreeMap<(String, String, String), u64>;

pub async fn report(
    client: &client::Client,
    window: std::time::Duration,
    flash: &Flash,
    json: bool,
) -> anyhow::Result<()> {
    let first = sample(client).await?;
    tokio::time::sleep(window).await;
    let second = sample(client).await?;
    let seconds = window.as_secs_f64().max(0.001);
    let per_day = |bytes: u64| bytes as f64 * 86_400.0 / seconds;
    let rows: Vec<(&(String, String, String), u64)> =
        second.iter().map(|(key, after)| (key, after.saturating_sub(first.get(key).copied().unwrap_or(0)))).collect();
    let total: u64 = rows.iter().map(|(_, bytes)| bytes).sum();
    let endurance = flash.size_bytes as f64 * flash.pe_cycles as f64;
    let lifetime = per_day(total) * 365.25 * flash.years;
    let share = 100.0 * lifetime / endurance;
    if json {
        let causes: Vec<serde_json::Value> = rows
            .iter()
            .map(|((component, node, reason), bytes)| {
                serde_json::json!({"component": component, "node": node, "reason": reason,
                                   "bytes": bytes, "bytesPerDay": per_day(*bytes).round()})
            })
            .collect();
        let doc = serde_json::json!({
            "windowSeconds": seconds, "causes": causes, "bytesPerDay": per_day(total).round(),
            "flash": {"bytes": flash.size_bytes, "peCycles": flash.pe_cycles, "years": flash.years},
            "lifetimeBytes": lifetime.round(), "enduranceShare": share / 100.0,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("Storage writes over {seconds:.0} s, projected per day:");
    println!("{:<12} {:<12} {:<18} {:>12} {:>14}", "COMPONENT", "NODE", "REASON", "WRITTEN", "PER DAY");
    for ((component, node, reason), bytes) in &rows {
        let node = if node.is_empty() { "-" } else { node };
        println!("{component:<12} {node:<12} {reason:<18} {:>12} {:>14}", size(*bytes as f64), size(per_day(*bytes)));
    }
    println!("{:<44} {:>12} {:>14}", "TOTAL", size(total as f64), size(per_day(total)));
    println!(
        "A {} flash rated {} P/E cycles endures {} of writes; {} years at this rate write {}: {share:.4} % of it.",
        size(flash.size_bytes as f64),
        flash.pe_cycles,
        size(endurance),
        flash.years,
        size(lifetime)
    );
    Ok(())
}

/// The storage-write counters of the server and of every agent that serves metrics.
async fn sample(client: &client::Client) -> anyhow::Result<Sample> {
    let mut out = Sample::new();
    let server = metrics_text(client, "/metrics").await.context("cannot read the server's metrics")?;
    read_counters(&server, "", &mut out);
    let nodes = client.get("/api/v1/nodes").await.context("cannot list the nodes")?;
    for node in nodes["items"].as_array().into_iter().flatten() {
        if node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap_or(0) == 0 {
            continue; // ECUs: their gateway writes only when it flashes
        }
        let name = api::meta::name_of(node);
        match metrics_text(client, &format!("/api/v1/nodes/{name}/proxy/metrics")).await {
            Ok(text) => read_counters(&text, name, &mut out),
            Err(e) => eprintln!("axle wear: node {name}: {e:#} (left out)"),
        }
    }
    Ok(out)
}

async fn metrics_text(client: &client::Client, path: &str) -> anyhow::Result<String> {
    let bytes = client.request_accepting(hyper::Method::GET, path, "text/plain", "", None).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `axle_storage_bytes_written_total{component="…",reason="…"} N` lines.
fn read_counters(text: &str, node: &str, out: &mut Sample) {
    for line in text.lines().filter(|l| l.starts_with("axle_storage_bytes_written_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            labels.split(&format!("{name}=\"")).nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("").to_string()
        };
        let bytes = value.parse::<f64>().unwrap_or(0.0) as u64;
        out.insert((label("component"), node.to_string(), label("reason")), bytes);
    }
}

/// `8GiB`, `512MB`, `8Gi`, `1000000`: a size in bytes, as a Kubernetes quantity with an
/// optional `B`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let quantity = compact.strip_suffix('B').unwrap_or(&compact);
    api::quantity::bytes(quantity).ok_or_else(|| format!("{text:?} is not a size (e.g. 8GiB, 8GB, 8Gi)"))
}

fn size(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("8 GB"), Ok(8_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("8 parsecs").is_err());
    }

    #[test]
    fn counters_are_read_by_component_and_reason() {
        let text = "# TYPE axle_storage_bytes_written_total counter\n\
            axle_storage_bytes_written_total{component=\"agent\",reason=\"pod-state\"} 8192\n\
            axle_storage_bytes_written_total{component=\"agent\",reason=\"other\"} 0\n";
        let mut sample = Sample::new();
        read_counters(text, "hpc-1", &mut sample);
        assert_eq!(sample.get(&("agent".into(), "hpc-1".into(), "pod-state".into())), Some(&8192));
        assert_eq!(sample.len(), 2);
    }
}
