//! Security of the control plane, end to end with the real kubectl: TLS from the car's CA,
//! authentication (client certificates, static and ServiceAccount tokens, node join with the
//! bootstrap token), RBAC with the default roles, `kubectl auth can-i`, node restriction, and
//! certificate expiry and renewal.

mod support;

use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::identities::{kubectl_as, node_kubeconfig, stderr, stdout, token_kubeconfig, user_kubeconfig};
use support::{path, wait_for, Agent, Server};

#[test]
fn kubectl_works_over_tls_and_anonymous_clients_get_401() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(server.kubectl_ok(&["get", "namespaces"]).contains("kube-system"));
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
    assert!(kubeconfig.contains("server: https://") && kubeconfig.contains("client-certificate-data"));
    use std::os::unix::fs::PermissionsExt;
    for private in ["admin.kubeconfig", "pki/ca.key", "node-token", "secrets.key"] {
        let mode = std::fs::metadata(server.data_dir().join(private)).expect(private).permissions().mode();
        assert_eq!(mode & 0o077, 0, "{private} is readable by others: {mode:o}");
    }

    // No credentials: TLS that trusts the car's CA but presents nothing.
    let ca = std::fs::read_to_string(server.ca_file()).expect("ca");
    let anonymous = std::sync::Arc::new(pki::client_config(&ca, None).expect("tls"));
    let ask = |path: &str| {
        support::http_over_tls(&server.addr, "127.0.0.1", anonymous.clone(), "GET", path, None).expect("reply")
    };
    let (status, body) = ask("/api/v1/pods");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"reason\":\"Unauthorized\""), "{body}");
    // Health and version are public (load balancers, `kubectl version` before logging in).
    assert_eq!(ask("/version").0, 200);
    assert_eq!(ask("/readyz"), (200, "ok".to_string()));
    assert_eq!(ask("/apis").0, 401);
    let out = kubectl_as(&token_kubeconfig(&server, dir.path(), "forged", Some("not-a-token")), &["get", "pods"]);
    assert!(stderr(&out).contains("You must be logged in to the server (Unauthorized)"), "{}", stderr(&out));
    // Plain HTTP to the TLS port gets no API answer.
    let plain = std::net::TcpStream::connect(&server.addr).and_then(|mut s| {
        use std::io::{Read, Write};
        s.write_all(b"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n\r\n")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    });
    assert!(!plain.unwrap_or_default().contains("\"kind\":\"PodList\""));
}

#[test]
fn roles_decide_what_users_may_do_and_can_i_tells_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "ota-secret,ota-backend,1001,\"axle:update-services\"\n").expect("tokens");
    let server = Server::start_with(&["--token-auth-file", path(&tokens)]);

    // A viewer with a client certificate (CN = user, O = group): reads, cannot write.
    let viewer = user_kubeconfig(&server, dir.path(), "vera", &["axle:viewers"], 3600);
    assert!(kubectl_as(&viewer, &["get", "pods"]).status.success());
    let out = kubectl_as(&viewer, &["create", "deployment", "web", "--image", "nginx"]);
    assert!(!out.status.success());
    let refused = stderr(&out);
    assert!(
        refused.contains(
            "deployments is forbidden: User \"vera\" cannot create resource \"deployments\" in API group \"apps\""
        ),
        "{refused}"
    );
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-viewer}\n";
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&viewer)
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(manifest.as_bytes())?;
            child.wait_with_output()
        })
        .expect("kubectl apply");
    assert!(stderr(&out).contains("Error from server (Forbidden)"), "{}", stderr(&out));
    let out = kubectl_as(&viewer, &["get", "secrets"]);
    assert!(stderr(&out).contains("forbidden"), "viewers do not read Secrets: {}", stderr(&out));
    let can_i = |kubeconfig: &Path, args: &[&str]| {
        stdout(&kubectl_as(kubeconfig, &[&["auth", "can-i"], args].concat())).trim().to_string()
    };
    assert_eq!(can_i(&viewer, &["list", "pods"]), "yes");
    assert_eq!(can_i(&viewer, &["create", "deployments"]), "no");
    assert_eq!(can_i(&viewer, &["get", "secrets"]), "no");
    assert_eq!(can_i(&server.kubeconfig, &["delete", "nodes"]), "yes");

    // The update service with a static token: Bundles and Campaigns only.
    let ota = token_kubeconfig(&server, dir.path(), "ota", Some("ota-secret"));
    assert_eq!(can_i(&ota, &["create", "campaigns.axle.dev"]), "yes");
    assert_eq!(can_i(&ota, &["get", "bundles.axle.dev"]), "yes");
    assert_eq!(can_i(&ota, &["create", "pods"]), "no");
    assert_eq!(can_i(&ota, &["get", "nodes"]), "no");
    let out = kubectl_as(&ota, &["get", "pods"]);
    assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));

    // An admin by group; impersonation (`--as`) is the admin's too.
    let admin = user_kubeconfig(&server, dir.path(), "ada", &["axle:admins"], 3600);
    server.apply_stdin("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n", &[]);
    assert!(kubectl_as(&admin, &["delete", "configmap", "settings"]).status.success());
    assert_eq!(can_i(&server.kubeconfig, &["create", "pods", "--as", "vera", "--as-group", "axle:viewers"]), "no");
    let out = kubectl_as(&viewer, &["auth", "can-i", "list", "pods", "--as", "ada"]);
    assert!(stderr(&out).contains("cannot impersonate resource \"users\""), "{}", stderr(&out));

    // A RoleBinding grants what its role allows, in its namespace only.
    server.apply_stdin(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: vera-edits-default, namespace: default}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}\n\
         subjects: [{kind: User, apiGroup: rbac.authorization.k8s.io, name: vera}]\n",
        &[],
    );
    assert_eq!(can_i(&viewer, &["create", "deployments"]), "yes");
    assert_eq!(can_i(&viewer, &["create", "deployments", "-n", "kube-system"]), "no");
}

