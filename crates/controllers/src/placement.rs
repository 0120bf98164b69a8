//! Static placement: which node a pod runs on, decided without scoring. `nodeName` wins; else
//! the Ready nodes that match `nodeSelector`, required node affinity and whose taints the pod
//! tolerates are candidates, and the one running the fewest pods of the same owner is chosen
//! (ties by name) — the same answer for the same state, every time.
//!
//! Pods created without a node (by hand, or when no node matched yet) are bound here, through
//! the `binding` subresource, as soon as a node fits; until then they stay Pending with
//! `PodScheduled=False`, reason `Unschedulable`, saying why.

use crate::workloads::{condition, controller_uid, tolerate, Outcome, Snapshot};
use api::selector::LabelSelector;
use client::{Client, ClientError};
use serde_json::{json, Value};

pub fn node_is_ready(node: &Value) -> bool {
    condition(node, "Ready").is_some_and(|c| c["status"] == "True")
}

/// Whether `pod_spec` may run on `node` (readiness aside).
pub fn fits(pod_spec: &Value, node: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let selector_ok = pod_spec["nodeSelector"].as_object().into_iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let terms =
        &pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let affinity_ok = match terms.as_array() {
        None => true,
        Some(terms) => terms.iter().any(|term| term_matches(term, node)),
    };
    selector_ok && affinity_ok && tolerates(pod_spec, node)
}

/// One node selector term: all its label expressions and field expressions hold.
fn term_matches(term: &Value, node: &Value) -> bool {
    let labels_ok = match LabelSelector::from_object(&json!({"matchExpressions": term["matchExpressions"]})) {
        Ok(Some(selector)) => selector.matches(&node["metadata"]["labels"]),
        Ok(None) => true,
        // Operators Axle does not evaluate (Gt, Lt) never match: better unplaced than misplaced.
        Err(_) => false,
    };
    let fields = json!({"metadata.name": node["metadata"]["name"]});
    let fields_ok = match LabelSelector::from_object(&json!({"matchExpressions": term["matchFields"]})) {
        Ok(Some(selector)) => selector.matches(&fields),
        Ok(None) => true,
        Err(_) => false,
    };
    let empty = term["matchExpressions"].as_array().is_none_or(Vec::is_empty)
        && term["matchFields"].as_array().is_none_or(Vec::is_empty);
    !empty && labels_ok && fields_ok
}

/// Taints with effect NoSchedule/NoExecute must be tolerated.
pub fn tolerates(pod_spec: &Value, node: &Value) -> bool {
    let tolerations = pod_spec["tolerations"].as_array().cloned().unwrap_or_default();
    node["spec"]["taints"].as_array().into_iter().flatten().all(|taint| {
        let effect = taint["effect"].as_str().unwrap_or("");
        if effect == "PreferNoSchedule" {
            return true;
        }
        tolerations.iter().any(|t| {
            let key_ok = t["key"].is_null() || t["key"] == "" || t["key"] == taint["key"];
            let value_ok = match t["operator"].as_str().unwrap_or("Equal") {
                "Exists" => true,
                _ => t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or(""),
            };
            let effect_ok = t["effect"].as_str().is_none_or(|e| e.is_empty() || e == effect);
            key_ok && value_ok && effect_ok
        })
    })
}

/// The node for a new pod of `pod_spec`, given the pods of the same owner (`peers`).
/// `Err` says why no node fits.
pub fn choose(pod_spec: &Value, snapshot: &Snapshot, peers: &[&Value]) -> Result<String, String> {
    if let Some(node) = pod_spec["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Ok(node.to_string());
    }
    let mut candidates: Vec<(usize, &str)> = snapshot
        .nodes
        .iter()
        .filter(|n| node_is_ready(n) && fits(pod_spec, n))
        .map(|n| {
            let name = api::meta::name_of(n);
            (peers.iter().filter(|p| p["spec"]["nodeName"] == name).count(), name)
        })
        .collect();
    candidates.sort();
    match candidates.first() {
        Some((_, name)) => Ok(name.to_string()),
        None => {
            let ready = snapshot.nodes.iter().filter(|n| node_is_ready(n)).count();
            Err(format!(
                "0/{} nodes are available: {} Ready, none matches the pod's node selector, affinity and tolerations",
                snapshot.nodes.len(),
                ready
            ))
        }
    }
}

