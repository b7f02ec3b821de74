//! Local servers: the fakes' routers served on free loopback ports (stopped when dropped), and
//! the free ports the nodes a test starts (IPFS, arlocal) listen on.

use std::net::SocketAddr;

use axum::{
    Router,
    http::{HeaderMap, header},
};
use tokio::task::JoinHandle;

/// A router served on 127.0.0.1; the server stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Served {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Served {
    /// Serves `app` on a free loopback port.
    pub(crate) async fn start(app: Router) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Ok(Self { addr, task })
    }

    /// Its base URL, `http://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A free loopback port, found by binding and releasing it: another process may take it before
/// the caller does, so callers start over through [`on_free_ports`].
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs `attempt` (which starts `what` on ports from [`free_port`]) up to three times, since a
/// port can be taken between finding it and listening on it; the error names every failure.
pub(crate) async fn on_free_ports<T, F, Fut>(what: &str, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut failures = Vec::new();
    for _ in 0..3 {
        match attempt().await {
            Ok(started) => return Ok(started),
            Err(err) => failures.push(format!("{err:#}")),
        }
    }
    anyhow::bail!("{what} did not start: {}", failures.join("; "))
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}
