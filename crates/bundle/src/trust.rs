//! Keys, signed metadata and the trust root.
//!
//! Metadata is TUF-shaped: `{"signed": {...}, "signatures": [{"keyid", "sig"}]}`, signatures over
//! the canonical JSON of `signed` (keys sorted, no whitespace). A key's id is the SHA-256 of its
//! canonical public form. The root names the keys and thresholds of every role — `root`,
//! `targets` (what may be installed) and `bundle` (the monotonic version and expiry that bind a
//! bundle's targets together) — and is rotated by a new root signed by a threshold of both the
//! old and the new root keys.

use crate::BundleError;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::collections::BTreeSet;
use std::path::Path;

pub const ROLES: &[&str] = &["root", "targets", "bundle"];

/// Canonical JSON: object keys sorted at every level, no insignificant whitespace. Sorted
/// explicitly, so that a dependency turning on serde_json's `preserve_order` cannot change
/// what signatures cover.
pub fn canonical(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_vec(&sorted(value)).unwrap_or_default()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// An ed25519 key pair (the private half stays in its file, mode 0600).
pub struct KeyPair {
    signing: SigningKey,
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair, BundleError> {
        let mut seed = [0u8; 32];
        let mut random = std::fs::File::open("/dev/urandom").map_err(BundleError::io("/dev/urandom"))?;
        std::io::Read::read_exact(&mut random, &mut seed).map_err(BundleError::io("/dev/urandom"))?;
        Ok(KeyPair { signing: SigningKey::from_bytes(&seed) })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> String {
        hex(&self.signing.sign(message).to_bytes())
    }

    /// Writes `NAME.key` (private, owner-only) and `NAME.pub`.
    pub fn save(&self, stem: &Path) -> Result<(), BundleError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let private =
            json!({"keytype": "ed25519", "private": hex(self.signing.as_bytes()), "public": self.public().hex()});
        let path = stem.with_extension("key");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(BundleError::io(&path))?;
        file.write_all(&serde_json::to_vec_pretty(&private).unwrap_or_default()).map_err(BundleError::io(&path))?;
        let path = stem.with_extension("pub");
        std::fs::write(&path, serde_json::to_vec_pretty(&self.public().to_json()).unwrap_or_default())
            .map_err(BundleError::io(&path))
    }

    pub fn load(path: &Path) -> Result<KeyPair, BundleError> {
        let value: Value = read_json(path)?;
        let bytes = value["private"].as_str().and_then(unhex).filter(|b| b.len() == 32);
        let bytes =
            bytes.ok_or_else(|| BundleError::Key(format!("{}: not an Axle ed25519 private key", path.display())))?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes);
        Ok(KeyPair { signing: SigningKey::from_bytes(&seed) })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn hex(&self) -> String {
        hex(self.0.as_bytes())
    }

    pub fn to_json(&self) -> Value {
        json!({"keytype": "ed25519", "public": self.hex()})
    }

    pub fn id(&self) -> String {
        sha256_hex(&canonical(&self.to_json()))
    }

    pub fn from_json(value: &Value) -> Result<PublicKey, BundleError> {
        if value["keytype"] != "ed25519" {
            return Err(BundleError::Key(format!("key type {} is not ed25519", value["keytype"])));
        }
        let bytes = value["public"].as_str().and_then(unhex).filter(|b| b.len() == 32);
        let bytes = bytes.ok_or_else(|| BundleError::Key("a public key is 32 bytes in hex".into()))?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&bytes);
        VerifyingKey::from_bytes(&raw).map(PublicKey).map_err(|e| BundleError::Key(e.to_string()))
    }

    pub fn load(path: &Path) -> Result<PublicKey, BundleError> {
        PublicKey::from_json(&read_json(path)?)
    }

    /// Strict verification (no malleable signatures).
    pub fn verify(&self, message: &[u8], signature_hex: &str) -> bool {
        let Some(bytes) = unhex(signature_hex).filter(|b| b.len() == 64) else { return false };
        let mut raw = [0u8; 64];
        raw.copy_from_slice(&bytes);
        self.0.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&raw)).is_ok()
    }
}

