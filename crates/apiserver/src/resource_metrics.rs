//! `metrics.k8s.io/v1beta1`: NodeMetrics and PodMetrics, so `kubectl top nodes|pods` works.
//!
//! In Kubernetes the metrics-server scrapes every kubelet and serves this group through the
//! aggregator. Here the API server itself asks the agents of the nodes concerned for their
//! usage summary (`/stats/summary`) when a request comes, and answers from that: nothing is
//! stored, and an agent that does not answer in time just leaves its node out (as
//! metrics-server leaves out nodes it cannot scrape). ECU nodes run no agent and have no figures.

use crate::http::{error_reply, json_reply, Query, Reply};
use crate::routes::ResourcePath;
use crate::State;
use api::selector::LabelSelector;
use api::ApiError;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// How long one agent gets to answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);

/// The group's resources, for discovery.
pub fn discovery_entries() -> Vec<Value> {
    vec![
        json!({"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]}),
        json!({"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}),
    ]
}

pub async fn handle(state: &Arc<State>, method: &hyper::Method, target: &ResourcePath, query: &Query) -> Reply {
    match answer(state, method, target, query).await {
        Ok(value) => json_reply(200, &value),
        Err(e) => error_reply(&e),
    }
}

async fn answer(
    state: &Arc<State>,
    method: &hyper::Method,
    target: &ResourcePath,
    query: &Query,
) -> Result<Value, ApiError> {
    if method != hyper::Method::GET {
        return Err(ApiError::method_not_allowed(format!("{GROUP} is read-only")));
    }
    if target.version != VERSION || target.subresource.is_some() {
        return Err(ApiError::no_route());
    }
    let selector = match query.get("labelSelector") {
        Some(text) => LabelSelector::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))?,
        None => LabelSelector::default(),
    };
    let list = |prefix: &str| -> Result<Vec<Value>, ApiError> {
        state
            .store
            .list(prefix, None, 0, &|_| true)
            .map(|page| page.items)
            .map_err(|e| ApiError::internal(e.to_string()))
    };
    match (target.plural.as_str(), target.namespace.as_deref()) {
        ("nodes", None) => {
            let nodes: Vec<Value> = list("core/nodes/")?
                .into_iter()
                .filter(|n| target.name.as_deref().is_none_or(|name| api::meta::name_of(n) == name))
                .filter(|n| selector.matches_object(n))
                .collect();
            let summaries = summaries(state, &nodes).await;
            let items: Vec<Value> =
                summaries.iter().filter_map(|(node, summary)| node_metrics(node, summary)).collect();
            single_or_list(target, items, "NodeMetrics", "nodes")
        }
        ("pods", namespace) => {
            let prefix = match namespace {
                Some(ns) => format!("core/pods/{ns}/"),
                None => "core/pods/".to_string(),
            };
            let pods: Vec<Value> = list(&prefix)?
                .into_iter()
                .filter(|p| target.name.as_deref().is_none_or(|name| api::meta::name_of(p) == name))
                .filter(|p| selector.matches_object(p))
                .collect();
            let wanted: Vec<&str> = pods.iter().filter_map(|p| p["spec"]["nodeName"].as_str()).collect();
            let nodes: Vec<Value> =
                list("core/nodes/")?.into_iter().filter(|n| wanted.contains(&api::meta::name_of(n))).collect();
            let summaries = summaries(state, &nodes).await;
            let mut usage: BTreeMap<(String, String), (&Value, &Value)> = BTreeMap::new();
            for (_, summary) in &summaries {
                for pod in summary["pods"].as_array().into_iter().flatten() {
                    let key = (
                        pod["podRef"]["namespace"].as_str().unwrap_or("").to_string(),
                        pod["podRef"]["name"].as_str().unwrap_or("").to_string(),
                    );
                    usage.insert(key, (pod, summary));
                }
            }
            let items: Vec<Value> = pods
                .iter()
                .filter_map(|pod| {
                    let key = (api::meta::namespace_of(pod).to_string(), api::meta::name_of(pod).to_string());
                    let (stats, summary) = usage.get(&key)?;
                    pod_metrics(pod, stats, summary)
                })
                .collect();
            single_or_list(target, items, "PodMetrics", "pods")
        }
        _ => Err(ApiError::no_route()),
    }
}

fn single_or_list(target: &ResourcePath, mut items: Vec<Value>, kind: &str, plural: &str) -> Result<Value, ApiError> {
    match &target.name {
        Some(name) => items.pop().ok_or_else(|| ApiError::not_found(GROUP, plural, name)),
        None => Ok(json!({
            "kind": format!("{kind}List"), "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {}, "items": items,
        })),
    }
}

/// Each node's summary, asked of all agents at once; nodes whose agent does not answer are left out.
async fn summaries(state: &Arc<State>, nodes: &[Value]) -> Vec<(Value, Value)> {
    let asks: Vec<_> = nodes
        .iter()
        .filter(|n| crate::agents::endpoint(n).is_some())
        .cloned()
        .map(|node| {
            let state = state.clone();
            tokio::spawn(async move {
                match crate::agents::get_json(&state, &node, "/stats/summary", AGENT_TIMEOUT).await {
                    Ok(summary) => Some((node, summary)),
                    Err(e) => {
                        tracing::debug!(node = api::meta::name_of(&node), error = %e, "no usage summary");
                        None
                    }
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for ask in asks {
        if let Ok(Some(pair)) = ask.await {
            out.push(pair);
        }
    }
    out
}

/// `{"cpu": "<n>n", "memory": "<k>Ki"}` from a summary's cpu and memory entries, as
/// metrics-server writes them; None until the agent has a CPU rate.
fn usage(cpu: &Value, memory: &Value) -> Option<Value> {
    let nano_cores = cpu["usageNanoCores"].as_u64()?;
    let bytes = memory["workingSetBytes"].as_u64()?;
    Some(json!({"cpu": format!("{nano_cores}n"), "memory": format!("{}Ki", bytes / 1024)}))
}

fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let usage = usage(&summary["node"]["cpu"], &summary["node"]["memory"])?;
    Some(json!({
        "kind": "NodeMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {"name": api::meta::name_of(node), "labels": node["metadata"]["labels"],
                     "creationTimestamp": api::meta::now_rfc3339()},
        "timestamp": summary["node"]["cpu"]["time"], "window": summary["window"], "usage": usage,
    }))
}

fn pod_metrics(pod: &Value, stats: &Value, summary: &Value) -> Option<Value> {
    let containers: Vec<Value> = stats["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some(json!({"name": c["name"], "usage": usage(&c["cpu"], &c["memory"])?})))
        .collect();
    if containers.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "PodMetrics", "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {"name": api::meta::name_of(pod), "namespace": api::meta::namespace_of(pod),
                     "labels": pod["metadata"]["labels"], "creationTimestamp": api::meta::now_rfc3339()},
        "timestamp": stats["containers"][0]["cpu"]["time"], "window": summary["window"], "containers": containers,
    }))
}
