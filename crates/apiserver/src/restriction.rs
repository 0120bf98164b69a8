//! What a writer may change in an object, beyond whether it may write it at all (that is
//! `authz`): Kubernetes' NodeRestriction for the car, and who moves an update campaign.
//!
//! - A node may not add, change or remove its own labels under the protected prefixes
//!   (`node-restriction.kubernetes.io/`, `node-role.kubernetes.io/`, `safety.axle.dev/`, and
//!   `--protected-node-label-prefix`): workloads placed by such labels (and the Secrets they
//!   carry) go only where an administrator put the label.
//! - Nor the annotation that lets a registered node join again (`bootstrap::JOIN_APPROVED`).
//! - A node reports into its own slots of a campaign's status (`status.staging.nodes.NODE`,
//!   `status.agents.NODE`) and nothing else of it.
//! - A campaign's `status.phase` is moved by the update controller alone (its own identity,
//!   [`UPDATE_CONTROLLER_USER`]), so no forged status can make it commit.
//!
//! The checks run inside the write's transaction, on the object as admission leaves it, so they
//! see exactly what would be stored. Without authentication (`--insecure-http`) everyone is an
//! administrator and only the node rules, which need a node identity, are moot.

use crate::bootstrap::JOIN_APPROVED;
use api::rbac::User;
use api::{ApiError, ResourceType};
use serde_json::Value;

/// The identity the server's update controller acts as.
pub const UPDATE_CONTROLLER_USER: &str = "system:axle:update-controller";

/// Label prefixes a node may not set on itself, whatever `--protected-node-label-prefix` adds.
pub const DEFAULT_PROTECTED_PREFIXES: &[&str] =
    &["node-restriction.kubernetes.io/", "node-role.kubernetes.io/", "safety.axle.dev/"];

/// The write rules of a server.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Label key prefixes only administrators set on nodes.
    pub protected_label_prefixes: Vec<String>,
    /// Whether requests are authenticated (else the campaign rule cannot tell who writes).
    pub authenticated: bool,
}

impl Policy {
    pub fn new(extra_prefixes: &[String], authenticated: bool) -> Policy {
        let mut protected_label_prefixes: Vec<String> =
            DEFAULT_PROTECTED_PREFIXES.iter().map(|p| p.to_string()).collect();
        protected_label_prefixes.extend(extra_prefixes.iter().filter(|p| !p.is_empty()).cloned());
        Policy { protected_label_prefixes, authenticated }
    }

    fn protected(&self, key: &str) -> bool {
        self.protected_label_prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// Refuses a write of `new` (the stored version being `old`, None for a create) that `user`
/// may not make.
pub fn check(
    policy: &Policy,
    user: &User,
    rt: &ResourceType,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    let builtin = |group: &str, kind: &str| !rt.custom && rt.group == group && rt.kind == kind;
    if let Some(node) = user.node_name() {
        if builtin("", "Node") {
            check_node_labels(policy, node, old, new)?;
            let approval = |obj: Option<&Value>| obj.map(|o| o["metadata"]["annotations"][JOIN_APPROVED].clone());
            if approval(old).unwrap_or(Value::Null) != approval(Some(new)).unwrap_or(Value::Null) {
                return Err(ApiError::forbidden(format!(
                    "node {node:?} is not allowed to modify the annotation {JOIN_APPROVED} (an administrator sets it)"
                )));
            }
        }
        if rt.group == "axle.dev" && rt.kind == "Campaign" {
            check_campaign_slots(node, old, new)?;
        }
    }
    if policy.authenticated && rt.group == "axle.dev" && rt.kind == "Campaign" && user.name != UPDATE_CONTROLLER_USER {
        let phase = |obj: Option<&Value>| obj.and_then(|o| o["status"]["phase"].as_str()).unwrap_or("").to_string();
        if phase(old) != phase(Some(new)) {
            return Err(ApiError::forbidden(format!(
                "campaign {:?}: status.phase is moved by the update controller alone ({:?} may not set it to {:?})",
                api::meta::name_of(new),
                user.name,
                phase(Some(new))
            )));
        }
    }
    Ok(())
}

fn labels(obj: Option<&Value>) -> serde_json::Map<String, Value> {
    obj.and_then(|o| o["metadata"]["labels"].as_object()).cloned().unwrap_or_default()
}

/// A node sets no protected label on itself, and removes or changes none.
fn check_node_labels(policy: &Policy, node: &str, old: Option<&Value>, new: &Value) -> Result<(), ApiError> {
    let (before, after) = (labels(old), labels(Some(new)));
    let mut touched: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| policy.protected(key) && before.get(*key) != after.get(*key))
        .collect();
    touched.sort();
    touched.dedup();
    if touched.is_empty() {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "node {node:?} is not allowed to modify labels: {} (protected prefixes: {}; an administrator sets them)",
        touched.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", "),
        policy.protected_label_prefixes.join(", ")
    )))
}

