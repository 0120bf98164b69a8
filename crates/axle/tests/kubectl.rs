//! The real `kubectl` drives a real `axle server`: the commands Kubernetes users type work
//! against the car as they do against a cluster.

mod support;

use std::process::Command;
use std::time::Duration;
use support::{spawn_with_lines, wait_for, Server};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        command: ["httpd", "-f", "-p", "8080"]
        ports:
        - containerPort: 8080
"#;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: nav
  labels: {app: nav, tier: hmi}
spec:
  containers:
  - name: nav
    image: busybox:1.36
    command: ["sleep", "3600"]
"#;

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              colour: {type: string, enum: [red, green]}
"#;

fn configmap(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: \"{value}\"\n")
}

#[test]
fn kubectl_apply_creates_then_updates_through_client_side_apply() {
    let server = Server::start();
    let out = server.apply_stdin(&DEPLOYMENT.replace("REPLICAS", "2"), &[]);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert_eq!(server.kubectl_ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]), "2");
    let out = server.apply_stdin(&DEPLOYMENT.replace("REPLICAS", "3"), &[]);
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert_eq!(server.kubectl_ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]), "3");
    assert_eq!(server.kubectl_ok(&["get", "deployment", "web", "-o", "jsonpath={.metadata.generation}"]), "2");
    let out = server.apply_stdin(&DEPLOYMENT.replace("REPLICAS", "3"), &[]);
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    let annotation = server.kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        r#"jsonpath={.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}"#,
    ]);
    assert!(annotation.contains("\"replicas\":3"), "{annotation}");
}

#[test]
fn kubectl_apply_server_side_creates_updates_and_records_ownership() {
    let server = Server::start();
    let out = server.apply_stdin(&DEPLOYMENT.replace("REPLICAS", "1"), &["--server-side"]);
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");
    let out = server.apply_stdin(&DEPLOYMENT.replace("REPLICAS", "4"), &["--server-side"]);
    assert!(out.contains("serverside-applied"), "{out}");
    assert_eq!(server.kubectl_ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]), "4");
    let managers = server.kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(managers.contains("kubectl"), "{managers}");
    // Another manager taking a field the first one owns conflicts, unless forced.
    let other = DEPLOYMENT.replace("REPLICAS", "5");
    let out =
        server.kubectl_with_stdin(&["apply", "--server-side", "--field-manager", "other", "-f", "-"], Some(&other));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("conflict"), "{stderr}");
    let out = server.kubectl_with_stdin(
        &["apply", "--server-side", "--field-manager", "other", "--force-conflicts", "-f", "-"],
        Some(&other),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.kubectl_ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]), "5");
}

#[test]
fn kubectl_get_prints_tables_wide_yaml_and_jsonpath() {
    let server = Server::start();
    server.apply_stdin(POD, &[]);
    let table = server.kubectl_ok(&["get", "pods"]);
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..4], ["nav", "0/1", "Pending", "0"]);
    let wide = server.kubectl_ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.lines().next().unwrap_or("").contains("NODE"), "{wide}");
    let labels = server.kubectl_ok(&["get", "pods", "--show-labels", "-l", "tier=hmi"]);
    assert!(labels.contains("app=nav,tier=hmi"), "{labels}");
    let yaml = server.kubectl_ok(&["get", "pod", "nav", "-o", "yaml"]);
    assert!(yaml.contains("kind: Pod") && yaml.contains("restartPolicy: Always"), "{yaml}");
    assert_eq!(server.kubectl_ok(&["get", "pod", "nav", "-o", "jsonpath={.spec.containers[0].image}"]), "busybox:1.36");
    let all = server.kubectl_ok(&["get", "pods", "-A"]);
    assert!(all.lines().next().unwrap_or("").starts_with("NAMESPACE"), "{all}");
    let namespaces = server.kubectl_ok(&["get", "namespaces"]);
    for ns in ["default", "kube-system"] {
        assert!(namespaces.contains(ns), "{namespaces}");
    }
}

