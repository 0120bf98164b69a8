//! Server-side object lifecycle, run as one background reconciler: the system namespaces at
//! start, cascading (background) deletion of dependents whose owners are gone, namespace
//! termination (delete the contents, then the namespace), and custom resources of deleted CRDs.
//!
//! Events expire an hour after they last happened (kube-apiserver's default `--event-ttl`), so
//! a car that runs for years keeps only recent ones.
//!
//! It is level-triggered: each pass looks at the whole stored state, so a crash between an
//! owner's deletion and its dependents' is repaired by the pass that runs at the next start.
//! It only runs when something changed, so an idle server writes nothing.

use crate::admission::{prepare_create, store_error};
use crate::objects::{write, Abort};
use crate::State;
use api::ApiError;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use store::{StoreError, Txn};

pub const CRD_PREFIX: &str = "apiextensions.k8s.io/customresourcedefinitions/";
pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

pub fn namespace_key(namespace: &str) -> String {
    store::key("core/namespaces", "", namespace)
}

/// Creates the namespaces every cluster has, when missing.
pub async fn ensure_system_namespaces(state: &State) -> Result<(), ApiError> {
    let namespaces = SYSTEM_NAMESPACES.iter().map(|ns| json!({"metadata": {"name": ns}})).collect();
    ensure_exist(state, "", "namespaces", namespaces).await
}

