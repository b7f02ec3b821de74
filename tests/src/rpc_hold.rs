//! A JSON-RPC relay in front of anvil that holds back one method's calls: either before the node
//! gets the call or after it answered, for a set time. Crash tests point a process at it to widen
//! the window they aim a kill at (a transaction being broadcast), instead of racing a few
//! microseconds of real work.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};

use crate::served::Served;

/// Where a held call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Nothing is held.
    Off = 0,
    /// Before the node has the call: a caller killed meanwhile may never send it (when the
    /// server drops the dead caller's request, it is not relayed).
    Request = 1,
    /// After the node answered, before the caller hears it: a caller killed meanwhile sent it
    /// without knowing.
    Response = 2,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    method: &'static str,
    delay: Duration,
    hold: AtomicU8,
    held: AtomicUsize,
    holding: AtomicUsize,
    client: reqwest::Client,
}

/// Counts a call as being held until dropped (also when its caller dies and the server drops the
/// request).
struct Holding<'a>(&'a AtomicUsize);

impl<'a> Holding<'a> {
    fn start(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The relay; stops when dropped.
#[derive(Debug)]
pub struct HoldingRpc {
    /// Its URL, to use as a process's RPC URL.
    pub url: String,
    shared: Arc<Shared>,
    _server: Served,
}

impl HoldingRpc {
    /// Relays to `upstream`, holding calls of `method` for `delay` where [`HoldingRpc::set`] says.
    pub async fn start(
        upstream: String,
        method: &'static str,
        delay: Duration,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            upstream,
            method,
            delay,
            hold: AtomicU8::new(Hold::Off as u8),
            held: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
            client: reqwest::Client::new(),
        });
        let app = Router::new().route("/", post(relay)).with_state(shared.clone());
        let server = Served::start(app).await?;
        Ok(Self { url: server.url(), shared, _server: server })
    }

    /// Where the next calls of the method wait.
    pub fn set(&self, hold: Hold) {
        self.shared.hold.store(hold as u8, Ordering::SeqCst);
    }

    /// How many calls were held so far.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }

    /// How many calls are being held now.
    pub fn holding(&self) -> usize {
        self.shared.holding.load(Ordering::SeqCst)
    }
}

async fn relay(State(shared): State<Arc<Shared>>, body: Bytes) -> Result<Bytes, StatusCode> {
    // A single call or a batch of them.
    let calls_method = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(calls)) => calls.iter().any(|c| c["method"] == shared.method),
        Ok(call) => call["method"] == shared.method,
        Err(_) => false,
    };
    let hold = if calls_method { shared.hold.load(Ordering::SeqCst) } else { Hold::Off as u8 };
    if hold != Hold::Off as u8 {
        shared.held.fetch_add(1, Ordering::SeqCst);
    }
    if hold == Hold::Request as u8 {
        let _holding = Holding::start(&shared.holding);
        tokio::time::sleep(shared.delay).await;
    }
    // The node gets the call even if the caller dies while it is in flight.
    let forward = tokio::spawn({
        let shared = shared.clone();
        async move {
            let reply = shared
                .client
                .post(&shared.upstream)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            reply.bytes().await
        }
    });
    let answer = forward.await.map_err(|_| StatusCode::BAD_GATEWAY)?;
    let answer = answer.map_err(|_| StatusCode::BAD_GATEWAY)?;
    if hold == Hold::Response as u8 {
        let _holding = Holding::start(&shared.holding);
        tokio::time::sleep(shared.delay).await;
    }
    Ok(answer)
}
