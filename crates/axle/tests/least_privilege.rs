//! A compromised computer of the car: with its agent's own certificate, and with the bootstrap
//! token every agent holds, it tries what Kubernetes' NodeRestriction exists to stop. Every try
//! is refused with its reason and leaves the car as it was, while the same node keeps working:
//! its lease, its pods' status, its own campaign slot, its endpoint.

mod support;

use serde_json::{json, Value};
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::identities::{kubectl_as, node_kubeconfig, stderr, stdout, token_kubeconfig};
use support::{axle_ok, path, wait_for, Agent, Server};

fn kubectl_as_with_stdin(kubeconfig: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin");
    child.wait_with_output().expect("kubectl ends")
}

fn refused(out: &Output, why: &str) {
    assert!(!out.status.success(), "accepted: {}", stdout(out));
    assert!(stderr(out).contains(why), "refused, but not for {why:?}: {}", stderr(out));
}

/// A CertificateSigningRequest for `CN=system:node:NODE, O=system:nodes` from `signer`.
fn csr_yaml(name: &str, node: &str, signer: &str, usages: &[&str]) -> String {
    let subject = pki::Subject {
        dns_names: vec![node.to_string()],
        ..pki::Subject::user(&format!("system:node:{node}"), &["system:nodes"])
    };
    let (request, _key) = pki::new_request(&subject).expect("a request");
    use base64::Engine as _;
    let request = base64::engine::general_purpose::STANDARD.encode(request);
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": name},
           "spec": {"request": request, "signerName": signer, "usages": usages}})
    .to_string()
}

const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The extended key usages and names of a PEM certificate, as openssl prints them.
fn certificate_text(pem: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child.stdin.take().expect("stdin").write_all(pem.as_bytes()).expect("pem");
    String::from_utf8_lossy(&child.wait_with_output().expect("openssl ends").stdout).into_owned()
}

fn signed_certificate(server: &Server, csr: &str) -> Option<String> {
    let (status, body) =
        server.http("GET", &format!("/apis/certificates.k8s.io/v1/certificatesigningrequests/{csr}"), None);
    let csr: Value = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD.decode(csr["status"]["certificate"].as_str()?).ok()?;
    String::from_utf8(der).ok()
}

fn label_of(server: &Server, node: &str, key: &str) -> Option<String> {
    let (_, body) = server.http("GET", &format!("/api/v1/nodes/{node}"), None);
    let node: Value = serde_json::from_str(&body).ok()?;
    node["metadata"]["labels"][key].as_str().map(String::from)
}

