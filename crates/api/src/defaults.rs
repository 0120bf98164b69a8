//! Server-side defaults, filled the way Kubernetes fills them, so that `kubectl describe`,
//! `rollout history` and strictly-typed clients (Python) see complete objects.

use serde_json::{json, Map, Value};

/// Sets `obj[key] = value` when the key is missing or null.
fn default_field(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if obj.get(key).is_none_or(Value::is_null) {
        obj.insert(key.to_string(), value);
    }
}

/// Applies the defaults of `kind` to a new or updated object.
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            default_pod_spec(&mut obj["spec"]);
            if let Some(o) = obj.as_object_mut() {
                default_field(o, "status", json!({}));
            }
            let qos = qos_class(&obj["spec"]);
            if let Some(status) = obj["status"].as_object_mut() {
                default_field(status, "phase", json!("Pending"));
                default_field(status, "qosClass", json!(qos));
            }
        }
        "Deployment" => {
            if let Some(spec) = obj["spec"].as_object_mut() {
                default_field(spec, "replicas", json!(1));
                default_field(spec, "revisionHistoryLimit", json!(10));
                default_field(spec, "progressDeadlineSeconds", json!(600));
                default_field(spec, "strategy", json!({}));
                if let Some(strategy) = spec["strategy"].as_object_mut() {
                    // `strategy: {}` is what typed clients send for "not chosen".
                    default_field(strategy, "type", json!("RollingUpdate"));
                }
                if spec["strategy"]["type"].as_str() == Some("RollingUpdate") {
                    if let Some(strategy) = spec["strategy"].as_object_mut() {
                        default_field(strategy, "rollingUpdate", json!({}));
                    }
                    if let Some(ru) = spec["strategy"]["rollingUpdate"].as_object_mut() {
                        default_field(ru, "maxUnavailable", json!("25%"));
                        default_field(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            default_template(obj);
            ensure_status(obj);
        }
        "Job" => {
            crate::batch::default_job_spec(&mut obj["spec"]);
            default_template(obj);
        }
        "CronJob" => {
            if let Some(spec) = obj["spec"].as_object_mut() {
                default_field(spec, "concurrencyPolicy", json!("Allow"));
                default_field(spec, "suspend", json!(false));
                default_field(spec, "successfulJobsHistoryLimit", json!(3));
                default_field(spec, "failedJobsHistoryLimit", json!(1));
            }
            let job_spec = &mut obj["spec"]["jobTemplate"]["spec"];
            if job_spec.is_object() {
                crate::batch::default_job_spec(job_spec);
                default_pod_spec(&mut job_spec["template"]["spec"]);
            }
        }
        "ReplicaSet" => {
            if let Some(spec) = obj["spec"].as_object_mut() {
                default_field(spec, "replicas", json!(1));
            }
            default_template(obj);
            ensure_status(obj);
            if let Some(status) = obj["status"].as_object_mut() {
                default_field(status, "replicas", json!(0));
            }
        }
        "DaemonSet" => {
            if let Some(spec) = obj["spec"].as_object_mut() {
                default_field(spec, "revisionHistoryLimit", json!(10));
                default_field(spec, "updateStrategy", json!({}));
                if let Some(strategy) = spec["updateStrategy"].as_object_mut() {
                    default_field(strategy, "type", json!("RollingUpdate"));
                    if strategy["type"] == "RollingUpdate" {
                        default_field(strategy, "rollingUpdate", json!({"maxUnavailable": 1, "maxSurge": 0}));
                    }
                }
            }
            default_template(obj);
            ensure_status(obj);
            if let Some(status) = obj["status"].as_object_mut() {
                for key in ["currentNumberScheduled", "desiredNumberScheduled", "numberMisscheduled", "numberReady"] {
                    default_field(status, key, json!(0));
                }
            }
        }
        "Service" => default_service(obj),
        "Namespace" => {
            if let Some(o) = obj.as_object_mut() {
                default_field(o, "spec", json!({"finalizers": ["kubernetes"]}));
                default_field(o, "status", json!({"phase": "Active"}));
            }
        }
        "Secret" => {
            if let Some(o) = obj.as_object_mut() {
                default_field(o, "type", json!("Opaque"));
                // `stringData` is write-only: merged into `data` (base64), winning on conflict.
                if let Some(Value::Object(strings)) = o.remove("stringData") {
                    use base64::Engine as _;
                    let data = o.entry("data").or_insert_with(|| json!({}));
                    if let Some(data) = data.as_object_mut() {
                        for (key, value) in strings {
                            let text = value.as_str().unwrap_or_default();
                            data.insert(key, json!(base64::engine::general_purpose::STANDARD.encode(text)));
                        }
                    }
                }
            }
        }
        "Node" => {
            if let Some(o) = obj.as_object_mut() {
                default_field(o, "spec", json!({}));
                default_field(o, "status", json!({}));
            }
        }
        "Event" => {
            if let Some(o) = obj.as_object_mut() {
                default_field(o, "type", json!("Normal"));
                default_field(o, "count", json!(1));
            }
        }
        "CustomResourceDefinition" => {
            if let Some(o) = obj.as_object_mut() {
                default_field(o, "status", json!({}));
            }
        }
        _ => {}
    }
}

fn ensure_status(obj: &mut Value) {
    if let Some(o) = obj.as_object_mut() {
        default_field(o, "status", json!({}));
    }
}

fn default_template(obj: &mut Value) {
    let template = &mut obj["spec"]["template"];
    if template.is_object() {
        default_pod_spec(&mut template["spec"]);
        if let Some(meta) = template["metadata"].as_object_mut() {
            default_field(meta, "creationTimestamp", Value::Null);
        }
    }
}

/// Pod spec defaults (also used for pod templates).
pub fn default_pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else { return };
    default_field(s, "restartPolicy", json!("Always"));
    default_field(s, "terminationGracePeriodSeconds", json!(30));
    default_field(s, "dnsPolicy", json!("ClusterFirst"));
    default_field(s, "securityContext", json!({}));
    default_field(s, "schedulerName", json!("default-scheduler"));
    default_field(s, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(containers) = s.get_mut(list).and_then(Value::as_array_mut) {
            containers.iter_mut().for_each(default_container);
        }
    }
    if let Some(volumes) = s.get_mut("volumes").and_then(Value::as_array_mut) {
        for volume in volumes {
            for (source, mode) in [("configMap", 0o644), ("secret", 0o644)] {
                if let Some(v) = volume.get_mut(source).and_then(Value::as_object_mut) {
                    default_field(v, "defaultMode", json!(mode));
                }
            }
            if let Some(v) = volume.get_mut("hostPath").and_then(Value::as_object_mut) {
                default_field(v, "type", json!(""));
            }
        }
    }
}

fn default_container(container: &mut Value) {
    let image_pull_policy = match container["image"].as_str() {
        Some(image) if image_tag(image).is_none_or(|t| t == "latest") && !image.contains('@') => "Always",
        _ => "IfNotPresent",
    };
    let Some(c) = container.as_object_mut() else { return };
    default_field(c, "imagePullPolicy", json!(image_pull_policy));
    default_field(c, "terminationMessagePath", json!("/dev/termination-log"));
    default_field(c, "terminationMessagePolicy", json!("File"));
    default_field(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(port, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            default_field(p, "timeoutSeconds", json!(1));
            default_field(p, "periodSeconds", json!(10));
            default_field(p, "successThreshold", json!(1));
            default_field(p, "failureThreshold", json!(3));
            if let Some(http) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                default_field(http, "path", json!("/"));
                default_field(http, "scheme", json!("HTTP"));
            }
        }
    }
}

