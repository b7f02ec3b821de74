//! The gateway's HTTPS listener: TCP connections are accepted in one loop and their TLS
//! handshakes run each in a task of its own (a slow or silent client holds up no one), bounded
//! in time; finished ones are handed to the HTTP server. Certificates come from the
//! [`CertStore`](crate::certificates::CertStore) by SNI.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// The longest a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const READY_BACKLOG: usize = 1_024;

/// TLS connections, as the HTTP server takes them.
pub(super) struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    /// Accepts on `listener` with `config`.
    pub(super) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (sender, ready) = mpsc::channel(READY_BACKLOG);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of descriptors and the like: wait instead of spinning.
                        tracing::warn!(target: "api::gateway", %err, "TLS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                stream.set_nodelay(true).ok();
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            sender.send((tls, peer)).await.ok();
                        }
                        Ok(Err(err)) => {
                            // Unknown names, old protocols, scanners: the client sees the alert.
                            tracing::debug!(target: "api::gateway", %peer, %err, "TLS handshake failed");
                            metrics::counter!("gateway_tls_handshakes_failed_total").increment(1);
                        }
                        Err(_) => {
                            metrics::counter!("gateway_tls_handshakes_failed_total").increment(1);
                        }
                    }
                });
            }
        });
        Ok(Self { local, ready, accepting })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accept loop ended (it only does when aborted): no connection comes any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
