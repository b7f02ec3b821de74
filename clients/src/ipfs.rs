//! A small typed client of the Kubo RPC API (the `ipfs-api` crates are unmaintained): add a
//! streamed file as CIDv1 and pin it, unpin, read a file back. Reads carry a server-side
//! `timeout` as well as a client one, since a node asked for content it does not have waits
//! forever.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
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

/// A directory the node stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedDirectory {
    /// The directory's CIDv1.
    pub cid: String,
    /// Each file's and folder's CIDv1, by its path inside the directory.
    pub files: std::collections::HashMap<String, String>,
}

/// What `encodeURIComponent` leaves as is; Kubo's client encodes multipart file names so.
const URI_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

#[derive(Deserialize)]
struct AddLine {
    #[serde(rename = "Name", default)]
    name: String,
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
        // One entry per file; a single file gives one.
        let added = self
            .post_add(form)
            .await?
            .pop()
            .ok_or_else(|| IpfsError::Refused("the add reply names no file".into()))?;
        Ok(Added { cid: added.hash, size: added.size })
    }

    /// Adds the files under `root` (paths relative to it, with their sizes) as one UnixFS
    /// directory, pinned, and answers the directory's CIDv1 and each file's. Files stream from
    /// disk; the multipart body names every folder before its content, as Kubo's own client does.
    pub async fn add_directory(
        &self,
        root: &std::path::Path,
        files: &[(String, u64)],
    ) -> Result<AddedDirectory, IpfsError> {
        // The directory is sent wrapped in one folder, whose entry in the reply is the root.
        const TOP: &str = "site";
        let mut folders: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for (path, _) in files {
            let mut at = String::new();
            for segment in path.split('/').rev().skip(1).collect::<Vec<_>>().into_iter().rev() {
                if !at.is_empty() {
                    at.push('/');
                }
                at.push_str(segment);
                folders.insert(at.clone());
            }
        }
        let mut form = reqwest::multipart::Form::new();
        let mut index = 0usize;
        let mut field = |kind: &str| {
            let name = if index == 0 { kind.to_owned() } else { format!("{kind}-{index}") };
            index += 1;
            name
        };
        let encoded =
            |path: &str| percent_encoding::utf8_percent_encode(path, URI_COMPONENT).to_string();
        let directory = |path: &str| {
            reqwest::multipart::Part::bytes(Vec::new())
                .file_name(encoded(path))
                .mime_str("application/x-directory")
                .expect("a valid mime type")
        };
        form = form.part(field("dir"), directory(TOP));
        // BTreeSet order puts every folder before the folders inside it.
        for folder in &folders {
            form = form.part(field("dir"), directory(&format!("{TOP}/{folder}")));
        }
        for (path, size) in files {
            // Relative paths only: the caller's tree is the one thing read.
            if path.split('/').any(|s| s.is_empty() || s == "." || s == "..") || path.contains('\\')
            {
                return Err(IpfsError::Refused(format!("{path:?} is not a path inside the tree")));
            }
            // Each file is opened when its part is sent, so one is open at a time.
            let full = root.join(path);
            let content = futures::stream::once(tokio::fs::File::open(full))
                .map_ok(tokio_util::io::ReaderStream::new)
                .try_flatten();
            let body = reqwest::Body::wrap_stream(content);
            let part = reqwest::multipart::Part::stream_with_length(body, *size)
                .file_name(encoded(&format!("{TOP}/{path}")))
                .mime_str("application/octet-stream")
                .expect("a valid mime type");
            form = form.part(field("file"), part);
        }
        let mut added = AddedDirectory { cid: String::new(), files: Default::default() };
        for entry in self.post_add(form).await? {
            if entry.name == TOP {
                added.cid = entry.hash;
            } else if let Some(path) = entry.name.strip_prefix(&format!("{TOP}/")) {
                added.files.insert(path.to_owned(), entry.hash);
            }
        }
        if added.cid.is_empty() {
            return Err(IpfsError::Refused("the add reply names no root directory".into()));
        }
        Ok(added)
    }

    /// Posts `form` to `add` (CIDv1, pinned) and reads the reply: one JSON line per entry.
    async fn post_add(&self, form: reqwest::multipart::Form) -> Result<Vec<AddLine>, IpfsError> {
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
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .map_err(|e| IpfsError::Refused(format!("unreadable add reply {line:?}: {e}")))
            })
            .collect()
    }

    /// Builds a UnixFS directory of content the node holds (each entry a name and a CID), pins
    /// it and answers its CIDv1 (base32). It is put together in the node's MFS under a scratch
    /// path removed afterwards. js-ipfs spells the MFS options in camel case and Kubo in kebab
    /// case: both are sent.
    pub async fn directory_of(&self, entries: &[(String, String)]) -> Result<String, IpfsError> {
        let scratch =
            format!("/decentraspace-build/{}", alloy::hex::encode(rand::random::<[u8; 16]>()));
        let v1 = [("cid-version", "1"), ("cidVersion", "1"), ("timeout", NODE_TIMEOUT)];
        let built = async {
            self.call("files/mkdir", &[("arg", scratch.as_str()), ("parents", "true")], &v1)
                .await?;
            for (name, cid) in entries {
                let (from, to) = (format!("/ipfs/{cid}"), format!("{scratch}/{name}"));
                self.call("files/cp", &[("arg", from.as_str()), ("arg", to.as_str())], &v1).await?;
            }
            let base32 = [("cid-base", "base32"), ("cidBase", "base32"), ("timeout", NODE_TIMEOUT)];
            let stat = self.call("files/stat", &[("arg", scratch.as_str())], &base32).await?;
            let cid = serde_json::from_str::<serde_json::Value>(&stat)
                .ok()
                .and_then(|s| s["Hash"].as_str().map(str::to_owned))
                .ok_or_else(|| IpfsError::Refused(format!("unreadable stat reply {stat:?}")))?;
            self.call("pin/add", &[("arg", cid.as_str())], &[("timeout", NODE_TIMEOUT)]).await?;
            Ok(cid)
        }
        .await;
        let removed =
            self.call("files/rm", &[("arg", scratch.as_str()), ("recursive", "true")], &[]).await;
        if let Err(err) = removed {
            tracing::warn!(target: "api::ipfs", %err, scratch, "cannot remove a scratch folder");
        }
        built
    }

    /// One RPC call with its arguments and options; answers the reply's text.
    async fn call(
        &self,
        command: &str,
        args: &[(&str, &str)],
        options: &[(&str, &str)],
    ) -> Result<String, IpfsError> {
        let response = self
            .http
            .post(format!("{}/api/v0/{command}", self.api))
            .query(args)
            .query(options)
            .timeout(READ_TIMEOUT)
            .send()
            .await
            .map_err(|e| IpfsError::Unreachable(error_chain(&e)))?;
        reply(response).await
    }

    /// The node's keys: their IPNS names (as the node writes them: a peer id, or a CID in
    /// base36) by key name.
    pub async fn keys(&self) -> Result<std::collections::HashMap<String, String>, IpfsError> {
        #[derive(Deserialize)]
        struct Keys {
            #[serde(rename = "Keys", default)]
            keys: Vec<Key>,
        }
        let listed: Keys = parse(&self.call("key/list", &[], &[]).await?)?;
        Ok(listed.keys.into_iter().map(|k| (k.name, k.id)).collect())
    }

    /// Makes the node's key `name` (Ed25519): its IPNS name.
    pub async fn key_gen(&self, name: &str) -> Result<String, IpfsError> {
        let made: Key =
            parse(&self.call("key/gen", &[("arg", name)], &[("type", "ed25519")]).await?)?;
        Ok(made.id)
    }

    /// Points the IPNS name of key `key` at `/ipfs/<cid>` (signed by the node, valid for a year,
    /// without waiting for the network to take it).
    pub async fn publish(&self, key: &str, cid: &str) -> Result<(), IpfsError> {
        let path = format!("/ipfs/{cid}");
        self.call(
            "name/publish",
            &[("arg", &path)],
            &[("key", key), ("lifetime", "8760h"), ("allow-offline", "true")],
        )
        .await
        .map(drop)
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
        self.cat_stream_range(path, None).await
    }

    /// [`Ipfs::cat_stream`] of `length` bytes from `offset` when `range` is given (the node reads
    /// only those).
    pub async fn cat_stream_range(
        &self,
        path: &str,
        range: Option<(u64, u64)>,
    ) -> Result<impl futures::Stream<Item = reqwest::Result<Bytes>> + use<>, IpfsError> {
        let mut request = self
            .http
            .post(format!("{}/api/v0/cat", self.api))
            .query(&[("arg", path), ("timeout", NODE_TIMEOUT)]);
        if let Some((offset, length)) = range {
            request = request.query(&[("offset", offset), ("length", length)]);
        }
        let response = tokio::time::timeout(READ_TIMEOUT, request.send())
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

/// A key of the node.
#[derive(Deserialize)]
struct Key {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Id")]
    id: String,
}

/// A reply's JSON, or the refusal saying it was not what was expected.
fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, IpfsError> {
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .map_err(|e| IpfsError::Refused(format!("an unexpected reply ({e}): {text}")))
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
