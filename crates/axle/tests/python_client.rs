//! The official Python `kubernetes` client (installed in `.venv` by `.ci/run`) against a real
//! server: the pytest suite in `tests/python/`.

mod support;

use std::path::Path;
use std::process::Command;
use support::{python, Server};

#[test]
fn python_kubernetes_client_works_against_axle() {
    // A short change log, so the suite can watch from a version that has left it (410).
    let server = Server::start_with(&["--change-log-capacity", "50"]);
    let interpreter = python();
    assert!(
        interpreter.exists(),
        "the test virtualenv is missing ({}): run `bash .ci/run` once, or set AXLE_PYTHON",
        interpreter.display()
    );
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/test_client.py");
    let out = Command::new(&interpreter)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&suite)
        .env("AXLE_KUBECONFIG", &server.kubeconfig)
        .output()
        .expect("pytest runs");
    assert!(
        out.status.success(),
        "pytest failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
