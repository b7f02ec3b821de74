//! Reads a `text/event-stream` response event by event, as a browser's `EventSource` would.

use std::time::Duration;

use futures::StreamExt;

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// Its `event:` (empty for a plain message).
    pub event: String,
    /// Its `id:`, if it has one.
    pub id: Option<String>,
    /// Its `data:` lines joined by newlines.
    pub data: String,
}

/// An open event stream.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    /// Reads `response`, which must be a `200` event stream.
    pub fn new(response: reqwest::Response) -> anyhow::Result<Self> {
        anyhow::ensure!(response.status() == 200, "the stream answered {}", response.status());
        let kind = response.headers().get("content-type").and_then(|v| v.to_str().ok());
        anyhow::ensure!(kind == Some("text/event-stream"), "the stream is {kind:?}");
        Ok(Self { body: response.bytes_stream().boxed(), buffer: String::new() })
    }

    /// The next event (comments, such as keep-alives, are skipped), or `None` once the server
    /// ended the stream. Fails when none comes within `wait`.
    pub async fn next(&mut self, wait: Duration) -> anyhow::Result<Option<SseEvent>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut data = Vec::new();
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event.event = value.to_owned(),
                        "id" => event.id = Some(value.to_owned()),
                        "data" => data.push(value),
                        _ => {}
                    }
                }
                if !data.is_empty() || !event.event.is_empty() {
                    event.data = data.join("\n");
                    return Ok(Some(event));
                }
            }
            let chunk =
                tokio::time::timeout_at(deadline, self.body.next()).await.map_err(|_| {
                    anyhow::anyhow!("no event within {wait:?}; holding {:?}", self.buffer)
                })?;
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes?)),
                None => return Ok(None),
            }
        }
    }
}
