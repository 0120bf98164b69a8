//! Secrets at rest: the server seals Secret objects in its store with the key in
//! `DATA_DIR/secrets.key` (mode 0600); kubectl and the API see them as always, the store file
//! never holds their data in the clear, and a restarted server reads them back.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use support::Server;

const PASSWORD: &str = "hunter2-unique-axle-test";

#[test]
fn secrets_are_sealed_in_the_store_and_read_back() {
    let server = Server::start();
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

    let dir = server.crash();
    let store = std::fs::read(dir.path().join("store-v3.redb")).expect("the store file");
    let found = |needle: &str| store.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(!found(PASSWORD) && !found(&encoded), "the secret is in the store file in the clear");
    assert!(found("visible-config-value"), "other objects are stored as they are");

    let server = Server::start_in(dir);
    let again = server.kubectl_ok(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(again, encoded);
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