#[test]
fn a_compromised_node_cannot_reach_beyond_itself() {
    let server = Server::start_with(&["--protected-node-label-prefix", "safety"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let _hpc1 = Agent::start(&server, "hpc-1", 1);
    let _hpc2 = Agent::start(&server, "hpc-2", 1);
    for node in ["hpc-1", "hpc-2"] {
        wait_for(&format!("{node} to join"), Duration::from_secs(30), || {
            (server.http("GET", &format!("/api/v1/nodes/{node}"), None).0 == 200).then_some(())
        });
    }
    let hpc1 = node_kubeconfig(&server, dir.path(), "hpc-1");
    let hpc2 = node_kubeconfig(&server, dir.path(), "hpc-2");

    // Its certificates: the client one authenticates only, the endpoint's serves its name alone.
    let pki_dir = server.data_dir().join("agent-hpc-1/pki");
    let client_cert = certificate_text(&std::fs::read_to_string(pki_dir.join("node-hpc-1.crt")).expect("client cert"));
    assert!(client_cert.contains("TLS Web Client Authentication"), "{client_cert}");
    assert!(!client_cert.contains("TLS Web Server Authentication"), "a node's client certificate serves nothing");
    let serving = wait_for("the endpoint's serving certificate", Duration::from_secs(30), || {
        std::fs::read_to_string(pki_dir.join("serving-hpc-1.crt")).ok()
    });
    let serving = certificate_text(&serving);
    assert!(serving.contains("TLS Web Server Authentication") && !serving.contains("Client Authentication"));
    assert!(serving.contains("DNS:hpc-1") && !serving.contains("IP Address"), "{serving}");

    // Self-labelling: protected prefixes (and the configured `safety`) are an administrator's.
    for label in ["safety.axle.dev/asil=D", "node-role.kubernetes.io/gateway=", "safety=asil-d"] {
        refused(&kubectl_as(&hpc1, &["label", "node", "hpc-1", label]), "is not allowed to modify labels");
    }
    assert!(kubectl_as(&hpc1, &["label", "node", "hpc-1", "team=hmi"]).status.success(), "its own labels");
    server.kubectl_ok(&["label", "node", "hpc-2", "safety.axle.dev/asil=B"]);
    refused(
        &kubectl_as(&hpc2, &["label", "node", "hpc-2", "safety.axle.dev/asil-"]),
        "is not allowed to modify labels",
    );
    refused(
        &kubectl_as(&hpc2, &["label", "node", "hpc-2", "--overwrite", "safety.axle.dev/asil=D"]),
        "is not allowed to modify labels",
    );
    assert_eq!(label_of(&server, "hpc-2", "safety.axle.dev/asil").as_deref(), Some("B"));
    refused(&kubectl_as(&hpc1, &["annotate", "node", "hpc-1", "axle.dev/join-approved=now"]), "axle.dev/join-approved");

    // A workload placed by a protected label, with its Secret, stays where no node could put it.
    server.apply_stdin("apiVersion: v1\nkind: Secret\nmetadata: {name: brake-key}\nstringData: {k: v}\n", &[]);
    server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "brake-ctl"},
        "spec": {"nodeSelector": {"safety.axle.dev/asil": "D"}, "runtimeClassName": "process",
                 "containers": [{"name": "c", "image": "none", "command": ["/bin/sleep", "600"],
                                 "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "brake-key", "key": "k"}}}]}]}}));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(server.pod("brake-ctl").expect("pod")["spec"]["nodeName"], Value::Null, "not placed");
    refused(&kubectl_as(&hpc1, &["get", "secret", "brake-key"]), "forbidden");

    // pods/status changes status only: labels and annotations sent with it are ignored.
    server.create_pod(
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "radio", "labels": {"app": "radio"}},
        "spec": {"nodeName": "hpc-1", "runtimeClassName": "process", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "none", "command": ["/bin/sleep", "600"]}]}}),
    );
    let relabel = r#"{"metadata":{"labels":{"app":"brake-ctl","safety.axle.dev/asil":"D"},"annotations":{"x":"y"}}}"#;
    let out =
        kubectl_as(&hpc1, &["patch", "pod", "radio", "--subresource", "status", "--type", "merge", "-p", relabel]);
    assert!(out.status.success(), "{}", stderr(&out));
    let radio = server.pod("radio").expect("pod");
    assert_eq!(radio["metadata"]["labels"], json!({"app": "radio"}), "{radio}");
    assert!(radio["metadata"]["annotations"]["x"].is_null());

    // Campaigns: a node writes its own slots and nothing else; nobody but the update controller
    // moves the phase, not even an administrator.
    let campaign = json!({"apiVersion": "axle.dev/v1alpha1", "kind": "Campaign", "metadata": {"name": "forged"},
                          "spec": {"bundle": "none", "version": 99}});
    server.create_object("/apis/axle.dev/v1alpha1/campaigns", &campaign);
    let patch_status = |kubeconfig: &Path, patch: Value| {
        let patch = patch.to_string();
        kubectl_as(
            kubeconfig,
            &["patch", "campaign", "forged", "--subresource", "status", "--type", "merge", "-p", &patch],
        )
    };
    refused(&patch_status(&hpc1, json!({"status": {"phase": "Committing"}})), "Forbidden");
    refused(&patch_status(&server.kubeconfig, json!({"status": {"phase": "Committed"}})), "update controller");
    refused(&patch_status(&hpc1, json!({"status": {"staging": {"nodes": {"hpc-2": "Staged"}}}})), "may change only");
    refused(&patch_status(&hpc1, json!({"status": {"message": "all good"}})), "may change only");
    let own = patch_status(
        &hpc1,
        json!({"status": {"staging": {"nodes": {"hpc-1": "Staged"}}, "agents": {"hpc-1": "Committed"}}}),
    );
    assert!(own.status.success(), "its own slots: {}", stderr(&own));

    // And a Campaign no verified bundle stands for installs nothing, whoever wrote it.
    let forged = wait_for("the forged campaign to be rolled back", Duration::from_secs(30), || {
        let (_, body) = server.http("GET", "/apis/axle.dev/v1alpha1/campaigns/forged", None);
        serde_json::from_str::<Value>(&body).ok().filter(|c| c["status"]["phase"] == "RolledBack")
    });
    assert_eq!(forged["status"]["reason"], "NotVerified", "{forged}");
    let (_, inventory) = server.http("GET", "/apis/axle.dev/v1alpha1/inventories/car", None);
    assert!(!inventory.contains("\"bundleVersion\":99"), "{inventory}");

    // The bootstrap token: no certificate for a registered node, the server's names or an
    // address; a new name gets a client certificate only; serving certificates are the node's.
    let token = std::fs::read_to_string(server.data_dir().join("node-token")).expect("token");
    let bootstrap = token_kubeconfig(&server, dir.path(), "bootstrap", Some(token.trim()));
    let create = |kubeconfig: &Path, name: &str, node: &str, signer: &str, usages: &[&str]| {
        kubectl_as_with_stdin(kubeconfig, &["create", "-f", "-"], &csr_yaml(name, node, signer, usages))
    };
    let client_usages = ["digital signature", "client auth"];
    refused(&create(&bootstrap, "steal-hpc-2", "hpc-2", CLIENT_SIGNER, &client_usages), "already registered");
    refused(&create(&bootstrap, "be-localhost", "localhost", CLIENT_SIGNER, &client_usages), "localhost");
    refused(&create(&bootstrap, "be-loopback", "127.0.0.1", CLIENT_SIGNER, &client_usages), "an address");
    refused(
        &create(&bootstrap, "serve-hpc-9", "hpc-9", SERVING_SIGNER, &["digital signature", "server auth"]),
        "only the node itself",
    );
    refused(
        &create(&hpc1, "serve-as-hpc-2", "hpc-2", SERVING_SIGNER, &["digital signature", "server auth"]),
        "only the node itself",
    );
    let out =
        create(&bootstrap, "join-hpc-9", "hpc-9", CLIENT_SIGNER, &["digital signature", "client auth", "server auth"]);
    assert!(out.status.success(), "a new node joins: {}", stderr(&out));
    let issued = certificate_text(&signed_certificate(&server, "join-hpc-9").expect("signed"));
    assert!(issued.contains("TLS Web Client Authentication") && !issued.contains("Server Authentication"), "{issued}");
    assert!(!issued.contains("DNS:"), "a client certificate names no host: {issued}");

    // An administrator lets a registered node join again, once.
    let approved = axle_ok(&["node", "approve", "hpc-2", "--kubeconfig", path(&server.kubeconfig)]);
    assert!(approved.contains("may join again"), "{approved}");
    let out = create(&bootstrap, "rejoin-hpc-2", "hpc-2", CLIENT_SIGNER, &client_usages);
    assert!(out.status.success(), "approved: {}", stderr(&out));
    refused(&create(&bootstrap, "rejoin-again", "hpc-2", CLIENT_SIGNER, &client_usages), "already registered");

    // ServiceAccount tokens for another audience are no key to the API.
    server.apply_stdin("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: vault-client}\n", &[]);
    let foreign = server.kubectl_ok(&["create", "token", "vault-client", "--audience", "vault.example"]);
    let foreign = token_kubeconfig(&server, dir.path(), "foreign", Some(foreign.trim()));
    refused(&kubectl_as(&foreign, &["get", "--raw", "/api"]), "Unauthorized");
    let own = server.kubectl_ok(&["create", "token", "vault-client"]);
    let own = token_kubeconfig(&server, dir.path(), "own", Some(own.trim()));
    assert!(kubectl_as(&own, &["get", "--raw", "/api"]).status.success(), "the API's own audience");

    // Nothing of it changed the car, and the node keeps working.
    let renewed = |node: &str| {
        let (_, lease) =
            server.http("GET", &format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"), None);
        serde_json::from_str::<Value>(&lease).ok().and_then(|l| l["spec"]["renewTime"].as_str().map(String::from))
    };
    let before = renewed("hpc-1");
    wait_for("hpc-1 to renew its lease", Duration::from_secs(10), || (renewed("hpc-1") != before).then_some(()));
    wait_for("radio to run", Duration::from_secs(30), || {
        server.pod("radio").filter(|p| p["status"]["phase"] == "Running").map(|_| ())
    });
    let logs = server.kubectl(&["logs", "radio"]);
    assert!(logs.status.success(), "the server reaches the agent's endpoint: {}", stderr(&logs));
    assert_eq!(label_of(&server, "hpc-1", "safety.axle.dev/asil"), None);
}

