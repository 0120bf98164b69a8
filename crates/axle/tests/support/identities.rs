//! Kubeconfigs of the car's identities for tests (users with client certificates, nodes with
//! the certificate their agent obtained, bearer tokens), and kubectl run as them.

use super::{axle_ok, path, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// kubectl with another kubeconfig than the admin's.
pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().expect("kubectl runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `axle kubeconfig USER --group …`: a kubeconfig with a client certificate from the car's CA.
pub fn user_kubeconfig(server: &Server, dir: &Path, user: &str, groups: &[&str], valid_for: u64) -> PathBuf {
    let out = dir.join(format!("{user}.kubeconfig"));
    let valid_for = valid_for.to_string();
    let mut args = vec!["kubeconfig", user, "--data-dir", path(server.data_dir()), "-o", path(&out)];
    args.extend(["--valid-for-seconds", &valid_for]);
    for group in groups {
        args.extend(["--group", group]);
    }
    axle_ok(&args);
    out
}

/// A kubeconfig presenting a node's own certificate (the one its agent obtained by joining).
pub fn node_kubeconfig(server: &Server, dir: &Path, node: &str) -> PathBuf {
    let pki = server.data_dir().join(format!("agent-{node}/pki"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: car\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
         users:\n- name: {node}\n  user:\n    client-certificate: {}\n    client-key: {}\n\
         contexts:\n- name: car\n  context: {{cluster: car, user: {node}, namespace: default}}\ncurrent-context: car\n",
        server.url(),
        server.ca_file().display(),
        pki.join(format!("node-{node}.crt")).display(),
        pki.join(format!("node-{node}.key")).display(),
    );
    let out = dir.join(format!("{node}.kubeconfig"));
    std::fs::write(&out, text).expect("kubeconfig");
    out
}

/// A kubeconfig with the server and CA but no credentials (or a bearer token).
pub fn token_kubeconfig(server: &Server, dir: &Path, name: &str, token: Option<&str>) -> PathBuf {
    let user = token.map_or_else(|| "{}".to_string(), |t| format!("{{token: {t}}}"));
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: car\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
         users:\n- name: u\n  user: {user}\ncontexts:\n- name: car\n  context: {{cluster: car, user: u, namespace: default}}\n\
         current-context: car\n",
        server.url(),
        server.ca_file().display(),
    );
    let out = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&out, text).expect("kubeconfig");
    out
}