/// The tag of an image reference (`nginx:1.25` → `1.25`), ignoring a registry port.
pub fn image_tag(image: &str) -> Option<&str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_segment = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last_segment.split_once(':').map(|(_, tag)| tag)
}

/// The QoS class (`Guaranteed`, `Burstable`, `BestEffort`) of a pod spec.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> =
        ["initContainers", "containers"].iter().flat_map(|k| spec[*k].as_array().into_iter().flatten()).collect();
    let has = |c: &Value, part: &str| c["resources"][part].as_object().is_some_and(|m| !m.is_empty());
    if containers.iter().all(|c| !has(c, "requests") && !has(c, "limits")) {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = &c["resources"]["limits"][*r];
            let request = &c["resources"]["requests"][*r];
            !limit.is_null() && (request.is_null() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn default_service(obj: &mut Value) {
    let Some(spec) = obj["spec"].as_object_mut() else { return };
    default_field(spec, "type", json!("ClusterIP"));
    default_field(spec, "sessionAffinity", json!("None"));
    default_field(spec, "internalTrafficPolicy", json!("Cluster"));
    default_field(spec, "ipFamilies", json!(["IPv4"]));
    default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            default_field(port, "protocol", json!("TCP"));
            let number = port.get("port").cloned().unwrap_or(Value::Null);
            default_field(port, "targetPort", number);
        }
    }
    if let Some(o) = obj.as_object_mut() {
        default_field(o, "status", json!({"loadBalancer": {}}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_merges_into_data() {
        let mut secret = json!({"stringData": {"token": "s3cret"}, "data": {"other": "eA=="}});
        apply_defaults("Secret", &mut secret);
        assert_eq!(secret, json!({"type": "Opaque", "data": {"token": "czNjcmV0", "other": "eA=="}}));
    }

    #[test]
    fn pod_defaults_fill_what_describe_prints() {
        let mut pod =
            json!({"spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]}});
        apply_defaults("Pod", &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "BestEffort");
    }

    #[test]
    fn tagged_images_default_to_if_not_present() {
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "registry:5000/app:1.2"}]}});
        apply_defaults("Pod", &mut pod);
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(image_tag("registry:5000/app"), None);
    }

    #[test]
    fn an_empty_strategy_is_a_rolling_update() {
        let mut deploy = json!({"spec": {"strategy": {}, "template": {"spec": {"containers": []}}}});
        apply_defaults("Deployment", &mut deploy);
        assert_eq!(deploy["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let mut daemons = json!({"spec": {"updateStrategy": {}, "template": {"spec": {"containers": []}}}});
        apply_defaults("DaemonSet", &mut daemons);
        assert_eq!(daemons["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);
    }

    #[test]
    fn deployment_defaults_strategy_and_template() {
        let mut deploy = json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        apply_defaults("Deployment", &mut deploy);
        assert_eq!(deploy["spec"]["replicas"], 1);
        assert_eq!(deploy["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(deploy["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    }
}
