//! Sign-In with Ethereum (EIP-4361): the checks a login message must pass.
//!
//! The `siwe` crate parses the message; the checks are made here, each with its own failure so a
//! client learns exactly what to fix. Externally owned accounts sign with EIP-191 and are
//! recovered; contract wallets are asked through EIP-1271 `isValidSignature` over the same hash.

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, B256, Bytes, Signature, eip191_hash_message},
    providers::{DynProvider, Provider},
    rpc::types::TransactionRequest,
    sol,
    sol_types::SolCall,
};
use chrono::{DateTime, Utc};

use crate::http::error::{ApiError, LoginFailure};

sol! {
    interface IERC1271 {
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4 magicValue);
    }
}

/// `IERC1271.isValidSignature.selector`: what a contract wallet answers for a valid signature.
const ERC1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];
/// Gas an EIP-1271 check may use.
const EIP1271_GAS: u64 = 500_000;
/// Clock differences tolerated between the wallet and the server.
const CLOCK_SKEW_SECS: i64 = 60;
/// The longest signature accepted (contract wallets may concatenate several).
const MAX_SIGNATURE_BYTES: usize = 4096;
/// The longest message accepted. A wallet's message is a few hundred bytes; resources (URIs)
/// may add some, not kilobytes.
pub const MAX_MESSAGE_BYTES: usize = 8192;
/// The longest statement accepted (EIP-4361: one human-readable line).
pub const MAX_STATEMENT_CHARS: usize = 1024;

/// What a login message must match.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The domain (authority) of the frontend.
    pub domain: &'a str,
    /// The URI of the frontend.
    pub uri: &'a str,
    /// The chain the platform runs on.
    pub chain_id: u64,
    /// How old `Issued At` may be.
    pub max_age_secs: i64,
}

/// A parsed, checked login message (signature not yet checked).
#[derive(Debug, Clone)]
pub struct LoginMessage {
    /// The wallet that signs in.
    pub address: Address,
    /// The nonce the server issued.
    pub nonce: String,
    /// The text as signed.
    pub text: String,
    /// The signature bytes.
    pub signature: Bytes,
}

fn refuse(failure: LoginFailure, detail: impl Into<String>) -> ApiError {
    ApiError::Login { failure, detail: detail.into() }
}

fn time(t: &siwe::TimeStamp) -> Option<DateTime<Utc>> {
    let odt: &time::OffsetDateTime = t.as_ref();
    DateTime::from_timestamp(odt.unix_timestamp(), odt.nanosecond())
}

/// Parses the message and signature and checks everything but the nonce's state and the signature.
pub fn check_message(
    text: &str,
    signature: &str,
    expected: &Expected<'_>,
    now: DateTime<Utc>,
) -> Result<LoginMessage, ApiError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(refuse(
            LoginFailure::Malformed,
            format!(
                "the message has {} bytes; at most {MAX_MESSAGE_BYTES} are accepted",
                text.len()
            ),
        ));
    }
    let message: siwe::Message = text.parse().map_err(|err| {
        refuse(LoginFailure::Malformed, format!("not an EIP-4361 message: {err}"))
    })?;
    let signature: Bytes = signature
        .parse()
        .map_err(|_| refuse(LoginFailure::Malformed, "the signature must be 0x-prefixed hex"))?;
    if signature.is_empty() || signature.len() > MAX_SIGNATURE_BYTES {
        return Err(refuse(LoginFailure::Malformed, "the signature is empty or too long"));
    }
    if let Some(statement) = &message.statement
        && statement.chars().count() > MAX_STATEMENT_CHARS
    {
        return Err(refuse(
            LoginFailure::Malformed,
            format!(
                "the statement has {} characters; at most {MAX_STATEMENT_CHARS} are accepted (one line)",
                statement.chars().count()
            ),
        ));
    }
    if message.domain.as_str() != expected.domain {
        return Err(refuse(
            LoginFailure::WrongDomain,
            format!("the message is for {}, sign in for {}", message.domain, expected.domain),
        ));
    }
    if message.uri.as_str() != expected.uri {
        return Err(refuse(
            LoginFailure::WrongUri,
            format!("the message's URI is {}, expected {}", message.uri, expected.uri),
        ));
    }
    if message.chain_id != expected.chain_id {
        return Err(refuse(
            LoginFailure::WrongChain,
            format!(
                "the message is for chain {}, the platform runs on chain {}",
                message.chain_id, expected.chain_id
            ),
        ));
    }
    let skew = chrono::Duration::seconds(CLOCK_SKEW_SECS);
    if let Some(expires) = message.expiration_time.as_ref().and_then(time)
        && expires <= now
    {
        return Err(refuse(LoginFailure::Expired, format!("the message expired at {expires}")));
    }
    if let Some(not_before) = message.not_before.as_ref().and_then(time)
        && not_before > now + skew
    {
        return Err(refuse(
            LoginFailure::NotYetValid,
            format!("the message is valid from {not_before}"),
        ));
    }
    let issued = time(&message.issued_at)
        .ok_or_else(|| refuse(LoginFailure::Malformed, "Issued At is out of range"))?;
    if issued > now + skew || now - issued > chrono::Duration::seconds(expected.max_age_secs) {
        return Err(refuse(
            LoginFailure::StaleIssuedAt,
            format!(
                "the message was issued at {issued}; sign a fresh one (at most {} s old)",
                expected.max_age_secs
            ),
        ));
    }
    Ok(LoginMessage {
        address: Address::from(message.address),
        nonce: message.nonce,
        text: text.to_owned(),
        signature,
    })
}

