//! Secrets at rest: values sealed with XChaCha20-Poly1305 under a key ring
//! read from the environment (`DOSSIER__APPS__ENCRYPTION_KEYS`).
//!
//! A sealed value reads `v1:<key id>:<hex nonce><hex ciphertext>`. The first
//! key of the ring seals; every key of the ring opens (by its id), so keys
//! rotate by putting a new key first, re-sealing (`dossier app rekey`), then
//! dropping the old one. Each value is bound to where it belongs (the
//! associated data: client, app and setting), so a sealed value copied to
//! another client or setting does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::config::Secret;
use crate::digest::to_hex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error(
        "apps.encryption_keys: {0}; each key is \"ID:64 hex characters\" (32 random bytes, e.g. `openssl rand -hex 32`)"
    )]
    BadKey(String),
    #[error(
        "no encryption key: set DOSSIER__APPS__ENCRYPTION_KEYS='[\"k1:<64 hex>\"]' to store secret settings"
    )]
    NoKey,
    #[error("a sealed value uses key {0}, which is not in apps.encryption_keys any more")]
    UnknownKey(String),
    #[error("a sealed value does not open: wrong key, or not where it was sealed")]
    Tampered,
}

#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(String, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("KeyRing").field("ids", &ids).finish()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl KeyRing {
    pub fn new(keys: &[Secret]) -> Result<KeyRing, SecretError> {
        let mut ring = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let (id, hex) =
                k.expose().trim().split_once(':').ok_or_else(|| {
                    SecretError::BadKey(format!("key {} has no ID: prefix", i + 1))
                })?;
            let bytes = unhex(hex)
                .filter(|b| b.len() == 32)
                .ok_or_else(|| SecretError::BadKey(format!("key {id:?} is not 32 bytes of hex")))?;
            if id.is_empty() || id.contains(':') || ring.iter().any(|(k, _)| k == id) {
                return Err(SecretError::BadKey(format!(
                    "key id {id:?} is empty or repeated"
                )));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| SecretError::BadKey(format!("key {id:?} is not 32 bytes")))?;
            ring.push((id.to_string(), cipher));
        }
        Ok(KeyRing { keys: ring })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals `plain`, bound to `context`, with the first key.
    pub fn seal(&self, plain: &str, context: &str) -> Result<String, SecretError> {
        let (id, cipher) = self.keys.first().ok_or(SecretError::NoKey)?;
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Tampered)?;
        Ok(format!("v1:{id}:{}{}", to_hex(&nonce), to_hex(&sealed)))
    }

    /// Whether a value is sealed (and so must be opened, never shown).
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with("v1:")
    }

    /// The key id a sealed value uses.
    pub fn key_of(sealed: &str) -> Option<&str> {
        sealed.strip_prefix("v1:")?.split(':').next()
    }

    /// Whether the value is sealed with the current (first) key.
    pub fn is_current(&self, sealed: &str) -> bool {
        self.keys.first().map(|(id, _)| id.as_str()) == KeyRing::key_of(sealed)
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<String, SecretError> {
        let rest = sealed.strip_prefix("v1:").ok_or(SecretError::Tampered)?;
        let (id, data) = rest.split_once(':').ok_or(SecretError::Tampered)?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or_else(|| SecretError::UnknownKey(id.to_string()))?;
        let bytes = unhex(data)
            .filter(|b| b.len() > 24)
            .ok_or(SecretError::Tampered)?;
        let (nonce, body) = bytes.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| SecretError::Tampered)?;
        let plain = cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: body,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Tampered)?;
        String::from_utf8(plain).map_err(|_| SecretError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> Secret {
        serde_json::from_str(&format!("\"{id}:{}\"", to_hex(&[byte; 32]))).expect("secret")
    }

    #[test]
    fn seal_open_rotate_and_refuse_tampering() {
        let old = KeyRing::new(&[key("k1", 1)]).expect("ring");
        let sealed = old.seal("api-key-123", "c1/app/api_key").expect("seal");
        assert!(sealed.starts_with("v1:k1:") && !sealed.contains("api-key-123"));
        assert_eq!(
            old.open(&sealed, "c1/app/api_key").as_deref(),
            Ok("api-key-123")
        );
        assert_eq!(
            old.open(&sealed, "c2/app/api_key"),
            Err(SecretError::Tampered)
        );
        let rotated = KeyRing::new(&[key("k2", 2), key("k1", 1)]).expect("ring");
        assert_eq!(
            rotated.open(&sealed, "c1/app/api_key").as_deref(),
            Ok("api-key-123")
        );
        assert!(!rotated.is_current(&sealed));
        let resealed = rotated.seal("api-key-123", "c1/app/api_key").expect("seal");
        assert!(rotated.is_current(&resealed));
        let new_only = KeyRing::new(&[key("k2", 2)]).expect("ring");
        assert_eq!(
            new_only.open(&sealed, "c1/app/api_key"),
            Err(SecretError::UnknownKey("k1".into()))
        );
        assert!(KeyRing::new(&[key("k1", 1), key("k1", 2)]).is_err());
        assert!(KeyRing::new(&[serde_json::from_str("\"nocolon\"").expect("s")]).is_err());
    }
}
