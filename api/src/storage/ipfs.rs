//! A small typed client of the Kubo RPC API (the `ipfs-api` crates are unmaintained): add a
//! streamed file as CIDv1 and pin it, unpin, read a file back. Reads carry a server-side
//! `timeout` as well as a client one, since a node asked for content it does not have waits
//! forever.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Deserializer};

/// How long the node may look for content before answering (reads only: an `add` lasts as long
/// as its upload, which the API bounds by the client's idleness instead).
const NODE_TIMEOUT: &str = "10s";
/// The longest a read may take, client side.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum IpfsError {
    /// The node answered with an error (its message).
    #[error("the IPFS node refused: {0}")]
    Refused(String),
    /// The node could not be reached, or the transfer broke off.
    #[error("cannot reach the IPFS node: {0}")]
    Unreachable(String),
}

/// A file the node stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// Its CIDv1 (base32).
    pub cid: String,
    /// Its size in bytes as the node counts it (content plus UnixFS framing).
    pub size: u64,
}

/// A Kubo RPC API endpoint.
#[derive(Debug, Clone)]
pub struct Ipfs {
    http: reqwest::Client,
    api: String,
}

#[derive(Deserialize)]
struct AddLine {
    #[serde(rename = "Hash")]
    hash: String,
    #[serde(rename = "Size", deserialize_with = "number_or_string")]
    size: u64,
}

#[derive(Deserialize)]
struct NodeError {
    #[serde(rename = "Message")]
    message: String,
}

/// Kubo sends `Size` as a string, js-ipfs as a number.
fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(n),
        Size::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

impl Ipfs {
    /// A client of the RPC API at `api_url` (e.g. `http://127.0.0.1:5001`).
    pub fn new(api_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        Ok(Self { http, api: api_url.trim_end_matches('/').to_owned() })
    }

    /// Adds `content` as one file named `name`, pinned, and answers its CIDv1. The content is
    /// streamed through: it is never held whole here.
    pub async fn add<S>(
        &self,
        name: &str,
        content_type: &str,
        content: S,
    ) -> Result<Added, IpfsError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(content))
            .file_name(name.to_owned())
            .mime_str(content_type)
            .map_err(|e| IpfsError::Refused(format!("content type {content_type}: {e}")))?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let response = self
            .http
            .post(format!("{}/api/v0/add", self.api))
            .query(&[
                ("cid-version", "1"),
                ("cid-base", "base32"),
                ("pin", "true"),
                ("progress", "false"),
            ])
            .multipart(form)
            .send()
            .await
            .map_err(|e| IpfsError::Unreachable(error_chain(&e)))?;
        let text = reply(response).await?;
        // One JSON line per entry; a single file gives one.
        let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        let added: AddLine = serde_json::from_str(line)
            .map_err(|e| IpfsError::Refused(format!("unreadable add reply {line:?}: {e}")))?;
        Ok(Added { cid: added.hash, size: added.size })
    }

    /// Removes the pin of `cid` (its blocks become garbage the node may collect).
    pub async fn unpin(&self, cid: &str) -> Result<(), IpfsError> {
        let response = self
            .http
            .post(format!("{}/api/v0/pin/rm", self.api))
            .query(&[("arg", cid), ("timeout", NODE_TIMEOUT)])
            .timeout(READ_TIMEOUT)
            .send()
            .await
            .map_err(|e| IpfsError::Unreachable(error_chain(&e)))?;
        reply(response).await.map(drop)
    }

    /// The file at `path` as a stream of bytes (for serving it on without holding it). The node
    /// must answer within its read timeout; the transfer then lasts as long as it takes.
    pub async fn cat_stream(
        &self,
        path: &str,
    ) -> Result<impl futures::Stream<Item = reqwest::Result<Bytes>> + use<>, IpfsError> {
        let response = tokio::time::timeout(
            READ_TIMEOUT,
            self.http
                .post(format!("{}/api/v0/cat", self.api))
                .query(&[("arg", path), ("timeout", NODE_TIMEOUT)])
                .send(),
        )
        .await
        .map_err(|_| IpfsError::Unreachable(format!("no answer within {READ_TIMEOUT:?}")))?
        .map_err(|e| IpfsError::Unreachable(error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        Ok(response.bytes_stream())
    }

    /// The bytes of the file at `path` (a CID, or `<cid>/<name>`).
    pub async fn cat(&self, path: &str) -> Result<Bytes, IpfsError> {
        let response = self
            .http
            .post(format!("{}/api/v0/cat", self.api))
            .query(&[("arg", path), ("timeout", NODE_TIMEOUT)])
            .timeout(READ_TIMEOUT)
            .send()
            .await
            .map_err(|e| IpfsError::Unreachable(error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(refusal(response).await);
        }
        response.bytes().await.map_err(|e| IpfsError::Unreachable(error_chain(&e)))
    }
}

async fn reply(response: reqwest::Response) -> Result<String, IpfsError> {
    if !response.status().is_success() {
        return Err(refusal(response).await);
    }
    response.text().await.map_err(|e| IpfsError::Unreachable(error_chain(&e)))
}

async fn refusal(response: reqwest::Response) -> IpfsError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    match serde_json::from_str::<NodeError>(&body) {
        Ok(e) => IpfsError::Refused(e.message),
        Err(_) => {
            IpfsError::Refused(format!("{status}: {}", body.chars().take(200).collect::<String>()))
        }
    }
}

/// The error and its sources on one line (reqwest's own message hides the cause).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_come_as_numbers_or_strings() {
        let kubo: AddLine =
            serde_json::from_str(r#"{"Name":"a","Hash":"bafy","Size":"12"}"#).expect("kubo");
        let js: AddLine =
            serde_json::from_str(r#"{"Name":"a","Hash":"bafy","Size":12,"Mode":"0644"}"#)
                .expect("js");
        assert_eq!((kubo.size, js.size), (12, 12));
    }
}
