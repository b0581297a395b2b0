//! The listening socket: plain HTTP, or HTTPS through tokio-rustls (aws-lc-rs), both served by
//! axum with graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::serve::{Listener, ListenerExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Stops the server.
pub struct ServerHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    /// Closes the listener at once, then gives open connections a moment to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// A TLS listener: the handshake happens in `accept`, failed handshakes are skipped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    connections: Arc<AtomicU64>,
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok((mut stream, addr)) => {
                    accepted(&self.connections, &mut stream);
                    (stream, addr)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "splunk emulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(stream)).await
            {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!(error = %e, "splunk emulator: TLS handshake failed"),
                Err(_) => tracing::debug!("splunk emulator: TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> anyhow::Result<TlsAcceptor> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut cert_reader =
        std::io::BufReader::new(std::fs::File::open(cert).with_context(|| {
            format!("splunk emulator: cannot open --tls-cert {}", cert.display())
        })?);
    let certs = rustls_pemfile::certs(&mut cert_reader)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("splunk emulator: invalid PEM in {}", cert.display()))?;
    let mut key_reader =
        std::io::BufReader::new(std::fs::File::open(key).with_context(|| {
            format!("splunk emulator: cannot open --tls-key {}", key.display())
        })?);
    let key = rustls_pemfile::private_key(&mut key_reader)
        .with_context(|| format!("splunk emulator: invalid PEM in {}", key.display()))?
        .with_context(|| format!("splunk emulator: no private key in {}", key.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("splunk emulator: certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Sends each write at once (`TCP_NODELAY`), as most HTTP servers do (nginx's default, Go's).
/// With Nagle's algorithm the last bytes of a streamed result wait for the client's delayed
/// ACK (40 ms on Linux) whenever a segment is still unacknowledged, so every search's end,
/// and with it the client's next search, came 40 ms late.
fn no_delay(stream: &mut TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "splunk emulator: cannot set TCP_NODELAY");
    }
}

/// A connection just accepted: counted, and set to send each write at once.
fn accepted(connections: &AtomicU64, stream: &mut TcpStream) {
    connections.fetch_add(1, Ordering::Relaxed);
    no_delay(stream);
}

/// Binds and starts serving in a background task.
pub async fn start(
    bind: SocketAddr,
    tls: Option<&(PathBuf, PathBuf)>,
    router: Router,
    connections: Arc<AtomicU64>,
) -> anyhow::Result<(SocketAddr, ServerHandle)> {
    let tcp = TcpListener::bind(bind)
        .await
        .with_context(|| format!("splunk emulator: cannot listen on {bind}"))?;
    let addr = tcp.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let signal = async move {
        let _ = stopped.await;
    };
    let task = match tls {
        None => tokio::spawn(async move {
            let _ = axum::serve(tcp.tap_io(move |s| accepted(&connections, s)), router)
                .with_graceful_shutdown(signal)
                .await;
        }),
        Some((cert, key)) => {
            let listener = TlsListener {
                tcp,
                acceptor: tls_acceptor(cert, key)?,
                connections,
            };
            tokio::spawn(async move {
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(signal)
                    .await;
            })
        }
    };
    Ok((addr, ServerHandle { stop, task }))
}
