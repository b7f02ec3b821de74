//! The one shape every bearer-authorised JSON provider shares: send with the token, take a 2xx
//! body, and otherwise the status with the message the provider's error body carries.

use reqwest::{RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};

/// Why a call did not answer 2xx.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer (connection, timeout): the cause, without the URL.
    Unreachable(String),
    /// An answer with a status outside 2xx, and the provider's message.
    Status {
        /// The status.
        status: StatusCode,
        /// What the provider said (its error body's message, else the body's start).
        message: String,
    },
}

/// Sends `request` with `token` as a bearer token: the body of a 2xx answer, else why not.
/// `message_of` reads the provider's message out of its JSON error body.
pub(crate) async fn send_bearer(
    request: RequestBuilder,
    token: &SecretString,
    message_of: fn(&serde_json::Value) -> Option<String>,
) -> Result<String, Failure> {
    let response = request
        .bearer_auth(token.expose_secret())
        .send()
        .await
        // The error may name the URL; never the token (it travels in a header).
        .map_err(|e| Failure::Unreachable(e.without_url().to_string()))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .as_ref()
        .and_then(message_of)
        .unwrap_or_else(|| body.chars().take(200).collect());
    Err(Failure::Status { status, message })
}
