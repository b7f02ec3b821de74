//! A database's secrets: its role's password and its backups' key, made at random and sealed at
//! rest for the row they belong to (a sealed value copied to another row does not open).

use anyhow::Context;
use rand::{Rng, distr::Alphanumeric};
use secrecy::{ExposeSecret, SecretString};

use crate::seal::Sealer;

/// Characters of a role's password.
const PASSWORD_LEN: usize = 32;

/// What a sealed secret is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Secret {
    /// The role's password.
    Password,
    /// The backups' AES-256 key (64 hex characters).
    BackupKey,
}

fn context(chain_id: i64, service_id: i64, secret: Secret) -> Vec<u8> {
    let label: &[u8] = match secret {
        Secret::Password => b"database password",
        Secret::BackupKey => b"database backup key",
    };
    [label, &chain_id.to_be_bytes(), &service_id.to_be_bytes()].concat()
}

/// A new random password: 32 letters and digits (about 190 bits).
pub(super) fn password() -> SecretString {
    let password: String =
        rand::rng().sample_iter(&Alphanumeric).take(PASSWORD_LEN).map(char::from).collect();
    SecretString::from(password)
}

/// A new random backup key, hex.
pub(super) fn backup_key() -> SecretString {
    SecretString::from(hex::encode(crate::random::bytes::<32>()))
}

/// `value` sealed as database `service_id`'s `secret`.
pub(super) fn seal(
    sealer: &Sealer,
    chain_id: i64,
    service_id: i64,
    secret: Secret,
    value: &SecretString,
) -> Vec<u8> {
    sealer.seal_for(value, &context(chain_id, service_id, secret))
}

/// Database `service_id`'s `secret`, opened.
pub(super) fn open(
    sealer: &Sealer,
    chain_id: i64,
    service_id: i64,
    secret: Secret,
    sealed: &[u8],
) -> anyhow::Result<SecretString> {
    sealer
        .open_for(sealed, &context(chain_id, service_id, secret))
        .with_context(|| format!("database {service_id}'s {secret:?} does not open"))
}

/// Database `service_id`'s backup key as AES-256 key bytes.
pub(super) fn backup_key_bytes(
    sealer: &Sealer,
    chain_id: i64,
    service_id: i64,
    sealed: &[u8],
) -> anyhow::Result<[u8; 32]> {
    let key = open(sealer, chain_id, service_id, Secret::BackupKey, sealed)?;
    hex::decode(key.expose_secret())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .context("a backup key that is not 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_alphanumeric_and_differ() {
        let (a, b) = (password(), password());
        assert_eq!(a.expose_secret().len(), PASSWORD_LEN);
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn a_sealed_secret_opens_for_its_row_only() {
        let sealer = Sealer::new(None, &SecretString::from("x".repeat(40)));
        let secret = password();
        let sealed = seal(&sealer, 1, 7, Secret::Password, &secret);
        let opened = open(&sealer, 1, 7, Secret::Password, &sealed).unwrap();
        assert_eq!(opened.expose_secret(), secret.expose_secret());
        assert!(open(&sealer, 1, 8, Secret::Password, &sealed).is_err());
        assert!(open(&sealer, 1, 7, Secret::BackupKey, &sealed).is_err());
    }
}