/// Creates the cluster-scoped objects (of `group`/`plural`) that do not exist; existing ones,
/// edited or not, are kept. Writes nothing when all exist.
pub async fn ensure_exist(state: &State, group: &str, plural: &str, objects: Vec<Value>) -> Result<(), ApiError> {
    let registry = state.registry();
    let version = if group.is_empty() {
        "v1".to_string()
    } else {
        registry.group_versions(group).first().cloned().unwrap_or_default()
    };
    let rt = registry
        .lookup(group, &version, plural)
        .cloned()
        .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
    let key = |obj: &Value| store::key(&rt.storage_prefix(), "", api::meta::name_of(obj));
    let missing: Vec<Value> =
        objects.into_iter().filter(|obj| state.store.get(&key(obj)).ok().flatten().is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(state, move |txn| {
        for mut obj in missing {
            prepare_create(&rt, &mut obj, None, txn)?;
            let key = store::key(&rt.storage_prefix(), "", api::meta::name_of(&obj));
            if txn.get(&key)?.is_none() {
                txn.put(&key, obj)?;
            }
        }
        Ok::<(), Abort<()>>(())
    })
    .await
}

/// How long an Event is kept after it last happened.
pub const EVENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Events are held in memory only (see `volatile`): beyond this many, the oldest go first.
pub const MAX_EVENTS: usize = 1_000;
/// How long a CertificateSigningRequest is kept once decided (signed or denied), and while
/// pending, as Kubernetes' CSR cleaner does.
const DECIDED_CSR_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
const PENDING_CSR_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const EXPIRY_PERIOD: std::time::Duration = std::time::Duration::from_secs(600);

/// The keys of the objects under `prefix` (group/plural) older than `ttl(object)`, measured
/// from the time `since(object)` names.
fn older_than(
    state: &State,
    prefix: &str,
    since: impl Fn(&Value) -> Option<&str>,
    ttl: impl Fn(&Value) -> std::time::Duration,
) -> Vec<String> {
    let objects =
        state.store.list(&format!("{prefix}/"), None, 0, &|_| true).map(|page| page.items).unwrap_or_default();
    objects
        .iter()
        .filter(|obj| since(obj).and_then(api::meta::millis_since).unwrap_or(0) > ttl(obj).as_millis() as i64)
        .map(|obj| store::key(prefix, api::meta::namespace_of(obj), api::meta::name_of(obj)))
        .collect()
}

/// The keys of the oldest Events beyond [`MAX_EVENTS`].
fn events_over_the_cap(state: &State) -> Vec<String> {
    let Ok(page) = state.store.list("core/events/", None, 0, &|_| true) else { return Vec::new() };
    if page.items.len() <= MAX_EVENTS {
        return Vec::new();
    }
    let mut events: Vec<(&str, String)> = page
        .items
        .iter()
        .map(|e| {
            let when = event_time(e).unwrap_or("");
            (when, store::key("core/events", api::meta::namespace_of(e), api::meta::name_of(e)))
        })
        .collect();
    // RFC 3339 times in UTC order as strings.
    events.sort();
    let excess = events.len() - MAX_EVENTS;
    events.into_iter().take(excess).map(|(_, key)| key).collect()
}

/// When an Event last happened.
fn event_time(event: &Value) -> Option<&str> {
    ["lastTimestamp", "eventTime"]
        .iter()
        .find_map(|k| event[*k].as_str())
        .or(event["metadata"]["creationTimestamp"].as_str())
}

/// Deletes expired Events and CertificateSigningRequests now and every few minutes until
/// shutdown, and the oldest Events whenever there are more than [`MAX_EVENTS`].
pub async fn expire_old_objects(state: Arc<State>) {
    let mut shutdown = state.shutdown.clone();
    loop {
        // Read first: an idle server with nothing to expire writes nothing.
        let mut expired = older_than(&state, "core/events", event_time, |_| EVENT_TTL);
        expired.extend(events_over_the_cap(&state));
        expired.extend(older_than(
            &state,
            "certificates.k8s.io/certificatesigningrequests",
            |csr| csr["metadata"]["creationTimestamp"].as_str(),
            |csr| {
                if csr["status"]["conditions"].as_array().is_some_and(|c| !c.is_empty()) {
                    DECIDED_CSR_TTL
                } else {
                    PENDING_CSR_TTL
                }
            },
        ));
        if !expired.is_empty() {
            let count = expired.len();
            let deleted = write(&state, move |txn| {
                for key in &expired {
                    txn.delete(key)?;
                }
                Ok::<(), Abort<()>>(())
            })
            .await;
            match deleted {
                Ok(()) => tracing::debug!(objects = count, "expired events and certificate requests deleted"),
                Err(e) => tracing::warn!(error = %e, "cannot delete expired objects"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EXPIRY_PERIOD) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The reconciler loop: one pass at start, then one after each batch of changes that can
/// leave work behind (a deletion, a namespace or an object starting to terminate).
pub async fn run(state: Arc<State>) {
    let mut notify = state.store.subscribe();
    let mut shutdown = state.shutdown.clone();
    let mut cursor = state.store.resource_version();
    let mut due = true;
    loop {
        if due {
            if let Err(e) = reconcile(&state).await {
                tracing::warn!(error = %e, "object lifecycle pass failed; retrying on the next change");
            }
        }
        tokio::select! {
            changed = notify.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        notify.borrow_and_update();
        due = match state.store.events_after(cursor) {
            Ok(events) => {
                cursor = events.last().map_or(cursor, |e| e.resource_version);
                events.iter().any(|e| {
                    e.kind == store::EventType::Deleted
                        || e.key.starts_with("core/namespaces/")
                        || e.object["metadata"]["deletionTimestamp"].is_string()
                })
            }
            Err(_) => {
                cursor = state.store.resource_version();
                true
            }
        };
    }
}

async fn reconcile(state: &State) -> Result<(), ApiError> {
    let registry = state.registry();
    // Only write when there is something to do: a pass that finds nothing commits nothing.
    write(state, move |txn| {
        collect_garbage(txn, &registry)?;
        terminate_namespaces(txn, &registry)?;
        Ok::<(), Abort<()>>(())
    })
    .await
}

/// Parts of a storage key: (group/plural prefix, namespace, name).
fn split_key(key: &str) -> Option<(&str, &str, &str)> {
    let (rest, name) = key.rsplit_once('/')?;
    let (prefix, namespace) = rest.rsplit_once('/')?;
    Some((prefix, namespace, name))
}

/// Deletes objects all of whose owners are gone (background propagation).
fn collect_garbage(txn: &mut Txn<'_>, registry: &api::Registry) -> Result<(), ApiError> {
    let all = txn.list("").map_err(store_error)?;
    let uids: HashSet<String> = all.iter().map(|(_, o)| api::meta::uid_of(o).to_string()).collect();
    for (key, obj) in &all {
        let Some(owners) = obj["metadata"]["ownerReferences"].as_array().filter(|o| !o.is_empty()) else { continue };
        let orphaned = owners.iter().all(|o| !o["uid"].as_str().is_some_and(|uid| uids.contains(uid)));
        if orphaned && !obj["metadata"]["deletionTimestamp"].is_string() {
            tracing::debug!(%key, "deleting dependent whose owners are gone");
            delete_object(txn, registry, key, obj)?;
        }
    }
    Ok(())
}

/// Deletes an object the way a client's DELETE would (finalizers and graceful pods respected).
fn delete_object(txn: &mut Txn<'_>, registry: &api::Registry, key: &str, obj: &Value) -> Result<(), ApiError> {
    let rt = registry.by_kind(obj["apiVersion"].as_str().unwrap_or(""), obj["kind"].as_str().unwrap_or(""));
    let Some(rt) = rt else {
        txn.delete(key).map_err(store_error)?;
        return Ok(());
    };
    match crate::objects::delete_for_lifecycle(txn, rt, key, api::meta::name_of(obj)) {
        Ok(_) | Err(Abort::DryRun(_)) => Ok(()),
        Err(Abort::Api(e)) if e.code == 404 => Ok(()),
        Err(Abort::Api(e)) => Err(e),
    }
}

/// Empties terminating namespaces, then removes them.
fn terminate_namespaces(txn: &mut Txn<'_>, registry: &api::Registry) -> Result<(), ApiError> {
    let terminating: Vec<(String, Value)> = txn
        .list("core/namespaces//")
        .map_err(store_error)?
        .into_iter()
        .filter(|(_, ns)| ns["metadata"]["deletionTimestamp"].is_string())
        .collect();
    if terminating.is_empty() {
        return Ok(());
    }
    let all = txn.list("").map_err(store_error)?;
    for (ns_key, ns) in terminating {
        let name = api::meta::name_of(&ns);
        let mut remaining = 0;
        for (key, obj) in &all {
            if split_key(key).is_some_and(|(_, namespace, _)| namespace == name) {
                remaining += 1;
                if !obj["metadata"]["deletionTimestamp"].is_string() {
                    delete_object(txn, registry, key, obj)?;
                }
            }
        }
        if remaining == 0 && ns["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty) {
            tracing::info!(namespace = %name, "namespace emptied; removing it");
            txn.delete(&ns_key).map_err(store_error)?;
        }
    }
    Ok(())
}

/// Orphan propagation: dependents of `owner_uid` lose that owner reference and stay.
pub fn orphan_dependents(txn: &mut Txn<'_>, owner_uid: &str) -> Result<(), StoreError> {
    for (key, mut obj) in txn.list("")? {
        let Some(owners) = obj["metadata"]["ownerReferences"].as_array() else { continue };
        if !owners.iter().any(|o| o["uid"] == owner_uid) {
            continue;
        }
        let kept: Vec<Value> = owners.iter().filter(|o| o["uid"] != owner_uid).cloned().collect();
        obj["metadata"]["ownerReferences"] = Value::Array(kept);
        txn.put(&key, obj)?;
    }
    Ok(())
}

/// Removes every custom resource of a CRD being deleted.
pub fn delete_custom_resources(txn: &mut Txn<'_>, crd: &Value) -> Result<(), StoreError> {
    let (Some(group), Some(plural)) = (crd["spec"]["group"].as_str(), crd["spec"]["names"]["plural"].as_str()) else {
        return Ok(());
    };
    for (key, _) in txn.list(&format!("{group}/{plural}/"))? {
        txn.delete(&key)?;
    }
    Ok(())
}
