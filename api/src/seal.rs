//! Secrets at rest (GitHub tokens, sites' build secrets), and the OAuth state that ties a link
//! flow to the account that began it.
//!
//! Tokens are sealed with AES-256-GCM under `GITHUB_TOKEN_KEY`; the row's identity (account and
//! GitHub id) is the associated data, so a sealed token copied into another row does not open.
//! The state is `<account>.<expiry>.<nonce>.<HMAC-SHA256>`, checked in constant time.

use aes_gcm::{
    Aes256Gcm, KeyInit,
    aead::{Aead, Payload},
};
use alloy::primitives::Address;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Nonce bytes in front of each sealed token.
const NONCE: usize = 12;
/// How long a link flow may take.
pub const STATE_TTL_SECS: i64 = 600;

/// Seals and opens tokens, signs and checks states.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
    state_key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// A sealed token that does not open (another key, another row, altered bytes).
#[derive(Debug, thiserror::Error)]
#[error("the stored GitHub token cannot be opened")]
pub struct Unsealable;

/// A 32-byte key for `label`, derived from `secret`.
pub(crate) fn derive(label: &str, secret: &[u8]) -> [u8; 32] {
    Sha256::new().chain_update(label).chain_update([0]).chain_update(secret).finalize().into()
}

impl Sealer {
    /// Keys from `token_key` (32 bytes) when given, else derived from the JWT secret; the state
    /// key is always derived from the JWT secret.
    pub fn new(token_key: Option<[u8; 32]>, jwt_secret: &SecretString) -> Self {
        let secret = jwt_secret.expose_secret().as_bytes();
        let key = token_key.unwrap_or_else(|| derive("decentraspace github token key", secret));
        Self {
            cipher: Aes256Gcm::new(&aes_gcm::Key::<Aes256Gcm>::from(key)),
            state_key: derive("decentraspace github link state", secret),
        }
    }

    fn aad(account: Address, github_id: i64) -> Vec<u8> {
        [account.as_slice(), &github_id.to_be_bytes()].concat()
    }

    /// The token sealed for the row (`account`, `github_id`).
    pub fn seal(&self, token: &SecretString, account: Address, github_id: i64) -> Vec<u8> {
        self.seal_for(token, &Self::aad(account, github_id))
    }

    /// `secret` sealed for the row named by `context` (its associated data: the sealed bytes open
    /// only for the same context).
    pub fn seal_for(&self, secret: &SecretString, context: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                &aes_gcm::Nonce::from(nonce),
                Payload { msg: secret.expose_secret().as_bytes(), aad: context },
            )
            .expect("AES-GCM seals any token");
        [nonce.as_slice(), &sealed].concat()
    }

    /// The token of the row (`account`, `github_id`).
    pub fn open(
        &self,
        sealed: &[u8],
        account: Address,
        github_id: i64,
    ) -> Result<SecretString, Unsealable> {
        self.open_for(sealed, &Self::aad(account, github_id))
    }

    /// Opens what [`Sealer::seal_for`] sealed for `context`.
    pub fn open_for(&self, sealed: &[u8], context: &[u8]) -> Result<SecretString, Unsealable> {
        if sealed.len() <= NONCE {
            return Err(Unsealable);
        }
        let (nonce, body) = sealed.split_at(NONCE);
        let nonce: [u8; NONCE] = nonce.try_into().map_err(|_| Unsealable)?;
        let clear = self
            .cipher
            .decrypt(&aes_gcm::Nonce::from(nonce), Payload { msg: body, aad: context })
            .map_err(|_| Unsealable)?;
        String::from_utf8(clear).map(SecretString::from).map_err(|_| Unsealable)
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.state_key).expect("any key length");
        mac.update(body.as_bytes());
        mac
    }

    /// A state for `account`'s link flow, valid until `now + STATE_TTL_SECS`.
    pub fn state(&self, account: Address, now: i64) -> String {
        let nonce: [u8; 16] = rand::random();
        let body =
            format!("{}.{}.{}", hex::encode(account), now + STATE_TTL_SECS, hex::encode(nonce));
        let tag = hex::encode(self.mac(&body).finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// Whether `state` was made here for `account` and has not expired at `now`.
    pub fn check_state(&self, state: &str, account: Address, now: i64) -> bool {
        let Some((body, tag)) = state.rsplit_once('.') else { return false };
        let Ok(tag) = hex::decode(tag) else { return false };
        if self.mac(body).verify_slice(&tag).is_err() {
            return false;
        }
        let mut parts = body.split('.');
        let (Some(who), Some(expiry)) = (parts.next(), parts.next()) else { return false };
        who == hex::encode(account) && expiry.parse::<i64>().is_ok_and(|e| now <= e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer(secret: &str) -> Sealer {
        Sealer::new(None, &SecretString::from(secret))
    }

    #[test]
    fn tokens_open_only_for_their_row_and_key() {
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let s = sealer("k1");
        let sealed = s.seal(&SecretString::from("gho_secret"), a, 7);
        assert!(!sealed.windows(10).any(|w| w == b"gho_secret"), "not stored in clear");
        assert_eq!(s.open(&sealed, a, 7).expect("opens").expose_secret(), "gho_secret");
        assert!(s.open(&sealed, b, 7).is_err(), "another account");
        assert!(s.open(&sealed, a, 8).is_err(), "another GitHub id");
        assert!(sealer("k2").open(&sealed, a, 7).is_err(), "another key");
        let mut altered = sealed.clone();
        *altered.last_mut().expect("bytes") ^= 1;
        assert!(s.open(&altered, a, 7).is_err(), "altered");
        assert!(s.open(&sealed[..5], a, 7).is_err(), "truncated");
    }

    #[test]
    fn states_are_bound_to_the_account_and_expire() {
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let s = sealer("k1");
        let state = s.state(a, 1_000);
        assert!(s.check_state(&state, a, 1_000 + STATE_TTL_SECS));
        assert!(!s.check_state(&state, a, 1_001 + STATE_TTL_SECS), "expired");
        assert!(!s.check_state(&state, b, 1_000), "another account");
        assert!(!sealer("k2").check_state(&state, a, 1_000), "another key");
        let forged = state.replacen(&hex::encode(a), &hex::encode(b), 1);
        assert!(!s.check_state(&forged, b, 1_000), "a forged account");
        assert!(!s.check_state("garbage", a, 1_000));
    }
}