/// A node changes nothing of a campaign but its own slots of the status.
fn check_campaign_slots(node: &str, old: Option<&Value>, new: &Value) -> Result<(), ApiError> {
    let Some(old) = old else {
        return Err(ApiError::forbidden(format!("node {node:?} may not create campaigns")));
    };
    let without_own_slots = |obj: &Value| {
        let mut obj = obj.clone();
        if let Some(meta) = obj["metadata"].as_object_mut() {
            for server_owned in ["resourceVersion", "managedFields", "generation"] {
                meta.remove(server_owned);
            }
        }
        for slot in [&["staging", "nodes"][..], &["agents"][..]] {
            let mut at = &mut obj["status"];
            for step in slot {
                at = &mut at[*step];
            }
            if let Some(map) = at.as_object_mut() {
                map.remove(node);
                if map.is_empty() {
                    *at = Value::Null;
                }
            }
        }
        prune_nulls(&mut obj);
        obj
    };
    if without_own_slots(old) != without_own_slots(new) {
        return Err(ApiError::forbidden(format!(
            "node {node:?} may change only status.staging.nodes.{node} and status.agents.{node} of campaign {:?}",
            api::meta::name_of(old)
        )));
    }
    Ok(())
}

/// Removes null members (and objects left empty by that), so a slot that was absent and one a
/// merge patch emptied compare equal.
fn prune_nulls(value: &mut Value) {
    if let Some(map) = value.as_object_mut() {
        for member in map.values_mut() {
            prune_nulls(member);
        }
        map.retain(|_, v| !v.is_null() && !v.as_object().is_some_and(|o| o.is_empty()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node_type() -> ResourceType {
        api::Registry::builtin().lookup("", "v1", "nodes").cloned().expect("nodes")
    }

    fn node_user(name: &str) -> User {
        User::new(format!("system:node:{name}"), ["system:nodes"])
    }

    #[test]
    fn a_node_may_not_touch_protected_labels_but_keeps_its_own() {
        let policy = Policy::new(&["safety".to_string()], true);
        let old = json!({"metadata": {"name": "hpc-1", "labels": {"kubernetes.io/hostname": "hpc-1", "safety.axle.dev/asil": "B"}}});
        let relabelled = |key: &str, value: &str| {
            let mut new = old.clone();
            new["metadata"]["labels"][key] = json!(value);
            new
        };
        let me = node_user("hpc-1");
        assert!(check(&policy, &me, &node_type(), Some(&old), &relabelled("safety.axle.dev/asil", "D")).is_err());
        assert!(
            check(&policy, &me, &node_type(), Some(&old), &relabelled("node-role.kubernetes.io/gateway", "")).is_err()
        );
        assert!(check(&policy, &me, &node_type(), Some(&old), &relabelled("safety", "asil-d")).is_err(), "configured");
        let mut removed = old.clone();
        removed["metadata"]["labels"].as_object_mut().expect("labels").remove("safety.axle.dev/asil");
        assert!(check(&policy, &me, &node_type(), Some(&old), &removed).is_err(), "nor remove them");
        assert!(check(&policy, &me, &node_type(), Some(&old), &relabelled("team", "hmi")).is_ok());
        assert!(check(&policy, &me, &node_type(), Some(&old), &old).is_ok(), "unchanged: fine");
        let admin = User::new("admin", ["system:masters"]);
        assert!(check(&policy, &admin, &node_type(), Some(&old), &relabelled("safety.axle.dev/asil", "D")).is_ok());
    }

    #[test]
    fn a_node_reports_into_its_own_campaign_slots_only_and_nobody_but_the_controller_moves_the_phase() {
        let policy = Policy::new(&[], true);
        let campaign_type = ResourceType {
            group: "axle.dev".into(),
            version: "v1alpha1".into(),
            kind: "Campaign".into(),
            plural: "campaigns".into(),
            custom: true,
            ..node_type()
        };
        let old = json!({"metadata": {"name": "nav-2", "resourceVersion": "5"},
                         "status": {"phase": "Staging", "staging": {"nodes": {"hpc-2": "Staged"}}}});
        let with = |path: &[&str], value: Value| {
            let mut new = old.clone();
            let mut at = &mut new["status"];
            for step in path {
                at = &mut at[*step];
            }
            *at = value;
            new
        };
        let me = node_user("hpc-1");
        let mine = with(&["staging", "nodes", "hpc-1"], json!("Staged"));
        assert!(check(&policy, &me, &campaign_type, Some(&old), &mine).is_ok());
        assert!(
            check(&policy, &me, &campaign_type, Some(&old), &with(&["agents", "hpc-1"], json!("Committed"))).is_ok()
        );
        let theirs = with(&["staging", "nodes", "hpc-2"], json!("Failed: forged"));
        assert!(check(&policy, &me, &campaign_type, Some(&old), &theirs).is_err());
        let committing = with(&["phase"], json!("Committing"));
        assert!(check(&policy, &me, &campaign_type, Some(&old), &committing).is_err());
        let admin = User::new("admin", ["system:masters"]);
        let error = check(&policy, &admin, &campaign_type, Some(&old), &committing).expect_err("not even an admin");
        assert!(error.to_string().contains("update controller"), "{error}");
        let controller = User::new(UPDATE_CONTROLLER_USER, ["system:masters"]);
        assert!(check(&policy, &controller, &campaign_type, Some(&old), &committing).is_ok());
        assert!(check(&Policy::new(&[], false), &admin, &campaign_type, Some(&old), &committing).is_ok(), "insecure");
    }
}
