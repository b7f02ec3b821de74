//! Proofs of control of a name: a TXT record `_decentraspace.<domain>` holding a token bound to
//! the account and the domain, looked up through a configurable resolver (DNS names) or a
//! Handshake-aware one (Handshake names). The token is an HMAC, so nothing is stored to check it
//! and nobody can make one for another account.

use alloy::primitives::Address;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::domains::DomainsState;

pub use decentraspace_clients::dns::{LookupError, TxtResolver};

/// The record's prefix.
pub const PREFIX: &str = "_decentraspace";

/// The record a domain's owner sets, and the value it must hold for `account`.
pub fn challenge(state: &DomainsState, account: Address, domain: &str) -> (String, String) {
    let key = state.config.domain_proof_key.as_ref().unwrap_or(&state.config.jwt_secret);
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).expect("HMAC takes any key");
    mac.update(format!("domain-proof\0{}\0{account}\0{domain}", state.chain_id()).as_bytes());
    let token = alloy::hex::encode(&mac.finalize().into_bytes()[..16]);
    (format!("{PREFIX}.{domain}"), format!("decentraspace-verify={token}"))
}
