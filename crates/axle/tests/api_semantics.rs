//! API semantics over raw HTTP against a real server: status errors for bad input, finalizers,
//! cascading deletion, namespace termination, generateName, watch fan-out and shutdown.

mod support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;
use support::{http, wait_for, Server};

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn post(server: &Server, path: &str, obj: &Value) -> (u16, Value) {
    let (status, body) = server.http("POST", path, Some(("application/json", &obj.to_string())));
    (status, parse(&body))
}

fn configmap(name: &str, meta_extra: Value) -> Value {
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}});
    if let (Some(meta), Some(extra)) = (cm["metadata"].as_object_mut(), meta_extra.as_object()) {
        meta.extend(extra.clone());
    }
    cm
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[test]
fn bad_input_gets_kubernetes_status_errors() {
    let server = Server::start();
    let (status, body) = server.http("POST", CMS, Some(("application/json", "{not json")));
    let body = parse(&body);
    assert_eq!((status, body["kind"].as_str(), body["reason"].as_str()), (400, Some("Status"), Some("BadRequest")));
    let (status, body) = server.http("POST", CMS, Some(("application/yaml", "a: [unclosed")));
    assert_eq!((status, parse(&body)["code"].as_u64()), (400, Some(400)));
    let (status, body) = post(&server, CMS, &configmap("Not_Valid", json!({})));
    assert_eq!(status, 422);
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");
    let (status, body) = post(
        &server,
        "/api/v1/namespaces/default/pods",
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}),
    );
    assert_eq!(status, 422);
    assert_eq!(body["details"]["kind"], "Pod");
    assert_eq!(body["details"]["causes"][0]["reason"], "FieldValueRequired");
    let (status, body) = post(
        &server,
        &format!("{CMS}?fieldValidation=Strict"),
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dta": {}}),
    );
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap_or("").contains("unknown field \"dta\""), "{body}");
    let (status, body) = server.http("GET", "/api/v1/namespaces/default/widgets", None);
    assert_eq!((status, parse(&body)["reason"].as_str()), (404, Some("NotFound")));
    let (status, _) = server.http("PATCH", &format!("{CMS}/x"), Some(("text/plain", "{}")));
    assert_eq!(status, 415);
    // Nothing of the rejected requests was stored.
    let (_, list) = server.http("GET", CMS, None);
    assert_eq!(parse(&list)["items"], json!([]));
}

#[test]
fn generate_name_gives_unique_names() {
    let server = Server::start();
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let (status, obj) =
            post(&server, CMS, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}));
        assert_eq!(status, 201);
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
        names.insert(name);
    }
    assert_eq!(names.len(), 5);
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let server = Server::start();
    let (status, _) = post(&server, CMS, &configmap("held", json!({"finalizers": ["example.com/cleanup"]})));
    assert_eq!(status, 201);
    let (status, body) = server.http("DELETE", &format!("{CMS}/held"), None);
    assert_eq!(status, 202, "{body}");
    let (_, body) = server.http("GET", &format!("{CMS}/held"), None);
    let held = parse(&body);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let patch = json!({"metadata": {"finalizers": null}}).to_string();
    let (status, _) = server.http("PATCH", &format!("{CMS}/held"), Some(("application/merge-patch+json", &patch)));
    assert_eq!(status, 200);
    let (status, _) = server.http("GET", &format!("{CMS}/held"), None);
    assert_eq!(status, 404, "the last finalizer gone, the object is gone");
}

#[test]
fn deleting_an_owner_cascades_to_its_dependents_unless_orphaned() {
    let server = Server::start();
    let (_, owner) = post(&server, CMS, &configmap("owner", json!({})));
    let reference = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"], "controller": true}]);
    post(&server, CMS, &configmap("child", json!({"ownerReferences": reference})));
    let (status, _) = server.http("DELETE", &format!("{CMS}/owner"), None);
    assert_eq!(status, 200);
    wait_for("the dependent to be collected", Duration::from_secs(10), || {
        (server.http("GET", &format!("{CMS}/child"), None).0 == 404).then_some(())
    });
    let (_, owner) = post(&server, CMS, &configmap("owner2", json!({})));
    let reference =
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": owner["metadata"]["uid"]}]);
    post(&server, CMS, &configmap("orphan", json!({"ownerReferences": reference})));
    let options = json!({"propagationPolicy": "Orphan"}).to_string();
    let (status, _) = server.http("DELETE", &format!("{CMS}/owner2"), Some(("application/json", &options)));
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = server.http("GET", &format!("{CMS}/orphan"), None);
    assert_eq!(status, 200);
    assert_eq!(parse(&body)["metadata"]["ownerReferences"], json!([]));
}