pub fn read_json(path: &Path) -> Result<Value, BundleError> {
    let bytes = std::fs::read(path).map_err(BundleError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| BundleError::Metadata(format!("{}: {e}", path.display())))
}

/// Wraps `signed` and signs it with `keys`.
pub fn sign(signed: Value, keys: &[&KeyPair]) -> Value {
    let message = canonical(&signed);
    let signatures: Vec<Value> =
        keys.iter().map(|k| json!({"keyid": k.public().id(), "sig": k.sign(&message)})).collect();
    json!({"signed": signed, "signatures": signatures})
}

/// Adds signatures to an envelope (another key holder's turn: threshold signing).
pub fn add_signatures(envelope: &mut Value, keys: &[&KeyPair]) {
    let message = canonical(&envelope["signed"]);
    let mut signatures = envelope["signatures"].as_array().cloned().unwrap_or_default();
    for key in keys {
        let id = key.public().id();
        signatures.retain(|s| s["keyid"] != id.as_str());
        signatures.push(json!({"keyid": id, "sig": key.sign(&message)}));
    }
    envelope["signatures"] = Value::Array(signatures);
}

/// A verified root: keys and the thresholds of each role.
#[derive(Debug, Clone)]
pub struct Root {
    pub envelope: Value,
}

impl Root {
    /// Builds (unsigned) root metadata: `roles` maps a role to (public keys, threshold).
    pub fn metadata(version: u64, expires: &str, roles: &[(&str, Vec<PublicKey>, usize)]) -> Value {
        let mut keys = serde_json::Map::new();
        let mut role_map = serde_json::Map::new();
        for (role, publics, threshold) in roles {
            let ids: Vec<String> = publics.iter().map(PublicKey::id).collect();
            for key in publics {
                keys.insert(key.id(), key.to_json());
            }
            role_map.insert(role.to_string(), json!({"keyids": ids, "threshold": threshold}));
        }
        json!({"_type": "root", "spec_version": "1.0", "version": version, "expires": expires, "keys": keys, "roles": role_map})
    }

    /// Trusts a root on first use (the car's pinned root): it must be signed by its own root
    /// threshold and name every role.
    pub fn trust_initial(envelope: Value) -> Result<Root, BundleError> {
        let root = Root { envelope };
        if root.signed()["_type"] != "root" {
            return Err(BundleError::Metadata("not root metadata".into()));
        }
        for role in ROLES {
            if root.signed()["roles"][*role]["threshold"].as_u64().unwrap_or(0) < 1 {
                return Err(BundleError::Metadata(format!("root metadata has no {role} role with a threshold ≥ 1")));
            }
        }
        root.check(&root.envelope, "root")?;
        Ok(root)
    }

    /// Rotation: `next` must have version + 1 and be signed by a threshold of this root's
    /// root keys and of its own.
    pub fn rotate(&self, next: Value) -> Result<Root, BundleError> {
        let version = self.version();
        if next["signed"]["version"].as_u64() != Some(version + 1) {
            return Err(BundleError::Rollback {
                what: "root".into(),
                trusted: version,
                offered: next["signed"]["version"].as_u64().unwrap_or(0),
            });
        }
        self.check(&next, "root")?;
        Root::trust_initial(next)
    }

    pub fn signed(&self) -> &Value {
        &self.envelope["signed"]
    }

    pub fn version(&self) -> u64 {
        self.signed()["version"].as_u64().unwrap_or(0)
    }

    pub fn expires(&self) -> &str {
        self.signed()["expires"].as_str().unwrap_or("")
    }

