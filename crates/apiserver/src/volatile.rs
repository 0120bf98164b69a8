//! Which writes the server keeps in memory only, so that an idle car writes nothing to flash.
//!
//! - A heartbeat: an update of a Lease or a Node whose only change is a liveness timestamp
//!   (`spec.renewTime`, a condition's `lastHeartbeatTime`, and the time of the writer's
//!   managedFields entry). What it says — "still here" — is worthless after a restart anyway:
//!   the node lifecycle gives every node one grace period from the server's start.
//! - Events: kept in memory, bounded and expiring (`lifecycle`), lost at a restart, as the
//!   README states. Kubernetes keeps them for an hour at most; they are a diagnostic, not state.
//!
//! Everything else — creation of a Lease or Node, any change of what a heartbeat does not
//! touch — is durable as before. The store serves volatile writes with resourceVersions and
//! watch events like any other (see `store::Txn::put_volatile`).

use serde_json::Value;
use store::{StoreError, Txn};

const EVENTS: &str = "core/events/";
const LEASES: &str = "coordination.k8s.io/leases/";
const NODES: &str = "core/nodes/";

/// Stores `new` under `key` (whose stored version is `old`), in memory only when the change
/// may be.
pub fn put(txn: &mut Txn<'_>, key: &str, old: Option<&Value>, new: Value) -> Result<Value, StoreError> {
    if is_volatile(key, old, &new) {
        txn.put_volatile(key, new)
    } else {
        txn.put(key, new)
    }
}

fn is_volatile(key: &str, old: Option<&Value>, new: &Value) -> bool {
    if key.starts_with(EVENTS) {
        return true;
    }
    match old {
        Some(old) if key.starts_with(LEASES) || key.starts_with(NODES) => {
            without_heartbeat(old.clone()) == without_heartbeat(new.clone())
        }
        _ => false,
    }
}

/// The object with every liveness timestamp (and the resourceVersion, and the generation a
/// renewal bumps as any spec change does) taken out.
fn without_heartbeat(mut obj: Value) -> Value {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
        meta.remove("generation");
    }
    for entry in obj["metadata"]["managedFields"].as_array_mut().into_iter().flatten() {
        if let Some(entry) = entry.as_object_mut() {
            entry.remove("time");
        }
    }
    if let Some(spec) = obj["spec"].as_object_mut() {
        spec.remove("renewTime");
    }
    for condition in obj["status"]["conditions"].as_array_mut().into_iter().flatten() {
        if let Some(condition) = condition.as_object_mut() {
            condition.remove("lastHeartbeatTime");
        }
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lease(renew: &str, holder: &str, time: &str) -> Value {
        json!({"metadata": {"name": "hpc-1", "resourceVersion": "7", "generation": 1,
                            "managedFields": [{"manager": "axle-agent", "operation": "Update", "time": time}]},
               "spec": {"holderIdentity": holder, "renewTime": renew}})
    }

    #[test]
    fn a_lease_renewal_is_volatile_and_a_new_holder_is_not() {
        let key = "coordination.k8s.io/leases/kube-node-lease/hpc-1";
        let old = lease("2026-12-07T10:00:00.000000Z", "hpc-1", "2026-12-07T10:00:00Z");
        let mut renewed = lease("2026-12-07T10:00:10.000000Z", "hpc-1", "2026-12-07T10:00:10Z");
        renewed["metadata"]["generation"] = json!(2); // a spec change, as the server counts it
        assert!(is_volatile(key, Some(&old), &renewed));
        let taken = lease("2026-12-07T10:00:10.000000Z", "hpc-2", "2026-12-07T10:00:10Z");
        assert!(!is_volatile(key, Some(&old), &taken));
        assert!(!is_volatile(key, None, &renewed), "creation is durable");
    }

    #[test]
    fn a_node_heartbeat_is_volatile_and_a_readiness_change_is_not() {
        let key = "core/nodes//hpc-1";
        let node = |status: &str, beat: &str| {
            json!({"metadata": {"name": "hpc-1"}, "status": {"conditions": [
                {"type": "Ready", "status": status, "lastHeartbeatTime": beat, "lastTransitionTime": "t0"}]}})
        };
        assert!(is_volatile(key, Some(&node("True", "t1")), &node("True", "t2")));
        assert!(!is_volatile(key, Some(&node("True", "t1")), &node("Unknown", "t2")));
        let pod_key = "core/pods/car/nav";
        assert!(!is_volatile(pod_key, Some(&node("True", "t1")), &node("True", "t2")), "only leases and nodes");
    }

    #[test]
    fn events_are_volatile() {
        assert!(is_volatile("core/events/car/nav.1", None, &json!({})));
    }
}