#[test]
fn kubectl_get_watch_sees_changes_made_by_another_client() {
    let server = Server::start();
    let (mut watch, rx) = spawn_with_lines(Command::new("kubectl").arg("--kubeconfig").arg(&server.kubeconfig).args([
        "get",
        "configmaps",
        "-w",
        "--no-headers",
    ]));
    std::thread::sleep(Duration::from_millis(500));
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"seen-by-watch"},"data":{"a":"1"}}"#;
    let (status, _) = server.http("POST", "/api/v1/namespaces/default/configmaps", Some(("application/json", body)));
    assert_eq!(status, 201);
    let line = wait_for("the watch to print the new configmap", Duration::from_secs(10), || {
        rx.try_recv().ok().filter(|l| l.contains("seen-by-watch"))
    });
    assert!(line.split_whitespace().nth(1) == Some("1"), "DATA column counts 1 key: {line}");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn kubectl_describe_shows_the_pod_and_its_events() {
    let server = Server::start();
    server.apply_stdin(POD, &[]);
    let uid = server.kubectl_ok(&["get", "pod", "nav", "-o", "jsonpath={.metadata.uid}"]);
    let event = format!(
        r#"{{"apiVersion":"v1","kind":"Event","metadata":{{"name":"nav.1"}},"involvedObject":{{"kind":"Pod","namespace":"default","name":"nav","uid":"{uid}"}},"reason":"Scheduled","message":"placed on hpc-1","type":"Normal","firstTimestamp":"2026-01-01T00:00:00Z","lastTimestamp":"2026-01-01T00:00:00Z","count":1,"source":{{"component":"axle"}}}}"#
    );
    let (status, body) = server.http("POST", "/api/v1/namespaces/default/events", Some(("application/json", &event)));
    assert_eq!(status, 201, "{body}");
    let described = server.kubectl_ok(&["describe", "pod", "nav"]);
    for expected in ["Name:", "nav", "busybox:1.36", "Scheduled", "placed on hpc-1"] {
        assert!(described.contains(expected), "describe lacks {expected:?}:\n{described}");
    }
}

#[test]
fn kubectl_delete_removes_the_object() {
    let server = Server::start();
    server.apply_stdin(&configmap("gone", "b"), &[]);
    let out = server.kubectl_ok(&["delete", "configmap", "gone"]);
    assert!(out.contains("configmap \"gone\" deleted"), "{out}");
    let err = server.kubectl_err(&["get", "configmap", "gone"]);
    assert!(err.contains("Error from server (NotFound): configmaps \"gone\" not found"), "{err}");
}

#[test]
fn kubectl_serves_custom_resources_once_their_crd_exists() {
    let server = Server::start();
    server.apply_stdin(CRD, &[]);
    let crds = server.kubectl_ok(&["get", "crd"]);
    assert!(crds.contains("widgets.example.com"), "{crds}");
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n  colour: red\n";
    let out = server.apply_stdin(widget, &[]);
    assert!(out.contains("widget.example.com/w1 created"), "{out}");
    let table = server.kubectl_ok(&["get", "widgets"]);
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "AGE"], "{table}");
    assert!(table.lines().nth(1).unwrap_or("").starts_with("w1"), "{table}");
    assert!(server.kubectl_ok(&["get", "wd", "w1", "-o", "jsonpath={.spec.size}"]) == "3");
    // Schema validation: a type error and a violated minimum are 422s naming the field.
    let bad = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  size: 0\n  colour: blue\n";
    let out = server.kubectl_with_stdin(&["apply", "-f", "-"], Some(bad));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("is invalid")
            && stderr.contains("spec.size")
            && stderr.contains("spec.colour"),
        "{stderr}"
    );
    // Strict field validation rejects unknown fields.
    let unknown = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w3\nspec:\n  size: 2\n  shape: round\n";
    let out = server.kubectl_with_stdin(&["apply", "-f", "-"], Some(unknown));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("unknown field") && stderr.contains("spec.shape"), "{stderr}");
    let explained = server.kubectl_ok(&["explain", "widget.spec"]);
    assert!(explained.contains("size"), "{explained}");
}

#[test]
fn kubectl_explain_documents_builtin_kinds() {
    let server = Server::start();
    let out = server.kubectl_ok(&["explain", "pod.spec"]);
    assert!(out.contains("KIND:") && out.contains("Pod"), "{out}");
    assert!(out.contains("containers") && out.contains("restartPolicy"), "{out}");
    let out = server.kubectl_ok(&["explain", "deployment.spec.strategy"]);
    assert!(out.contains("rollingUpdate"), "{out}");
}

