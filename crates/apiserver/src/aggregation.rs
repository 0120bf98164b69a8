//! ClusterRole aggregation, as upstream's clusterrole-aggregation controller does it: a
//! ClusterRole with an `aggregationRule` holds the rules of every ClusterRole its
//! `clusterRoleSelectors` select. The default `admin`, `edit` and `view` are built so, which is
//! how a CRD's roles labelled `rbac.authorization.k8s.io/aggregate-to-view: "true"` join `view`.
//!
//! Run after every committed ClusterRole change and at start, in one transaction over all
//! ClusterRoles (a car has a few dozen); a role's rules are rewritten only when they differ.

use crate::objects::{write, Abort};
use crate::State;
use api::selector::LabelSelector;
use api::ApiError;
use serde_json::Value;

const CLUSTER_ROLES: &str = "rbac.authorization.k8s.io/clusterroles/";

/// Aggregated roles may themselves be aggregated (`view` into `edit` into `admin`): the rules
/// are recomputed until nothing changes, at most this many rounds (a selector loop settles too).
const MAX_ROUNDS: usize = 8;

/// Brings every aggregated ClusterRole's rules up to date.
pub async fn aggregate(state: &State) -> Result<(), ApiError> {
    write(state, |txn| {
        let stored = txn.list(CLUSTER_ROLES)?;
        let mut roles = stored.clone();
        for _ in 0..MAX_ROUNDS {
            let mut changed = false;
            for i in 0..roles.len() {
                let Some(rules) = aggregated_rules(&roles, i) else { continue };
                if roles[i].1["rules"].as_array().map(Vec::as_slice).unwrap_or_default() != rules.as_slice() {
                    roles[i].1["rules"] = Value::Array(rules);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for ((key, role), (_, before)) in roles.into_iter().zip(&stored) {
            if role["rules"] != before["rules"] {
                txn.put(&key, role)?;
            }
        }
        Ok::<(), Abort<()>>(())
    })
    .await
}

/// The rules role `i` aggregates from the others; None when it is not aggregated.
fn aggregated_rules(roles: &[(String, Value)], i: usize) -> Option<Vec<Value>> {
    let selectors = roles[i].1["aggregationRule"]["clusterRoleSelectors"].as_array()?;
    let selectors: Vec<LabelSelector> =
        selectors.iter().filter_map(|s| LabelSelector::from_object(s).ok().flatten()).collect();
    let mut rules: Vec<Value> = Vec::new();
    for (j, (_, other)) in roles.iter().enumerate() {
        if j == i || !selectors.iter().any(|s| !s.is_empty() && s.matches_object(other)) {
            continue;
        }
        for rule in other["rules"].as_array().into_iter().flatten() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    Some(rules)
}

/// After a ClusterRole changed: aggregate again, off the request's path.
pub fn after_cluster_role_change(state: &std::sync::Arc<State>) {
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = aggregate(&state).await {
            tracing::warn!(error = %e, "cannot aggregate ClusterRoles");
        }
    });
}
