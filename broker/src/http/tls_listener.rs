//! The HTTP listener's connections over TLS: the handshaken streams of
//! [`crate::tls::TlsSettings::incoming_http`], as an axum listener.

use std::net::SocketAddr;

use axum::serve::Listener;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

/// Hands axum each connection whose TLS handshake succeeded.
pub struct TlsListener {
    incoming: ReceiverStream<std::io::Result<TlsStream<TcpStream>>>,
    local: SocketAddr,
}

impl TlsListener {
    /// The connections of `incoming`, accepted on `local`.
    pub fn new(
        incoming: ReceiverStream<std::io::Result<TlsStream<TcpStream>>>,
        local: SocketAddr,
    ) -> Self {
        Self { incoming, local }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (stream, peer);
                }
                // The acceptor yields only successful handshakes.
                Some(Err(_)) => {}
                // Stopped: the server's graceful shutdown ends the wait.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
