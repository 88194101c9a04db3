//! The invitation link's token, derived rather than drawn: HMAC-SHA256 of a
//! per-send nonce under a server key. A send retried after an unknown
//! outcome (see `jobs::invitation`) derives the same token from the nonce
//! kept with the send, so the person who gets two copies gets one link, and
//! the database holds only the token's hash and the nonce — neither gives
//! the link without the key.
//!
//! The key is `invitations.link_key` when set (kept outside the database),
//! else one drawn once and kept in the `server_keys` table, which every
//! process on the database shares.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock::now_ms;
use crate::config::Secret;
use crate::db::{Database, on_pool};
use crate::digest::to_hex;

/// The `server_keys` row of the key used when none is configured.
const KEY_NAME: &str = "invitation_links";

/// Binds the derivation to its use: the same key never yields another
/// system's value.
const CONTEXT: &[u8] = b"dossier invitation link v1\0";

#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(***)")
    }
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[derive(Debug, thiserror::Error)]
pub enum LinkKeyError {
    #[error("invitations.link_key must be 64 hex characters")]
    BadKey,
    #[error("the stored invitation link key (server_keys.{KEY_NAME}) is not 64 hex characters")]
    BadStored,
    #[error("reading the invitation link key: {0}")]
    Db(#[from] sqlx::Error),
}

impl LinkKey {
    /// The configured key, else the database's (drawn by the first process
    /// that needs it; a concurrent one reads the winner's).
    pub async fn resolve(
        db: &Database,
        configured: Option<&Secret>,
    ) -> Result<LinkKey, LinkKeyError> {
        if let Some(key) = configured {
            return from_hex(key.expose())
                .map(LinkKey)
                .ok_or(LinkKeyError::BadKey);
        }
        let drawn = crate::digest::random_token();
        let turn = db.write_turn(crate::write_gate::Lane::Background).await;
        on_pool!(db, pool => sqlx::query(
            "INSERT INTO server_keys (name, value, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(KEY_NAME)
        .bind(&drawn)
        .bind(now_ms())
        .execute(pool)
        .await?
        .rows_affected());
        drop(turn);
        let stored: String = on_pool!(db, pool => sqlx::query_scalar(
            "SELECT value FROM server_keys WHERE name = $1",
        )
        .bind(KEY_NAME)
        .fetch_one(pool)
        .await?);
        from_hex(&stored)
            .map(LinkKey)
            .ok_or(LinkKeyError::BadStored)
    }

    /// The token of the send whose nonce is `nonce`: 64 hex characters, as
    /// `invitations::accept` expects.
    pub fn token(&self, nonce: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(CONTEXT);
        mac.update(nonce.as_bytes());
        to_hex(&mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_gives_one_token_and_another_nonce_another() {
        let key = LinkKey(from_hex(&"ab".repeat(32)).expect("hex"));
        let a = key.token("nonce-1");
        assert_eq!(a, key.token("nonce-1"));
        assert_ne!(a, key.token("nonce-2"));
        assert_eq!(a.len(), 64);
        let other = LinkKey(from_hex(&"cd".repeat(32)).expect("hex"));
        assert_ne!(a, other.token("nonce-1"));
        assert!(from_hex("zz").is_none());
        assert_eq!(format!("{key:?}"), "LinkKey(***)");
    }
}