/// Checks that `message.address` signed `message.text`: by recovery for an account, by
/// EIP-1271 for a contract wallet.
pub async fn check_signature(chain: &DynProvider, message: &LoginMessage) -> Result<(), ApiError> {
    if message.signature.len() == 65
        && let Ok(signature) = Signature::from_raw(&message.signature)
        && signature.recover_address_from_msg(message.text.as_bytes()).ok() == Some(message.address)
    {
        return Ok(());
    }
    let code = chain
        .get_code_at(message.address)
        .await
        .map_err(|err| crate::http::error::chain_unavailable("check a contract wallet", err))?;
    if code.is_empty() {
        return Err(refuse(
            LoginFailure::BadSignature,
            "the signature does not recover to the message's address",
        ));
    }
    let hash: B256 = eip191_hash_message(message.text.as_bytes());
    let call = IERC1271::isValidSignatureCall { hash, signature: message.signature.clone() };
    let request = TransactionRequest::default()
        .with_to(message.address)
        .with_input(call.abi_encode())
        .with_gas_limit(EIP1271_GAS);
    // Only the exact ABI encoding of the magic value counts: a wallet that reverts, answers
    // anything else, or merely starts its answer with the magic bytes refuses the signature.
    let mut magic = [0u8; 32];
    magic[..4].copy_from_slice(&ERC1271_MAGIC);
    match chain.call(request).await {
        Ok(answer) if answer.as_ref() == magic => Ok(()),
        _ => Err(refuse(
            LoginFailure::BadSignature,
            "the contract wallet did not accept the signature (EIP-1271)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use alloy::signers::{SignerSync, local::PrivateKeySigner};

    use super::*;

    const DOMAIN: &str = "app.example";
    const URI: &str = "https://app.example";

    fn expected() -> Expected<'static> {
        Expected { domain: DOMAIN, uri: URI, chain_id: 31337, max_age_secs: 600 }
    }

    fn message(address: Address, issued: DateTime<Utc>, extra: &str) -> String {
        format!(
            "{DOMAIN} wants you to sign in with your Ethereum account:\n{}\n\nSign in to DecentraSpace\n\nURI: {URI}\nVersion: 1\nChain ID: 31337\nNonce: abcdef123456\nIssued At: {}{extra}",
            address.to_checksum(None),
            issued.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    #[test]
    fn accepts_a_well_formed_current_message() {
        let signer = PrivateKeySigner::random();
        let now = Utc::now();
        let text = message(signer.address(), now, "");
        let sig = signer.sign_message_sync(text.as_bytes()).expect("sign");
        let checked = check_message(&text, &sig.to_string(), &expected(), now).expect("valid");
        assert_eq!(checked.address, signer.address());
        assert_eq!(checked.nonce, "abcdef123456");
    }

    #[test]
    fn refuses_each_broken_field_with_its_own_failure() {
        let signer = PrivateKeySigner::random();
        let now = Utc::now();
        let ok = message(signer.address(), now, "");
        let sig = "0x".to_owned() + &"11".repeat(65);
        let cases = [
            (ok.replace(DOMAIN, "evil.example"), LoginFailure::WrongDomain),
            (
                ok.replace("URI: https://app.example", "URI: https://evil.example"),
                LoginFailure::WrongUri,
            ),
            (ok.replace("Chain ID: 31337", "Chain ID: 1"), LoginFailure::WrongChain),
            (
                message(signer.address(), now - chrono::Duration::hours(1), ""),
                LoginFailure::StaleIssuedAt,
            ),
            (
                message(
                    signer.address(),
                    now,
                    &format!(
                        "\nExpiration Time: {}",
                        (now - chrono::Duration::seconds(5))
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                ),
                LoginFailure::Expired,
            ),
            (
                message(
                    signer.address(),
                    now,
                    &format!(
                        "\nNot Before: {}",
                        (now + chrono::Duration::hours(1))
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                ),
                LoginFailure::NotYetValid,
            ),
            ("hello".to_owned(), LoginFailure::Malformed),
        ];
        for (text, want) in cases {
            match check_message(&text, &sig, &expected(), now) {
                Err(ApiError::Login { failure, .. }) => assert_eq!(failure, want, "{text}"),
                other => panic!("expected {want:?} for {text:?}, got {other:?}"),
            }
        }
        match check_message(&ok, "not hex", &expected(), now) {
            Err(ApiError::Login { failure, .. }) => assert_eq!(failure, LoginFailure::Malformed),
            other => panic!("expected a malformed signature, got {other:?}"),
        }
    }

    #[test]
    fn refuses_oversized_messages_and_statements_saying_the_bound() {
        let signer = PrivateKeySigner::random();
        let now = Utc::now();
        let sig = "0x".to_owned() + &"11".repeat(65);
        let ok = message(signer.address(), now, "");
        let long_statement =
            ok.replace("Sign in to DecentraSpace", &"a".repeat(MAX_STATEMENT_CHARS + 1));
        let huge = ok.replace("Sign in to DecentraSpace", &"a".repeat(1_000_000));
        for (text, says) in [(long_statement, "statement has 1025"), (huge, "at most 8192")] {
            match check_message(&text, &sig, &expected(), now) {
                Err(ApiError::Login { failure: LoginFailure::Malformed, detail }) => {
                    assert!(detail.contains(says), "{detail}");
                }
                other => panic!("expected a malformed message, got {other:?}"),
            }
        }
        let at_bound = ok.replace("Sign in to DecentraSpace", &"a".repeat(MAX_STATEMENT_CHARS));
        let signed = signer.sign_message_sync(at_bound.as_bytes()).expect("sign");
        check_message(&at_bound, &signed.to_string(), &expected(), now).expect("at the bound");
    }
}