/// Binds unbound, ungated pods to a fitting node, or says why none fits.
/// The Event of a pod placed on a node.
pub async fn scheduled(client: &Client, pod: &Value, node: &str) {
    let message =
        format!("Successfully assigned {}/{} to {node}", api::meta::namespace_of(pod), api::meta::name_of(pod));
    crate::workloads::event(client, pod, "Pod", "Normal", "Scheduled", &message).await;
}

pub async fn reconcile(client: &Client, snapshot: &Snapshot) -> Result<Outcome, ClientError> {
    for pod in &snapshot.pods {
        let unbound = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
        let gated = pod["spec"]["schedulingGates"].as_array().is_some_and(|g| !g.is_empty());
        if !unbound || gated || pod["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let path = format!("/api/v1/namespaces/{}/pods/{}", api::meta::namespace_of(pod), api::meta::name_of(pod));
        let peers: Vec<&Value> = match controller_uid(pod) {
            Some(owner) => snapshot.pods_of(owner),
            None => Vec::new(),
        };
        match choose(&pod["spec"], snapshot, &peers) {
            Ok(node) => {
                let binding = json!({"apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": pod["metadata"]["name"]}, "target": {"kind": "Node", "name": node}});
                tolerate(client.post(&format!("{path}/binding"), &binding).await)?;
                scheduled(client, pod, &node).await;
            }
            Err(why) => {
                let current = condition(pod, "PodScheduled");
                if current.is_some_and(|c| c["reason"] == "Unschedulable" && c["message"] == why.as_str()) {
                    continue;
                }
                let patch = json!({"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": why, "lastTransitionTime": api::meta::now_rfc3339()}]}});
                tolerate(client.strategic_patch(&format!("{path}/status"), &patch).await)?;
            }
        }
    }
    Ok(Outcome::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    }

    #[test]
    fn placement_is_deterministic_and_spreads_peers() {
        let snapshot = Snapshot {
            nodes: vec![
                node("hpc-2", json!({"zone": "front"}), json!([])),
                node("hpc-1", json!({"zone": "front"}), json!([])),
                node("hpc-3", json!({"zone": "rear"}), json!([])),
            ],
            ..Snapshot::default()
        };
        let spec = json!({"nodeSelector": {"zone": "front"}});
        assert_eq!(choose(&spec, &snapshot, &[]), Ok("hpc-1".into()));
        let peer = json!({"spec": {"nodeName": "hpc-1"}});
        assert_eq!(choose(&spec, &snapshot, &[&peer]), Ok("hpc-2".into()));
        assert!(choose(&json!({"nodeSelector": {"zone": "roof"}}), &snapshot, &[]).is_err());
        assert_eq!(choose(&json!({"nodeName": "ecu-9"}), &snapshot, &[]), Ok("ecu-9".into()));
    }

    #[test]
    fn affinity_and_taints_are_honoured() {
        let tainted = node(
            "hpc-1",
            json!({"gpu": "yes"}),
            json!([{"key": "dedicated", "value": "adas", "effect": "NoSchedule"}]),
        );
        let affinity = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]}}}});
        assert!(!fits(&affinity, &tainted), "the taint is not tolerated");
        let mut tolerant = affinity.clone();
        tolerant["tolerations"] =
            json!([{"key": "dedicated", "operator": "Equal", "value": "adas", "effect": "NoSchedule"}]);
        assert!(fits(&tolerant, &tainted));
        let by_name = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["hpc-2"]}]}]}}}});
        assert!(!fits(&by_name, &node("hpc-1", json!({}), json!([]))));
        assert!(fits(&by_name, &node("hpc-2", json!({}), json!([]))));
    }
}
