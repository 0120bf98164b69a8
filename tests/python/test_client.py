"""The official Python `kubernetes` client drives a real `axle server`.

Run by `crates/axle/tests/python_client.rs`, which starts the server and passes its kubeconfig
in AXLE_KUBECONFIG.
"""

import os
import threading

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "default"


@pytest.fixture(scope="module")
def api_client():
    config.load_kube_config(config_file=os.environ["AXLE_KUBECONFIG"])
    return client.ApiClient()


def pod(name, labels=None):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels or {"app": name}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36", command=["sleep", "60"])]),
    )


def test_version_and_discovery(api_client):
    version = client.VersionApi(api_client).get_code()
    assert version.major == "1"
    groups = [g.name for g in client.ApisApi(api_client).get_api_versions().groups]
    assert "apps" in groups


def test_pods_create_list_patch_delete(api_client):
    core = client.CoreV1Api(api_client)
    created = core.create_namespaced_pod(NS, pod("py-pod", {"app": "py", "tier": "a"}))
    assert created.metadata.uid and created.status.phase == "Pending"
    assert created.spec.containers[0].image_pull_policy == "IfNotPresent"
    listed = core.list_namespaced_pod(NS, label_selector="app=py")
    assert [p.metadata.name for p in listed.items] == ["py-pod"]
    patched = core.patch_namespaced_pod("py-pod", NS, {"metadata": {"labels": {"tier": "b"}}})
    assert patched.metadata.labels["tier"] == "b"
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    with pytest.raises(ApiException) as conflict:
        stale = created
        stale.metadata.labels = {"app": "py", "tier": "c"}
        core.replace_namespaced_pod("py-pod", NS, stale)
    assert conflict.value.status == 409
    deleted = core.delete_namespaced_pod("py-pod", NS)
    assert deleted.metadata.name == "py-pod"
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("py-pod", NS)
    assert missing.value.status == 404


def test_invalid_pod_is_422_with_causes(api_client):
    core = client.CoreV1Api(api_client)
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": {"containers": []}}
    with pytest.raises(ApiException) as invalid:
        core.create_namespaced_pod(NS, bad)
    assert invalid.value.status == 422
    assert "spec.containers" in invalid.value.body


def test_deployments_create_scale_patch_and_list(api_client):
    apps = client.AppsV1Api(api_client)
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py-web"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="busybox:1.36")]),
            ),
        ),
    )
    created = apps.create_namespaced_deployment(NS, body)
    assert created.spec.strategy.type == "RollingUpdate"
    apps.patch_namespaced_deployment_scale("py-web", NS, {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("py-web", NS).spec.replicas == 3
    apps.patch_namespaced_deployment("py-web", NS, [{"op": "replace", "path": "/spec/replicas", "value": 2}])
    names = [d.metadata.name for d in apps.list_deployment_for_all_namespaces().items]
    assert "py-web" in names
    status = apps.delete_namespaced_deployment("py-web", NS)
    assert status["status"] == "Success"  # client 37 returns deletes as plain objects


def test_watch_sees_events_in_order(api_client):
    core = client.CoreV1Api(api_client)
    start = core.list_namespaced_config_map(NS).metadata.resource_version
    seen = []

    def watcher():
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_config_map, NS, resource_version=start, timeout_seconds=10):
            seen.append((event["type"], event["object"].metadata.name))
            if len(seen) == 3:
                w.stop()

    thread = threading.Thread(target=watcher)
    thread.start()
    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm"), data={"a": "1"}))
    core.patch_namespaced_config_map("py-cm", NS, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("py-cm", NS)
    thread.join(timeout=20)
    assert seen == [("ADDED", "py-cm"), ("MODIFIED", "py-cm"), ("DELETED", "py-cm")]


def test_watch_from_expired_version_raises_410(api_client):
    core = client.CoreV1Api(api_client)
    # The server keeps 50 changes (--change-log-capacity 50): push version 1 out of the log.
    for i in range(60):
        core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"churn-{i}")))
    w = watch.Watch()
    with pytest.raises(ApiException) as gone:
        for _ in w.stream(core.list_namespaced_config_map, NS, resource_version="1", timeout_seconds=5):
            pass
    assert gone.value.status == 410


def test_custom_objects(api_client):
    ext = client.ApiextensionsV1Api(api_client)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gizmos.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"level": {"type": "integer"}}}}}},
            }],
        },
    }
    ext.create_custom_resource_definition(crd)
    custom = client.CustomObjectsApi(api_client)
    obj = {"apiVersion": "example.com/v1", "kind": "Gizmo", "metadata": {"name": "g1"}, "spec": {"level": 1}}
    custom.create_namespaced_custom_object("example.com", "v1", NS, "gizmos", obj)
    custom.patch_namespaced_custom_object("example.com", "v1", NS, "gizmos", "g1", {"spec": {"level": 5}})
    got = custom.get_namespaced_custom_object("example.com", "v1", NS, "gizmos", "g1")
    assert got["spec"]["level"] == 5
    listed = custom.list_namespaced_custom_object("example.com", "v1", NS, "gizmos")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["g1"]
    w = watch.Watch()
    events = [e["type"] for e in w.stream(custom.list_namespaced_custom_object, "example.com", "v1", NS, "gizmos", timeout_seconds=2)]
    assert events == ["ADDED"]
    custom.delete_namespaced_custom_object("example.com", "v1", NS, "gizmos", "g1")
    assert custom.list_namespaced_custom_object("example.com", "v1", NS, "gizmos")["items"] == []


def test_typed_delete_of_a_service_returns_the_service(api_client):
    core = client.CoreV1Api(api_client)
    body = client.V1Service(
        metadata=client.V1ObjectMeta(name="py-svc"),
        spec=client.V1ServiceSpec(selector={"app": "py"}, ports=[client.V1ServicePort(port=80, target_port=8080)]),
    )
    core.create_namespaced_service(NS, body)
    deleted = core.delete_namespaced_service("py-svc", NS)
    assert isinstance(deleted, client.V1Service) and deleted.metadata.name == "py-svc"
    account = core.create_namespaced_service_account(NS, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="py-sa")))
    assert account.metadata.name == "py-sa"
    deleted = core.delete_namespaced_service_account("py-sa", NS)
    assert isinstance(deleted, client.V1ServiceAccount) and deleted.metadata.name == "py-sa"


def test_errors_are_complete_status_objects(api_client):
    core = client.CoreV1Api(api_client)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("py-missing", NS)
    assert missing.value.status == 404
    assert missing.value.body.endswith("\n")
    assert missing.value.body.startswith('{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure"')
    assert '"details":{"name":"py-missing","kind":"configmaps"}' in missing.value.body
