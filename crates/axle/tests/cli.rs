//! The `axle` CLI against a real server: `apply -f DIR` and `get`, with one-line errors.

mod support;

use std::process::{Command, Output};
use support::{axle_bin, Server};

fn axle(server: &Server, args: &[&str]) -> Output {
    Command::new(axle_bin()).args(args).env("KUBECONFIG", &server.kubeconfig).output().expect("axle runs")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "axle failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cli_applies_a_directory_and_gets_tables() {
    let server = Server::start();
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let applied = stdout(&axle(&server, &["apply", "-f", examples]));
    assert!(applied.contains("namespace/car applied") && applied.contains("deployment/nav applied"), "{applied}");
    let table = stdout(&axle(&server, &["get", "deploy", "-n", "car"]));
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], "{table}");
    assert!(table.contains("map-store") && table.contains("nav"), "{table}");
    let all = stdout(&axle(&server, &["get", "configmaps", "-A", "-o", "wide"]));
    assert!(all.starts_with("NAMESPACE") && all.contains("nav-config"), "{all}");
    let one = stdout(&axle(&server, &["get", "pod", "telemetry", "-n", "car", "-o", "json"]));
    let pod: serde_json::Value = serde_json::from_str(&one).expect("JSON");
    assert_eq!(pod["spec"]["runtimeClassName"], "process");
    let selected = stdout(&axle(&server, &["get", "deployments", "-n", "car", "-l", "app=nav"]));
    assert!(selected.contains("nav") && !selected.contains("map-store"), "{selected}");
}

#[test]
fn cli_errors_are_one_line_with_the_cause() {
    let server = Server::start();
    let out = axle(&server, &["get", "frobnicators"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("doesn't have a resource type \"frobnicators\""), "{stderr}");
    let out = axle(&server, &["get", "pod", "ghost"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("pods \"ghost\" not found"), "{stderr}");
    let out = axle(&server, &["apply", "-f", "/nonexistent.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("/nonexistent.yaml"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line with the cause: {stderr}");
    assert!(stderr.starts_with("axle: ") && stderr.contains("No such file"), "{stderr}");
}