    /// Checks that `envelope` carries at least the threshold of valid signatures of distinct
    /// keys of `role`.
    pub fn check(&self, envelope: &Value, role: &str) -> Result<(), BundleError> {
        let spec = &self.signed()["roles"][role];
        let threshold = spec["threshold"].as_u64().unwrap_or(u64::MAX) as usize;
        let allowed: BTreeSet<&str> =
            spec["keyids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let message = canonical(&envelope["signed"]);
        let mut valid = BTreeSet::new();
        for signature in envelope["signatures"].as_array().into_iter().flatten() {
            let Some(id) = signature["keyid"].as_str().filter(|id| allowed.contains(id)) else { continue };
            let Ok(key) = PublicKey::from_json(&self.signed()["keys"][id]) else { continue };
            if key.verify(&message, signature["sig"].as_str().unwrap_or("")) {
                valid.insert(id.to_string());
            }
        }
        if valid.len() < threshold {
            return Err(BundleError::Signatures { role: role.into(), valid: valid.len(), threshold });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with(keys: &[&KeyPair], version: u64, threshold: usize) -> Value {
        let publics: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
        let roles: Vec<(&str, Vec<PublicKey>, usize)> =
            ROLES.iter().map(|r| (*r, publics.clone(), threshold)).collect();
        sign(Root::metadata(version, "2099-01-01T00:00:00Z", &roles), keys)
    }

    #[test]
    fn thresholds_count_distinct_valid_keys_of_the_role() {
        let (a, b, stranger) =
            (KeyPair::generate().expect("key"), KeyPair::generate().expect("key"), KeyPair::generate().expect("key"));
        let root = Root::trust_initial(root_with(&[&a, &b], 1, 2)).expect("self-signed by both");
        let one = sign(json!({"_type": "targets"}), &[&a]);
        assert!(matches!(root.check(&one, "targets"), Err(BundleError::Signatures { valid: 1, threshold: 2, .. })));
        let doubled = json!({"signed": one["signed"], "signatures": [one["signatures"][0], one["signatures"][0]]});
        assert!(root.check(&doubled, "targets").is_err(), "one key twice is still one");
        let mut both = one.clone();
        add_signatures(&mut both, &[&b]);
        assert!(root.check(&both, "targets").is_ok());
        let mut tampered = both.clone();
        tampered["signed"]["_type"] = json!("evil");
        assert!(root.check(&tampered, "targets").is_err());
        let foreign = sign(json!({"_type": "targets"}), &[&stranger, &a]);
        assert!(root.check(&foreign, "targets").is_err(), "a key the root does not name counts for nothing");
    }

    #[test]
    fn roots_rotate_only_with_both_thresholds_and_the_next_version() {
        let (old, new) = (KeyPair::generate().expect("key"), KeyPair::generate().expect("key"));
        let root = Root::trust_initial(root_with(&[&old], 1, 1)).expect("root");
        let publics = vec![new.public()];
        let roles: Vec<(&str, Vec<PublicKey>, usize)> = ROLES.iter().map(|r| (*r, publics.clone(), 1)).collect();
        let next = Root::metadata(2, "2099-01-01T00:00:00Z", &roles);
        assert!(root.rotate(sign(next.clone(), &[&new])).is_err(), "the old keys must agree");
        assert!(root.rotate(sign(next.clone(), &[&old])).is_err(), "the new keys must agree");
        let rotated = root.rotate(sign(next, &[&old, &new])).expect("rotated");
        assert_eq!(rotated.version(), 2);
        let skipped = Root::metadata(4, "2099-01-01T00:00:00Z", &roles);
        assert!(matches!(rotated.rotate(sign(skipped, &[&new])), Err(BundleError::Rollback { .. })));
    }

    #[test]
    fn keys_round_trip_through_their_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = KeyPair::generate().expect("key");
        key.save(&dir.path().join("release")).expect("saved");
        let loaded = KeyPair::load(&dir.path().join("release.key")).expect("loaded");
        assert_eq!(loaded.public(), key.public());
        assert_eq!(PublicKey::load(&dir.path().join("release.pub")).expect("public"), key.public());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("release.key")).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