#[test]
fn kubectl_reports_errors_as_against_kubernetes() {
    let server = Server::start();
    // Invalid object: 422 with one line per cause.
    let bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers: []\n";
    let out = server.kubectl_with_stdin(&["apply", "-f", "-"], Some(bad));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("The Pod \"bad\" is invalid")
            && stderr.contains("spec.containers: Required value"),
        "{stderr}"
    );
    // Unknown field, strict (kubectl's default validation).
    let typo = POD.replace("command:", "comand:");
    let out = server.kubectl_with_stdin(&["apply", "-f", "-"], Some(&typo));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("unknown field \"spec.containers[0].comand\""), "{stderr}");
    // Unknown kind.
    let unknown = "apiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: x\n";
    let out = server.kubectl_with_stdin(&["apply", "-f", "-"], Some(unknown));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("no matches for kind \"Frobnicator\""), "{stderr}");
    // Conflict: replacing with a stale resourceVersion.
    server.apply_stdin(&configmap("cfg", "1"), &[]);
    let stale = server.kubectl_ok(&["get", "configmap", "cfg", "-o", "json"]);
    server.kubectl_ok(&["patch", "configmap", "cfg", "-p", r#"{"data":{"a":"2"}}"#]);
    let out = server.kubectl_with_stdin(&["replace", "-f", "-"], Some(&stale));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("the object has been modified"), "{stderr}");
    // Already exists.
    let out = server.kubectl_with_stdin(&["create", "-f", "-"], Some(&configmap("cfg", "1")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("AlreadyExists"), "{stderr}");
    // Missing namespace.
    let out = server.kubectl_with_stdin(&["apply", "-n", "nowhere", "-f", "-"], Some(&configmap("x", "1")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("namespaces \"nowhere\" not found"), "{stderr}");
}

#[test]
fn kubectl_rejects_dependency_cycles_at_admission() {
    let server = Server::start();
    let pod = |name: &str, dep: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  annotations:\n    axle.dev/depends-on: \"{dep}=Ready\"\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n")
    };
    server.apply_stdin(&pod("nav", "map"), &[]);
    let out = server.kubectl_with_stdin(&["apply", "-f", "-"], Some(&pod("map", "nav")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("dependency cycle map -> nav -> map"), "{stderr}");
}

#[test]
fn kubectl_patch_scale_and_label_work() {
    let server = Server::start();
    server.apply_stdin(&DEPLOYMENT.replace("REPLICAS", "1"), &[]);
    server.kubectl_ok(&["scale", "deployment", "web", "--replicas=3"]);
    assert_eq!(server.kubectl_ok(&["get", "deployment", "web", "-o", "jsonpath={.spec.replicas}"]), "3");
    server.kubectl_ok(&["label", "deployment", "web", "car=demo"]);
    assert_eq!(server.kubectl_ok(&["get", "deployment", "-l", "car=demo", "-o", "name"]).trim(), "deployment.apps/web");
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
    ]);
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"annotations":{"note":"x"}}}"#,
    ]);
    server.kubectl_ok(&["set", "image", "deployment/web", "web=busybox:1.37"]);
    let image = server.kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.annotations.note}",
    ]);
    assert_eq!(image, "2 busybox:1.37 x");
}

#[test]
fn server_shuts_down_cleanly_on_sigterm() {
    let mut server = Server::start();
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn kubectl_generators_old_and_new_send_protobuf_and_create_what_they_say() {
    let server = Server::start();
    for release in ["1.27", "1.33"] {
        let ns = format!("gen-{}", release.replace('.', "-"));
        let run = |args: &[&str]| server.kubectl_release_ok(release, args);
        run(&["create", "namespace", &ns]);
        run(&["create", "deployment", "web", "--image=busybox:1.36", "--replicas=0", "--port=8080", "-n", &ns]);
        run(&["create", "configmap", "settings", "--from-literal=speed=limited", "-n", &ns]);
        run(&["create", "secret", "generic", "keys", "--from-literal=pin=1234", "-n", &ns]);
        run(&["create", "serviceaccount", "tester", "-n", &ns]);
        run(&["create", "role", "reader", "--verb=get,list", "--resource=pods", "-n", &ns]);
        run(&["create", "rolebinding", "reader", "--role=reader", &format!("--serviceaccount={ns}:tester"), "-n", &ns]);
        run(&["create", "clusterrole", &format!("{ns}-nodes"), "--verb=get", "--resource=nodes"]);
        run(&[
            "create",
            "clusterrolebinding",
            &format!("{ns}-nodes"),
            &format!("--clusterrole={ns}-nodes"),
            "--user=alice",
        ]);
        run(&["create", "service", "clusterip", "svc", "--tcp=80:8080", "-n", &ns]);
        run(&["expose", "deployment", "web", "--port=80", "--name=web-svc", "-n", &ns]);
        run(&["run", "probe", "--image=busybox:1.36", "-n", &ns, "--", "sleep", "60"]);
        assert!(run(&["create", "token", "tester", "-n", &ns]).starts_with("eyJ"));

        let get = |what: &str, path: &str| run(&["get", what, "-n", &ns, "-o", &format!("jsonpath={path}")]);
        assert_eq!(
            get(
                "deployment/web",
                "{.spec.replicas} {.spec.strategy.type} {.spec.template.spec.containers[0].ports[0].containerPort}"
            ),
            "0 RollingUpdate 8080"
        );
        assert_eq!(get("configmap/settings", "{.data.speed}"), "limited");
        assert_eq!(get("secret/keys", "{.data.pin}"), "MTIzNA==");
        assert_eq!(get("rolebinding/reader", "{.roleRef.name} {.subjects[0].name}"), "reader tester");
        assert_eq!(
            get("service/web-svc", "{.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.selector.app}"),
            "80 80 web"
        );
        assert_eq!(get("pod/probe", "{.spec.containers[0].args}"), r#"["sleep","60"]"#);
        assert_eq!(
            run(&["get", "clusterrolebinding", &format!("{ns}-nodes"), "-o", "jsonpath={.subjects[0].name}"]),
            "alice"
        );
    }
}
