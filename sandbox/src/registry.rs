//! The one way out of a run's network: a package registry. A run given a registry has a Unix
//! socket bound into it at `/run/registry.sock`; every connection made to it is joined, byte for
//! byte, to the registry's TCP address on the host, and to nothing else. Inside, a small Node.js
//! forwarder listens on `127.0.0.1:<the registry's port>` and passes each connection to the
//! socket, so a package manager pointed at `http://127.0.0.1:<port>/` reaches the registry and
//! the `Host` it sends is the one the registry's tarball URLs then name.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    net::{TcpStream, UnixListener},
    task::JoinHandle,
};

/// Where the socket is inside the sandbox.
pub(crate) const SOCKET_INSIDE: &str = "/run/registry.sock";
/// The file the forwarder writes once it listens.
const READY: &str = "/tmp/.registry-ready";

/// The host side of a run's way to the registry; closed when dropped.
#[derive(Debug)]
pub(crate) struct Gate {
    dir: tempfile::TempDir,
    accepting: JoinHandle<()>,
    connections: Arc<AtomicU64>,
    port: u16,
}

impl Gate {
    /// Listens on a fresh socket and joins each connection to `registry`.
    pub(crate) fn open(registry: SocketAddr) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("decentraspace-registry-").tempdir()?;
        let listener = UnixListener::bind(dir.path().join("registry.sock"))?;
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((mut inside, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    match TcpStream::connect(registry).await {
                        Ok(mut outside) => {
                            let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                        }
                        Err(err) => {
                            tracing::warn!(target: "sandbox", %registry, %err, "the registry is unreachable");
                        }
                    }
                });
            }
        });
        Ok(Self { dir, accepting, connections, port: registry.port() })
    }

    /// The socket on the host, to bind into the sandbox.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join("registry.sock")
    }

    /// Connections made to the registry so far.
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// The shell script run inside instead of the command: it starts the forwarder, waits until
    /// it listens, runs the command (`$2`) and ends with its status. `$1` is the forwarder.
    pub(crate) const WRAPPER: &'static str = r#"node -e "$1" & forwarder=$!
tries=0
until [ -e /tmp/.registry-ready ]; do
  tries=$((tries + 1))
  [ "$tries" -le 200 ] || { echo "the registry forwarder did not start" >&2; exit 125; }
  sleep 0.05
done
/bin/sh -c "$2"; status=$?
kill "$forwarder" 2>/dev/null
exit "$status""#;

    /// The forwarder's Node.js source.
    pub(crate) fn forwarder(&self) -> String {
        format!(
            "const net = require('net'), fs = require('fs');\
             net.createServer(c => {{ const r = net.connect('{SOCKET_INSIDE}');\
               c.pipe(r); r.pipe(c);\
               c.on('error', () => r.destroy()); r.on('error', () => c.destroy()); }})\
             .listen({port}, '127.0.0.1', () => fs.writeFileSync('{READY}', ''));",
            port = self.port
        )
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
