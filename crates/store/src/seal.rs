//! Encryption at rest for chosen kinds (the server seals Secrets): the stored bytes of an
//! object under a sealed key prefix, and of its change-log entries, are
//! `axle:sealed:v1:` + a random 96-bit nonce + ChaCha20-Poly1305 ciphertext of the JSON, bound
//! to where it is stored (the object's key, or the change's resourceVersion) as associated
//! data: sealed bytes moved elsewhere do not open. Everything else stays plain JSON. Reading tells sealed bytes by their prefix, so a
//! store written before sealing was switched on stays readable, and its objects are sealed by
//! their next write.

use crate::StoreError;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};

const MAGIC: &[u8] = b"axle:sealed:v1:";
const NONCE_LEN: usize = 12;

/// Which keys are sealed, and with what key.
#[derive(Clone)]
pub struct Sealing {
    pub key: [u8; 32],
    /// Key prefixes whose objects are sealed (`core/secrets/`).
    pub prefixes: Vec<String>,
}

impl Sealing {
    /// A new random key.
    pub fn new_key() -> [u8; 32] {
        ChaCha20Poly1305::generate_key(&mut OsRng).into()
    }
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealing").field("prefixes", &self.prefixes).finish_non_exhaustive()
    }
}

/// How objects become bytes and back.
pub(crate) struct Codec {
    sealing: Option<(ChaCha20Poly1305, Vec<String>)>,
}

impl Codec {
    pub(crate) fn new(sealing: Option<&Sealing>) -> Codec {
        Codec { sealing: sealing.map(|s| (ChaCha20Poly1305::new(&s.key.into()), s.prefixes.clone())) }
    }

    fn cipher_for(&self, key: &str) -> Option<&ChaCha20Poly1305> {
        let (cipher, prefixes) = self.sealing.as_ref()?;
        prefixes.iter().any(|p| key.starts_with(p.as_str())).then_some(cipher)
    }

    /// The stored form of `json` (an object under `key`, or a change-log entry about it),
    /// bound to `place` (where it is stored).
    pub(crate) fn seal(&self, key: &str, place: &str, json: Vec<u8>) -> Vec<u8> {
        let Some(cipher) = self.cipher_for(key) else { return json };
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let Ok(ciphertext) = cipher.encrypt(&nonce, Payload { msg: &json, aad: place.as_bytes() }) else {
            // Encryption of an in-memory buffer does not fail; never store plaintext if it did.
            return MAGIC.to_vec();
        };
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + ciphertext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// The JSON of the bytes stored at `place`.
    pub(crate) fn open<'b>(&self, place: &str, bytes: &'b [u8]) -> Result<std::borrow::Cow<'b, [u8]>, StoreError> {
        let Some(sealed) = bytes.strip_prefix(MAGIC) else { return Ok(std::borrow::Cow::Borrowed(bytes)) };
        let unreadable = |why: &str| StoreError::Sealed { key: place.to_string(), why: why.to_string() };
        let (cipher, _) = self.sealing.as_ref().ok_or_else(|| unreadable("it is sealed and no key is configured"))?;
        if sealed.len() < NONCE_LEN {
            return Err(unreadable("it is truncated"));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: place.as_bytes() })
            .map(std::borrow::Cow::Owned)
            .map_err(|_| unreadable("it does not open with this key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealing(key: u8) -> Sealing {
        Sealing { key: [key; 32], prefixes: vec!["core/secrets/".into()] }
    }

    #[test]
    fn sealed_keys_round_trip_and_others_stay_plain() {
        let codec = Codec::new(Some(&sealing(7)));
        let json = br#"{"data":{"password":"aHVudGVyMg=="}}"#.to_vec();
        let sealed = codec.seal("core/secrets/car/db", "core/secrets/car/db", json.clone());
        assert!(sealed.starts_with(MAGIC));
        assert!(!sealed.windows(8).any(|w| w == b"aHVudGVy"));
        assert_eq!(codec.open("core/secrets/car/db", &sealed).expect("opens").as_ref(), json.as_slice());
        // Under another key (moved), with another key, or without one: refused.
        assert!(codec.open("core/secrets/car/other", &sealed).is_err());
        assert!(Codec::new(Some(&sealing(8))).open("core/secrets/car/db", &sealed).is_err());
        assert!(Codec::new(None).open("core/secrets/car/db", &sealed).is_err());
        // Other kinds, and plain bytes written before sealing, pass through.
        assert_eq!(codec.seal("core/configmaps/car/c", "core/configmaps/car/c", json.clone()), json);
        assert_eq!(codec.open("core/secrets/car/old", &json).expect("plain").as_ref(), json.as_slice());
    }
}
