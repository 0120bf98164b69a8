//! The official JavaScript client (`@kubernetes/client-node` 1.x, installed into `tests/js` by
//! `.ci/run`) against a real server, agent and pod: list, create, watch, an informer, exec
//! with its exit status.

mod support;

use serde_json::json;
use std::process::Command;
use support::{busybox_layout, import, Agent, Server};

#[test]
fn the_javascript_client_lists_watches_informs_and_execs() {
    let server = Server::start();
    let _agent = Agent::start(&server, "hpc-1", 1);
    let layout = busybox_layout(server.data_dir());
    import(&server, &layout, "busybox:1");
    server.create_pod(&json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "box"},
        "spec": {"nodeName": "hpc-1", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": "busybox:1", "command": ["sleep", "3600"]}]},
    }));
    server.kubectl_ok(&["wait", "--for=condition=Ready", "pod/box", "--timeout=60s"]);
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/js");
    assert!(scripts.join("node_modules/@kubernetes/client-node").is_dir(), "tests/js is installed (bash .ci/run)");
    let out = Command::new("node")
        .arg(scripts.join("client_node.mjs"))
        .env("KUBECONFIG", &server.kubeconfig)
        .output()
        .expect("node runs (Node.js 20)");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        printed.lines().collect::<Vec<_>>(),
        ["list: true", "watch: ADDED", "informer: box", "exec: from-js Failure NonZeroExitCode 3"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
