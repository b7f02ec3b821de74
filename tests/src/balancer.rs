//! A small round-robin HTTP balancer for tests that run several API processes: each request
//! goes to the next backend; a backend that refuses the connection (killed, restarting) is
//! skipped for the next one. A request a backend dropped mid-way (killed while answering) fails
//! with 502, as a real balancer's would: the client decides whether to retry.

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::Response,
};

use crate::served::Served;

#[derive(Debug)]
struct Shared {
    backends: RwLock<Vec<String>>,
    next: AtomicUsize,
    client: reqwest::Client,
}

/// The balancer; stops when dropped.
#[derive(Debug)]
pub struct RoundRobin {
    /// Its URL, for clients.
    pub url: String,
    shared: Arc<Shared>,
    _server: Served,
}

impl RoundRobin {
    /// Balances over `backends` (base URLs).
    pub async fn start(backends: Vec<String>) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            backends: RwLock::new(backends),
            next: AtomicUsize::new(0),
            client: reqwest::Client::builder().pool_max_idle_per_host(0).build()?,
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let server = Served::start(app).await?;
        Ok(Self { url: server.url(), shared, _server: server })
    }

    /// Replaces backend `index` (a restarted process on a new port).
    pub fn set(&self, index: usize, url: String) {
        if let Ok(mut backends) = self.shared.backends.write()
            && let Some(slot) = backends.get_mut(index)
        {
            *slot = url;
        }
    }
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, StatusCode> {
    let body: Bytes = axum::body::to_bytes(request.into_body(), 64 * 1024 * 1024)
        .await
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    let backends = shared.backends.read().map(|b| b.clone()).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    for _ in 0..backends.len() {
        let backend = &backends[shared.next.fetch_add(1, Ordering::Relaxed) % backends.len()];
        let mut sent = shared.client.request(method.clone(), format!("{backend}{path}"));
        for (name, value) in &headers {
            if !matches!(
                name.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                sent = sent.header(name, value);
            }
        }
        match sent.body(body.clone()).send().await {
            Ok(answer) => {
                let mut response = Response::builder().status(answer.status().as_u16());
                // The body is passed whole: its framing headers are the balancer's own.
                for (name, value) in answer.headers() {
                    if !matches!(
                        name.as_str(),
                        "transfer-encoding" | "content-length" | "connection"
                    ) {
                        response = response.header(name, value);
                    }
                }
                let bytes = answer.bytes().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
                return response.body(Body::from(bytes)).map_err(|_| StatusCode::BAD_GATEWAY);
            }
            // Not listening: try the next backend. Anything else happened mid-request.
            Err(err) if err.is_connect() => continue,
            Err(_) => return Err(StatusCode::BAD_GATEWAY),
        }
    }
    Err(StatusCode::SERVICE_UNAVAILABLE)
}
