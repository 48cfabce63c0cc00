//! Admission of connections, for the gRPC listener and the HTTP listener
//! (`--http-addr`) alike: what a socket must do, and how fast, before a
//! server reads a request from it. Nothing here knows calls or
//! credentials; it hands each server [`Conn`]s, each carrying its
//! [`ConnInfo`].
//!
//! For each accepted socket, in order:
//! 1. the caps (`caps.rs`): past `--max-connections` in all or
//!    `--max-connections-per-ip` from its address, it is closed at once;
//! 2. its first byte must arrive within [`FIRST_BYTE_TIMEOUT`], or it is
//!    closed: an idle socket holds nothing else;
//! 3. with TLS, a handshake permit (at most [`MAX_HANDSHAKES`] at once) is
//!    taken only then, and the handshake must end within
//!    [`HANDSHAKE_TIMEOUT`];
//! 4. on the gRPC listener, the 24 bytes of the HTTP/2 preface must have
//!    arrived within [`PREFACE_TIMEOUT`] of the socket's acceptance (of
//!    the handshake's end, with TLS); they are read here and given back to
//!    the server by [`Conn`].
//!
//! Steps 2 to 4 run in a task per socket, so a slow client holds up no
//! other. The HTTP listener's header-read and idle timeouts are its
//! server's (`crate::http`).

mod caps;
mod conn;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use caps::Admitted;
pub use caps::ConnectionCaps;
pub use conn::{Conn, ConnInfo};

use crate::tls::{Protocol, TlsSettings};

/// Longest a new socket may stay silent before it is closed.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a TLS handshake may take, from its first byte.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once, per listener: a socket takes a
/// place only once its first byte arrived, and waits (within its
/// handshake time) while all are taken.
pub const MAX_HANDSHAKES: usize = 1024;
/// Longest a gRPC connection may take to send the HTTP/2 preface, from its
/// acceptance (plaintext) or the end of its TLS handshake.
pub const PREFACE_TIMEOUT: Duration = Duration::from_secs(5);
/// The client's first bytes on an HTTP/2 connection (RFC 9113, 3.4).
const PREFACE_LEN: usize = 24;

/// How connections are admitted on one listener.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Shared by both listeners.
    pub caps: Arc<ConnectionCaps>,
    /// TLS, if the broker serves it.
    pub tls: Option<TlsSettings>,
    /// gRPC (HTTP/2, its preface awaited here) or HTTP/1.1.
    pub protocol: Protocol,
    /// Calls that may receive their request at once on one connection.
    pub receiving_per_connection: usize,
}

/// Accepts on `listener` until `stop`, yielding each connection admitted
/// (see the module doc). The sockets' tasks are tracked by `tasks`.
pub fn accept(
    listener: TcpListener,
    admission: Admission,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let admit_tasks = tasks.clone();
    tasks.spawn(async move {
        loop {
            let accepted = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: back off a little.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Refused: dropping the socket closes it.
            let Ok(admitted) = admission.caps.admit(peer.ip()) else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (admission, handshakes, tx, stop) = (
                admission.clone(),
                handshakes.clone(),
                tx.clone(),
                stop.clone(),
            );
            admit_tasks.spawn(async move {
                let admitted = tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    conn = admit(tcp, admitted, &admission, &handshakes) => conn,
                };
                match admitted {
                    // The server has stopped if this fails: nothing to do.
                    Ok(conn) => drop(tx.send(Ok(conn)).await),
                    Err(why) => debug!(%peer, why, "connection closed before serving"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Steps 2 to 4 of the module doc for one socket.
async fn admit(
    mut tcp: TcpStream,
    admitted: Admitted,
    admission: &Admission,
    handshakes: &Semaphore,
) -> Result<Conn, &'static str> {
    let accepted_at = tokio::time::Instant::now();
    let local = tcp.local_addr().map_err(|_| "no local address")?;
    let mut first = [0u8; 1];
    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, tcp.peek(&mut first)).await {
        Err(_) => return Err("nothing sent in time"),
        Ok(Ok(0) | Err(_)) => return Err("closed by the client"),
        Ok(Ok(_)) => {}
    }
    let receiving = admission.receiving_per_connection;
    let grpc = admission.protocol == Protocol::Grpc;
    let Some(tls) = &admission.tls else {
        let prefix = if grpc {
            read_preface(&mut tcp, accepted_at).await?
        } else {
            Bytes::new()
        };
        let info = ConnInfo::new(local, None, receiving);
        return Ok(Conn::plain(tcp, prefix, info, admitted));
    };
    let handshake = async {
        let _permit = handshakes
            .acquire()
            .await
            .map_err(|_| "the listener stopped")?;
        tls.acceptor(admission.protocol)
            .accept(tcp)
            .await
            .map_err(|_| "TLS handshake failed")
    };
    let mut stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| "TLS handshake timed out")??;
    let prefix = if grpc {
        read_preface(&mut stream, tokio::time::Instant::now()).await?
    } else {
        Bytes::new()
    };
    let common_name = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|leaf| common_name(leaf.as_ref()));
    let info = ConnInfo::new(local, common_name, receiving);
    Ok(Conn::tls(stream, prefix, info, admitted))
}

/// The HTTP/2 preface's bytes, read within [`PREFACE_TIMEOUT`] of `since`.
/// A client that sends something else gets it back from the server, which
/// refuses it.
async fn read_preface(
    io: &mut (impl AsyncRead + Unpin),
    since: tokio::time::Instant,
) -> Result<Bytes, &'static str> {
    let mut preface = [0u8; PREFACE_LEN];
    match tokio::time::timeout_at(since + PREFACE_TIMEOUT, io.read_exact(&mut preface)).await {
        Err(_) => Err("no HTTP/2 preface in time"),
        Ok(Err(_)) => Err("closed before its HTTP/2 preface"),
        Ok(Ok(_)) => Ok(Bytes::copy_from_slice(&preface)),
    }
}

/// The subject common name of a DER certificate.
fn common_name(der: &[u8]) -> Option<Arc<str>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(Arc::from)
}
