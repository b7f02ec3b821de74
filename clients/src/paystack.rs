//! A small client of Paystack's documented REST API (`/transaction/initialize`,
//! `/transaction/verify/{reference}`) and its webhook signature, behind a trait so the base URL
//! (and in tests, the server) can change while the code path stays the same.

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha512;

/// A transaction to initialize.
#[derive(Debug, Clone, Serialize)]
pub struct Initialize {
    /// The payer's email (Paystack requires one).
    pub email: String,
    /// The amount in the currency's subunit (kobo, pesewas, cents).
    pub amount: u64,
    /// NGN, GHS, KES, ZAR or USD.
    pub currency: String,
    /// The platform's reference for the payment.
    pub reference: String,
    /// Carried back in the verification (the wallet, for support).
    pub metadata: serde_json::Value,
}

/// Paystack's answer to an initialization.
#[derive(Debug, Clone, Deserialize)]
pub struct Initialized {
    /// Where the payer pays.
    pub authorization_url: String,
    /// Paystack's access code.
    pub access_code: String,
    /// The reference (as sent).
    pub reference: String,
}

/// A transaction as Paystack reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Transaction {
    /// `success`, `failed`, `abandoned`, `ongoing`, `pending`, `reversed`…
    pub status: String,
    /// The reference.
    pub reference: String,
    /// The amount paid, in the subunit.
    pub amount: u64,
    /// The currency.
    pub currency: String,
}

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    status: bool,
    message: String,
    data: Option<T>,
}

/// Why a Paystack call failed.
#[derive(Debug, thiserror::Error)]
pub enum PaystackError {
    /// Paystack could not be reached or answered 5xx: try again later.
    #[error("paystack unavailable: {0}")]
    Unavailable(String),
    /// Paystack refused the call (4xx, `status: false`).
    #[error("paystack refused: {0}")]
    Refused(String),
    /// Paystack does not know what the call names (HTTP 400 or 404 with `status: false`: how
    /// its verify endpoint answers a reference it never saw).
    #[error("paystack does not know it: {0}")]
    Unknown(String),
}

impl PaystackError {
    /// Whether a retry may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The card-payment provider.
#[async_trait]
pub trait CardPayments: Send + Sync + std::fmt::Debug {
    /// Starts a payment.
    async fn initialize(&self, request: &Initialize) -> Result<Initialized, PaystackError>;
    /// Asks how a payment stands.
    async fn verify(&self, reference: &str) -> Result<Transaction, PaystackError>;
    /// Whether `signature` (the `x-paystack-signature` header) signs `body`.
    fn signature_valid(&self, body: &[u8], signature: &str) -> bool;
}

/// Paystack over HTTPS.
#[derive(Debug, Clone)]
pub struct Paystack {
    http: reqwest::Client,
    base_url: String,
    secret: SecretString,
}

impl Paystack {
    /// A client of the API at `base_url` (`https://api.paystack.co` in production).
    pub fn new(base_url: &str, secret: SecretString) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
        Ok(Self { http, base_url: base_url.trim_end_matches('/').to_owned(), secret })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, PaystackError> {
        let response = request
            .bearer_auth(self.secret.expose_secret())
            .send()
            .await
            // The error may name the URL; never the key (it travels in a header).
            .map_err(|err| PaystackError::Unavailable(err.without_url().to_string()))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(PaystackError::Unavailable(format!("HTTP {status}")));
        }
        let envelope: Envelope<T> = response.json().await.map_err(|err| {
            PaystackError::Unavailable(format!("unreadable answer: {}", err.without_url()))
        })?;
        match (envelope.status, envelope.data) {
            (true, Some(data)) if status.is_success() => Ok(data),
            _ if matches!(
                status,
                reqwest::StatusCode::BAD_REQUEST | reqwest::StatusCode::NOT_FOUND
            ) =>
            {
                Err(PaystackError::Unknown(envelope.message))
            }
            _ => Err(PaystackError::Refused(envelope.message)),
        }
    }
}

#[async_trait]
impl CardPayments for Paystack {
    async fn initialize(&self, request: &Initialize) -> Result<Initialized, PaystackError> {
        self.call(self.http.post(format!("{}/transaction/initialize", self.base_url)).json(request))
            .await
    }

    async fn verify(&self, reference: &str) -> Result<Transaction, PaystackError> {
        let url = format!("{}/transaction/verify/{}", self.base_url, urlencode(reference));
        self.call(self.http.get(url)).await
    }

    fn signature_valid(&self, body: &[u8], signature: &str) -> bool {
        let Ok(expected) = alloy::hex::decode(signature.trim()) else { return false };
        let Ok(mut mac) = Hmac::<Sha512>::new_from_slice(self.secret.expose_secret().as_bytes())
        else {
            return false;
        };
        mac.update(body);
        // Constant-time comparison.
        mac.verify_slice(&expected).is_ok()
    }
}

/// References are the platform's own (`ds_` + hex), but encode anyway.
fn urlencode(reference: &str) -> String {
    reference
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_paystack_signatures() {
        let paystack =
            Paystack::new("http://127.0.0.1:1", SecretString::from("sk_test_x")).expect("client");
        let body = br#"{"event":"charge.success"}"#;
        let mut mac = Hmac::<Sha512>::new_from_slice(b"sk_test_x").expect("key");
        mac.update(body);
        let good = alloy::hex::encode(mac.finalize().into_bytes());
        assert!(paystack.signature_valid(body, &good));
        assert!(!paystack.signature_valid(b"{}", &good));
        assert!(!paystack.signature_valid(body, "zz"));
        assert_eq!(urlencode("ds_ab/c"), "ds_ab%2Fc");
    }
}