#[test]
fn deleting_a_namespace_removes_its_contents_then_itself() {
    let server = Server::start();
    let (status, _) = post(
        &server,
        "/api/v1/namespaces",
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}}),
    );
    assert_eq!(status, 201);
    for name in ["a", "b"] {
        let (status, _) = post(&server, "/api/v1/namespaces/doomed/configmaps", &configmap(name, json!({})));
        assert_eq!(status, 201);
    }
    let (status, body) = server.http("DELETE", "/api/v1/namespaces/doomed", None);
    assert_eq!(status, 202, "{body}");
    assert_eq!(parse(&body)["status"]["phase"], "Terminating");
    wait_for("the namespace to disappear", Duration::from_secs(10), || {
        (server.http("GET", "/api/v1/namespaces/doomed", None).0 == 404).then_some(())
    });
    let (_, list) = server.http("GET", "/api/v1/configmaps", None);
    assert!(parse(&list)["items"].as_array().expect("items").iter().all(|cm| cm["metadata"]["namespace"] != "doomed"));
}

#[test]
fn fifty_watchers_see_every_event_in_order_while_writes_run() {
    let server = Server::start();
    let (_, list) = server.http("GET", CMS, None);
    let rv = parse(&list)["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    let writes = 200;
    let mut watchers = Vec::new();
    for _ in 0..50 {
        let (addr, rv) = (server.addr.clone(), rv.clone());
        watchers.push(std::thread::spawn(move || {
            let mut stream = support::connect(&addr, None).expect("connect");
            write!(stream, "GET {CMS}?watch=true&resourceVersion={rv} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
            let mut seen = Vec::new();
            // Chunk-size lines sit between the events; only the JSON objects are events.
            for line in BufReader::new(stream).lines().map_while(Result::ok).filter(|l| l.starts_with('{')) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    seen.push(
                        event["object"]["data"]["i"].as_str().unwrap_or("").parse::<usize>().unwrap_or(usize::MAX),
                    );
                    if seen.len() == writes {
                        break;
                    }
                }
            }
            seen
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..writes {
        let (status, _) = post(
            &server,
            CMS,
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("e{i}")}, "data": {"i": i.to_string()}}),
        );
        assert_eq!(status, 201);
    }
    let expected: Vec<usize> = (0..writes).collect();
    for watcher in watchers {
        let seen = watcher.join().expect("watcher");
        assert_eq!(seen.len(), expected.len(), "{seen:?}");
        assert_eq!(seen, expected);
    }
}

#[test]
fn watch_with_initial_events_ends_them_with_a_bookmark() {
    let server = Server::start();
    post(&server, CMS, &configmap("one", json!({})));
    let path = format!("{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1");
    let (status, body) = server.http("GET", &path, None);
    assert_eq!(status, 200);
    let events: Vec<Value> = body.lines().map(parse).collect();
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    let (status, _) = server.http("GET", &format!("{CMS}?watch=true&sendInitialEvents=true"), None);
    assert_eq!(status, 422, "sendInitialEvents without NotOlderThan is refused so clients fall back");
}

#[test]
fn shutdown_ends_open_watches_cleanly() {
    let mut server = Server::start();
    let mut stream = support::connect(&server.addr, Some(Duration::from_secs(5))).expect("connect");
    write!(stream, "GET {CMS}?watch=true HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    stream.flush().expect("send");
    std::thread::sleep(Duration::from_millis(200));
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).expect("the stream ends, it is not reset");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("0\r\n\r\n"),
        "chunked stream closed with its last chunk: {text:?}"
    );
}

#[test]
fn nodes_print_status_roles_and_version() {
    let server = Server::start();
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "hpc-1", "labels": {"node-role.kubernetes.io/head-unit": ""}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}],
                   "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "nodeInfo": {"kubeletVersion": "v1.32.0-axle", "osImage": "Debian", "kernelVersion": "6.1", "containerRuntimeVersion": "runc://1.1.5",
                                "architecture": "amd64", "bootID": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux", "systemUUID": ""}}});
    let (status, _) = post(&server, "/api/v1/nodes", &node);
    assert_eq!(status, 201);
    let table = server.kubectl_ok(&["get", "nodes", "-o", "wide"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(&row[..3], ["hpc-1", "Ready", "head-unit"], "{table}");
    assert!(table.contains("v1.32.0-axle") && table.contains("127.0.0.1"), "{table}");
    let _ = http(&server.addr, "GET", "/version", None);
}
