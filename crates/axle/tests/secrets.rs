//! Secrets at rest: the server seals Secret objects in its store with the key in
//! `DATA_DIR/secrets.key` (mode 0600); kubectl and the API see them as always, the store file
//! never holds their data in the clear, and a restarted server reads them back.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use support::Server;

const PASSWORD: &str = "hunter2-unique-axle-test";

#[test]
fn secrets_are_sealed_in_the_store_and_read_back() {
    let mut server = Server::start();
    server.apply_stdin(
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: db}}\nstringData: {{password: {PASSWORD}}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: plain}}\ndata: {{note: visible-config-value}}\n"
        ),
        &[],
    );
    let encoded = server.kubectl_ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    let decoded = std::process::Command::new("base64").arg("-d").stdin_from(&encoded);
    assert_eq!(decoded, PASSWORD);
    let (status, list) = server.http("GET", "/api/v1/namespaces/default/secrets", None);
    assert_eq!(status, 200);
    assert!(list.contains(&encoded), "{list}");

    let key = server.data_dir().join("secrets.key");
    let meta = std::fs::metadata(&key).expect("the key file");
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Killed: the changes are in the store's log (compressed records), not yet in redb.
    let log = store_files(&server.data_dir().join("store-v4.wal"));
    assert!(!log.is_empty(), "the writes are in the log");
    for (path, bytes) in &log {
        let text = zstd_frames(bytes);
        let found = |needle: &str| text.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(!found(PASSWORD) && !found(&encoded), "the secret is in {} in the clear", path.display());
    }
    // Stopped cleanly: everything is in redb, Secrets sealed, other objects as they are.
    server.terminate();
    let store = std::fs::read(server.data_dir().join("store-v4.redb")).expect("the store file");
    let found = |needle: &str| store.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!found(PASSWORD) && !found(&encoded), "the secret is in the store file in the clear");
    assert!(found("visible-config-value"), "other objects are stored as they are");
    let dir = server.crash();

    let server = Server::start_in(dir);
    let again = server.kubectl_ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(again, encoded);
}

/// The files of a directory with their bytes.
fn store_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir)
        .expect("the store's log")
        .map(|e| e.expect("entry").path())
        .map(|p| (p.clone(), std::fs::read(&p).expect("a log segment")))
        .collect()
}

/// The log's records decompressed (each record: 8 bytes of length and CRC, then a zstd frame).
fn zstd_frames(segment: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = segment.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(frame) = segment.get(at + 8..at + 8 + len) else { break };
        out.extend(zstd::bulk::decompress(frame, 64 << 20).expect("a record decompresses"));
        at += 8 + len;
    }
    out
}

trait StdinFrom {
    fn stdin_from(&mut self, input: &str) -> String;
}

impl StdinFrom for std::process::Command {
    /// Runs with `input` on stdin; its stdout.
    fn stdin_from(&mut self, input: &str) -> String {
        use std::io::Write as _;
        let mut child = self
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("command runs");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("output");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}