#[test]
fn service_account_tokens_authenticate_until_the_account_is_deleted() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    server.apply_stdin(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: dashboard}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: dashboard-views}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: viewer}\n\
         subjects: [{kind: ServiceAccount, name: dashboard, namespace: default}]\n",
        &[],
    );
    let token = server.kubectl_ok(&["create", "token", "dashboard", "--duration", "10m"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let dashboard = token_kubeconfig(&server, dir.path(), "dashboard", Some(&token));
    assert!(kubectl_as(&dashboard, &["get", "pods"]).status.success(), "the RoleBinding lets it read pods");
    assert!(stderr(&kubectl_as(&dashboard, &["get", "pods", "-n", "kube-system"])).contains("forbidden"));
    server.kubectl_ok(&["delete", "serviceaccount", "dashboard"]);
    let out = kubectl_as(&dashboard, &["get", "pods"]);
    assert!(stderr(&out).contains("Unauthorized"), "a deleted account's token is void: {}", stderr(&out));
}

#[test]
fn nodes_join_with_the_bootstrap_token_and_touch_only_their_own() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let _hpc1 = Agent::start(&server, "hpc-1", 1);
    let _hpc2 = Agent::start(&server, "hpc-2", 1);
    for node in ["hpc-1", "hpc-2"] {
        wait_for("the node to join and register", Duration::from_secs(30), || {
            let (status, _) = server.http("GET", &format!("/api/v1/nodes/{node}"), None);
            (status == 200).then_some(())
        });
    }
    let csrs = server.kubectl_ok(&["get", "csr", "-o", "jsonpath={.items[*].spec.username}"]);
    assert!(csrs.contains("system:bootstrap:node-token"), "joined with the bootstrap token: {csrs}");

    server.apply_stdin(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: hpc1-key}\nstringData: {k: v}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: hpc2-key}\nstringData: {k: v}\n",
        &[],
    );
    for (pod, node, secret) in [("on-one", "hpc-1", "hpc1-key"), ("on-two", "hpc-2", "hpc2-key")] {
        server.create_pod(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod},
            "spec": {"nodeName": node, "runtimeClassName": "process", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "none", "command": ["/bin/sleep", "600"],
                                     "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]}]}}));
    }
    wait_for("the pods to run with their Secrets", Duration::from_secs(60), || {
        ["on-one", "on-two"]
            .iter()
            .all(|p| server.pod(p).is_some_and(|p| p["status"]["phase"] == "Running"))
            .then_some(())
    });

    let hpc1 = node_kubeconfig(&server, dir.path(), "hpc-1");
    let forbidden = |args: &[&str]| {
        let out = kubectl_as(&hpc1, args);
        assert!(!out.status.success(), "hpc-1 may not {args:?}");
        assert!(stderr(&out).contains("forbidden"), "{args:?}: {}", stderr(&out));
    };
    forbidden(&[
        "patch",
        "pod",
        "on-two",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ]);
    forbidden(&["get", "secret", "hpc2-key"]);
    forbidden(&["get", "secrets"]);
    forbidden(&["delete", "node", "hpc-2"]);
    forbidden(&["delete", "node", "hpc-1"]);
    forbidden(&["label", "node", "hpc-2", "stolen=yes"]);
    forbidden(&["create", "configmap", "x", "--from-literal", "a=b"]);
    // What is its own it may do.
    assert!(kubectl_as(&hpc1, &["get", "secret", "hpc1-key"]).status.success(), "the Secret its pod uses");
    let own = kubectl_as(
        &hpc1,
        &[
            "patch",
            "pod",
            "on-one",
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            r#"{"status":{"message":"checked"}}"#,
        ],
    );
    assert!(own.status.success(), "{}", stderr(&own));
    assert!(kubectl_as(&hpc1, &["label", "node", "hpc-1", "checked=yes"]).status.success());
    assert_eq!(server.pod("on-two").expect("pod")["status"]["phase"], "Running");

    // The server reaches each agent over mutual TLS (logs come through it).
    let logs = server.kubectl(&["logs", "on-one"]);
    assert!(logs.status.success(), "{}", stderr(&logs));
}

