//! One admitted connection, as the servers read and write it: plain TCP or
//! TLS, with the bytes admission read ahead (the HTTP/2 preface) given
//! back first, and what the broker knows of it ([`ConnInfo`]), which tonic
//! puts in every request's extensions. It holds its place under the
//! connection caps until dropped.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf as _, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;

use super::caps::Admitted;

/// What the broker knows of a connection, in each of its requests'
/// extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The subject common name of the client's certificate (mTLS).
    pub common_name: Option<Arc<str>>,
    /// One permit per call that may be receiving its request at once on
    /// this connection (see `crate::gate`).
    pub receiving: Arc<Semaphore>,
}

impl ConnInfo {
    /// A connection to `local` whose calls may receive `receiving` at once.
    pub fn new(local: SocketAddr, common_name: Option<Arc<str>>, receiving: usize) -> Self {
        Self {
            local,
            common_name,
            receiving: Arc::new(Semaphore::new(receiving)),
        }
    }
}

/// The transport under a [`Conn`].
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An admitted connection.
pub struct Conn {
    /// Read ahead by admission; handed to the server before anything else.
    prefix: Bytes,
    io: Io,
    info: ConnInfo,
    /// Counts this connection against the caps until it is dropped.
    _admitted: Admitted,
}

impl Conn {
    pub(super) fn plain(tcp: TcpStream, prefix: Bytes, info: ConnInfo, admitted: Admitted) -> Self {
        Self {
            prefix,
            io: Io::Plain(tcp),
            info,
            _admitted: admitted,
        }
    }

    pub(super) fn tls(
        tls: TlsStream<TcpStream>,
        prefix: Bytes,
        info: ConnInfo,
        admitted: Admitted,
    ) -> Self {
        Self {
            prefix,
            io: Io::Tls(Box::new(tls)),
            info,
            _admitted: admitted,
        }
    }

    /// What the broker knows of this connection.
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        match &mut this.io {
            Io::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(tcp) => tcp.is_write_vectored(),
            Io::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Io::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}
