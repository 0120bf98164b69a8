//! Node join: the bootstrap token and what it may ask for.
//!
//! The token (`DATA_DIR/node-token`, mode 0600) lets a computer ask once for its node's client
//! certificate. It expires (`DATA_DIR/node-token.expires`, unix seconds; `--bootstrap-token-ttl-seconds`
//! at its creation) and is replaced by `axle node token rotate`; the server reads both files
//! when a request presents a token it does not otherwise know, so a rotation needs no restart.
//!
//! With the token, a certificate is signed only for a valid node name (a DNS subdomain, not an
//! IP address, not `localhost`, none of the server's own names) that is not registered yet, or
//! whose Node an administrator marked with [`JOIN_APPROVED`] (`axle node approve NAME`); the
//! mark is used up by the join. A node renews its certificates as itself.

use crate::State;
use api::ApiError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The annotation with which an administrator lets a registered node join again.
pub const JOIN_APPROVED: &str = "axle.dev/join-approved";

/// `DATA_DIR/node-token`.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("node-token")
}

fn expiry_path(data_dir: &Path) -> PathBuf {
    data_dir.join("node-token.expires")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The current token, if it has not expired.
pub fn current_token(data_dir: &Path) -> Option<String> {
    let token = std::fs::read_to_string(token_path(data_dir)).ok()?.trim().to_string();
    let expires: Option<u64> =
        std::fs::read_to_string(expiry_path(data_dir)).ok().and_then(|t| t.trim().parse().ok()).filter(|e| *e > 0);
    if token.is_empty() || expires.is_some_and(|e| unix_now() >= e) {
        return None;
    }
    Some(token)
}

/// Creates the token at first start (a server that has one keeps it, expired or not).
pub fn ensure_token(data_dir: &Path, ttl: Option<Duration>) -> anyhow::Result<()> {
    if std::fs::read_to_string(token_path(data_dir)).is_ok_and(|t| !t.trim().is_empty()) {
        return Ok(());
    }
    rotate(data_dir, ttl).map(|_| ())
}

/// Writes a new token (valid for `ttl`, or until rotated when None) and returns it. The expiry
/// goes first, so a token on disk never outlives what its expiry file says.
pub fn rotate(data_dir: &Path, ttl: Option<Duration>) -> anyhow::Result<String> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let expires = ttl.map_or(0, |ttl| unix_now() + ttl.as_secs());
    crate::write_private(&expiry_path(data_dir), expires.to_string().as_bytes())?;
    crate::write_private(&token_path(data_dir), token.as_bytes())?;
    Ok(token)
}

/// Whether the bootstrap token may have a certificate for `node`: refuses names that are not
/// node names or are the server's, and names already registered unless an administrator
/// approved a new join.
pub fn may_join(state: &State, server_names: &[String], node: &str) -> Result<(), ApiError> {
    if node == "localhost" || node.parse::<IpAddr>().is_ok() || server_names.iter().any(|n| n == node) {
        return Err(ApiError::forbidden(format!(
            "the bootstrap token may not ask for a certificate for {node:?}: it names the server, an address or localhost"
        )));
    }
    let Some(registered) = state.store.get(&store::key("core/nodes", "", node)).ok().flatten() else {
        return Ok(());
    };
    if registered["metadata"]["annotations"][JOIN_APPROVED].is_string() {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "node {node:?} is already registered: the bootstrap token may not ask for its certificate \
         (it renews its own; to let it join again, an administrator runs `axle node approve {node}`)"
    )))
}

/// Uses up an approval once the join it allowed has been signed.
pub async fn consume_approval(state: &State, node: &str) {
    let key = store::key("core/nodes", "", node);
    let consumed = crate::objects::write(state, move |txn| {
        let Some(mut registered) = txn.get(&key)? else { return Ok(()) };
        let Some(annotations) = registered["metadata"]["annotations"].as_object_mut() else { return Ok(()) };
        if annotations.remove(JOIN_APPROVED).is_some() {
            txn.put(&key, registered)?;
        }
        Ok::<(), crate::objects::Abort<()>>(())
    })
    .await;
    if let Err(e) = consumed {
        tracing::warn!(node, error = %e, "cannot remove the join approval of a node that joined");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_expires_and_a_rotation_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_token(dir.path(), Some(Duration::from_secs(3600))).expect("created");
        let first = current_token(dir.path()).expect("valid");
        ensure_token(dir.path(), None).expect("kept");
        assert_eq!(current_token(dir.path()).as_deref(), Some(first.as_str()), "a server keeps its token");
        std::fs::write(expiry_path(dir.path()), (unix_now() - 1).to_string()).expect("expire it");
        assert!(current_token(dir.path()).is_none(), "expired");
        let second = rotate(dir.path(), None).expect("rotated");
        assert_ne!(first, second);
        assert_eq!(current_token(dir.path()), Some(second), "a new token without expiry");
    }
}