#[test]
fn a_wrong_bootstrap_token_cannot_join() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "0123456789abcdef0123456789abcdef").expect("token");
    let agent_dir = dir.path().join("intruder");
    let log = std::fs::File::create(dir.path().join("intruder.log")).expect("log");
    let mut intruder = support::Killed(
        Command::new(support::axle_bin())
            .args(["agent", "--server", &server.url(), "--node-name", "intruder", "--heartbeat-seconds", "1"])
            .arg("--ca-file")
            .arg(server.ca_file())
            .arg("--token-file")
            .arg(&wrong)
            .arg("--data-dir")
            .arg(&agent_dir)
            .stderr(log)
            .spawn()
            .expect("agent starts"),
    );
    wait_for("the intruder to be refused", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(dir.path().join("intruder.log")).ok()?;
        text.contains("cannot obtain a node certificate").then_some(())
    });
    let text = std::fs::read_to_string(dir.path().join("intruder.log")).expect("log");
    assert!(text.contains("401"), "{text}");
    std::thread::sleep(Duration::from_secs(2));
    let (status, _) = server.http("GET", "/api/v1/nodes/intruder", None);
    assert_eq!(status, 404, "the intruder never registered");
    assert!(!agent_dir.join("pki/node-intruder.crt").exists());
    assert!(matches!(intruder.0.try_wait(), Ok(None)), "the agent keeps trying, it does not crash");
    let _ = intruder.0.kill();
}