#[test]
fn the_bootstrap_token_expires_and_is_rotated() {
    let server = Server::start_with(&["--bootstrap-token-ttl-seconds", "5", "--node-cert-validity-seconds", "15"]);
    let _hpc1 = Agent::start(&server, "hpc-1", 1);
    wait_for("hpc-1 to join in time", Duration::from_secs(30), || {
        (server.http("GET", "/api/v1/nodes/hpc-1", None).0 == 200).then_some(())
    });
    let cert = server.data_dir().join("agent-hpc-1/pki/node-hpc-1.crt");
    let first = std::fs::read_to_string(&cert).expect("the node's certificate");
    std::thread::sleep(Duration::from_secs(6));
    let dir = tempfile::tempdir().expect("tempdir");
    let token = std::fs::read_to_string(server.data_dir().join("node-token")).expect("token");
    let late = token_kubeconfig(&server, dir.path(), "late", Some(token.trim()));
    let csr = csr_yaml("late-join", "hpc-3", CLIENT_SIGNER, &["digital signature", "client auth"]);
    refused(&kubectl_as_with_stdin(&late, &["create", "-f", "-"], &csr), "provide credentials");
    // A node that joined renews as itself: the expired token does not matter to it.
    wait_for("hpc-1 to renew its certificate", Duration::from_secs(30), || {
        std::fs::read_to_string(&cert).ok().filter(|c| *c != first).map(|_| ())
    });

    let rotated = axle_ok(&["node", "token", "rotate", "--data-dir", path(server.data_dir()), "--ttl-seconds", "0"]);
    assert_ne!(rotated.trim(), token.trim());
    assert_eq!(std::fs::read_to_string(server.data_dir().join("node-token")).expect("token").trim(), rotated.trim());
    let _hpc3 = Agent::start(&server, "hpc-3", 1);
    wait_for("hpc-3 to join with the new token", Duration::from_secs(30), || {
        (server.http("GET", "/api/v1/nodes/hpc-3", None).0 == 200).then_some(())
    });
}