#[test]
fn an_expired_client_certificate_is_refused() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let brief = user_kubeconfig(&server, dir.path(), "brief", &["axle:admins"], 2);
    assert!(kubectl_as(&brief, &["get", "pods"]).status.success(), "valid while it lasts");
    std::thread::sleep(Duration::from_secs(3));
    let out = kubectl_as(&brief, &["get", "pods"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let error = stderr(&out);
    // The server's alert names the expired certificate; a kubectl that was still writing its
    // request when the connection closed reports the closed pipe instead (TLS 1.3 checks the
    // client certificate after the client's side of the handshake is done).
    let refused = ["expired", "certificate", "broken pipe", "connection reset"].iter().any(|e| error.contains(e));
    assert!(refused, "{error}");
}

#[test]
fn node_certificates_renew_before_they_expire() {
    let server = Server::start_with(&["--node-cert-validity-seconds", "12"]);
    let _agent = Agent::start(&server, "hpc-1", 1);
    let cert = server.data_dir().join("agent-hpc-1/pki/node-hpc-1.crt");
    let first = wait_for("the first node certificate", Duration::from_secs(30), || std::fs::read_to_string(&cert).ok());
    let renewed = wait_for("a renewed certificate", Duration::from_secs(30), || {
        std::fs::read_to_string(&cert).ok().filter(|c| *c != first)
    });
    assert_ne!(first, renewed);
    // Past the first certificate's end the node still reports in with the new one.
    std::thread::sleep(Duration::from_secs(10));
    let ready = |server: &Server| {
        let node: serde_json::Value =
            serde_json::from_str(&server.http("GET", "/api/v1/nodes/hpc-1", None).1).expect("node");
        let lease: serde_json::Value = serde_json::from_str(
            &server.http("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/hpc-1", None).1,
        )
        .expect("lease");
        (
            node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            lease,
        )
    };
    let (is_ready, lease_before) = ready(&server);
    assert!(is_ready);
    std::thread::sleep(Duration::from_secs(2));
    let (_, lease_after) = ready(&server);
    assert_ne!(lease_before["spec"]["renewTime"], lease_after["spec"]["renewTime"], "the lease is still renewed");
}

#[test]
fn insecure_http_serves_plain_http_for_development() {
    let server = Server::start_with(&["--insecure-http"]);
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
    assert!(kubeconfig.contains("server: http://"), "{kubeconfig}");
    assert!(server.kubectl_ok(&["get", "namespaces"]).contains("default"));
    let log = std::fs::read_dir(server.data_dir())
        .expect("dir")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("server-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .unwrap_or_default();
    assert!(log.contains("--insecure-http"), "a warning names the mode: {log}");
}

#[test]
fn upstream_default_roles_aggregate_and_whoami_names_the_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start();
    let eve = user_kubeconfig(&server, dir.path(), "eve", &["team-a"], 3600);
    let can_i = |args: &[&str]| stdout(&kubectl_as(&eve, &[&["auth", "can-i"], args].concat())).trim().to_string();
    let bind = |name: &str, role: &str| {
        server.apply_stdin(
            &format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}, namespace: default}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {role}}}\n\
                 subjects: [{{kind: User, apiGroup: rbac.authorization.k8s.io, name: eve}}]\n"
            ),
            &[],
        )
    };
    assert_eq!(can_i(&["list", "pods"]), "no");

    // `view` holds what the system:aggregate-to-view roles hold: reads, but not Secrets.
    bind("eve-views", "view");
    assert_eq!(can_i(&["list", "pods"]), "yes");
    assert_eq!(can_i(&["watch", "jobs.batch"]), "yes");
    assert_eq!(can_i(&["list", "campaigns.axle.dev"]), "yes");
    assert_eq!(can_i(&["get", "secrets"]), "no");
    assert_eq!(can_i(&["create", "pods"]), "no");
    assert_eq!(can_i(&["list", "pods", "-n", "kube-system"]), "no");

    // A role labelled to join `view` is aggregated into it, as a CRD's roles are.
    server.apply_stdin(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}]
"#,
        &[],
    );
    server.apply_stdin(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: widget-reader\n  labels: {rbac.authorization.k8s.io/aggregate-to-view: \"true\"}\n\
         rules: [{apiGroups: [example.com], resources: [widgets], verbs: [get, list, watch]}]\n",
        &[],
    );
    wait_for("view to aggregate widget-reader", Duration::from_secs(10), || {
        server.kubectl_ok(&["get", "clusterrole", "view", "-o", "jsonpath={.rules}"]).contains("widgets").then_some(())
    });
    assert_eq!(can_i(&["list", "widgets.example.com"]), "yes");
    // ...and `edit` and `admin`, which aggregate `view`, get it too.
    let admin_rules = server.kubectl_ok(&["get", "clusterrole", "admin", "-o", "jsonpath={.rules}"]);
    assert!(admin_rules.contains("widgets") && admin_rules.contains("rolebindings"), "{admin_rules}");
    server.kubectl_ok(&["delete", "clusterrole", "widget-reader"]);
    wait_for("view to drop widget-reader", Duration::from_secs(10), || {
        (!server.kubectl_ok(&["get", "clusterrole", "view", "-o", "jsonpath={.rules}"]).contains("widgets"))
            .then_some(())
    });

    // `edit` writes workloads and reads Secrets; `cluster-admin` is bound to system:masters.
    bind("eve-edits", "edit");
    assert_eq!(can_i(&["create", "pods"]), "yes");
    assert_eq!(can_i(&["create", "pods/exec"]), "yes");
    assert_eq!(can_i(&["get", "secrets"]), "yes");
    assert_eq!(can_i(&["create", "rolebindings"]), "no", "only admin manages roles");
    let masters =
        server.kubectl_ok(&["get", "clusterrolebinding", "cluster-admin", "-o", "jsonpath={.subjects[0].name}"]);
    assert_eq!(masters, "system:masters");

    // `kubectl auth whoami` (SelfSubjectReview), old and new.
    for release in ["1.27", "1.33"] {
        let out = Command::new(support::kubectl_release(release))
            .arg("--kubeconfig")
            .arg(&eve)
            .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"])
            .output()
            .expect("kubectl runs");
        assert_eq!(stdout(&out), r#"eve ["team-a","system:authenticated"]"#, "{release}: {}", stderr(&out));
    }
}
