//! Connections to Redis: `--store`'s URL parsed and checked, TCP and TLS
//! (through rustls, with the options of `store_tls.rs`), the multiplexed
//! connection every operation shares (requests of every task pipelined on
//! one socket), made again after it breaks, and the pub/sub connection.
//!
//! The connection's driver (the task that reads Redis's replies) runs on
//! a tracker of its own, which [`Connection::close`] waits for.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{MultiplexedConnection, PubSub};
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio_util::task::TaskTracker;

use crate::backend::cluster::timing::CONNECT_TIMEOUT;
use crate::backend::store_tls;

/// How long a request may wait for its answer. Scripts are short; a
/// longer wait means the server is gone or stuck.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed `--store redis://` or `rediss://` URL.
#[derive(Clone)]
pub struct Target {
    host: String,
    port: u16,
    /// TLS, and the name the server's certificate must carry.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// The database, user and password.
    info: RedisConnectionInfo,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only where it points.
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.info.db())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// `host:port/db`, for log lines.
    pub fn describe(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.info.db())
    }
}

/// Parses `url`: `redis://[user:password@]host[:port][/db]`, or
/// `rediss://...` for TLS (`sslmode=verify-full` unless the URL says
/// otherwise, with `sslrootcert=<PEM of the CA>`).
///
/// # Errors
/// A message naming what is wrong, without the password.
pub fn parse(url: &str) -> Result<Target, String> {
    let (url, params) = store_tls::split_params(url);
    let (plain, tls_default) = if let Some(rest) = url.strip_prefix("rediss://") {
        (format!("redis://{rest}"), "verify-full")
    } else if url.starts_with("redis://") {
        if params.mode.as_deref().is_some_and(|m| m != "disable") {
            return Err("--store: TLS to Redis is rediss://, not redis:// with sslmode".into());
        }
        (url.clone(), "disable")
    } else {
        return Err("--store: expected redis://host:port/db or rediss://host:port/db".into());
    };
    let parsed = plain
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("--store: not a Redis URL: {e}"))?;
    let ConnectionAddr::Tcp(host, port) = parsed.addr().clone() else {
        return Err("--store: a Redis URL names a host and a port".into());
    };
    let tls = match store_tls::client_config(&params, tls_default, "--store")? {
        None => None,
        Some(config) => {
            let name = ServerName::try_from(host.clone())
                .map_err(|e| format!("--store: {host} is not a TLS server name: {e}"))?;
            Some((config, name))
        }
    };
    Ok(Target {
        host,
        port,
        tls,
        info: parsed.redis_settings().clone(),
    })
}

/// A stream to Redis, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects TCP (and TLS) to `target`.
async fn stream(target: &Target) -> std::io::Result<Box<dyn Stream>> {
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    match &target.tls {
        None => Ok(Box::new(tcp)),
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            Ok(Box::new(connector.connect(name.clone(), tcp).await?))
        }
    }
}

/// Why a connection could not be made: the connection's own error (an
/// I/O error, a refused handshake, AUTH refused), in its words.
pub type ConnectError = String;

/// The shared connection, made on first use and again after it broke.
pub struct Connection {
    target: Target,
    current: Mutex<Option<MultiplexedConnection>>,
    /// The drivers of the connections made.
    drivers: TaskTracker,
}

impl Connection {
    /// A connection to `target`, made on first use.
    pub fn new(target: Target) -> Self {
        Self {
            target,
            current: Mutex::new(None),
            drivers: TaskTracker::new(),
        }
    }

    /// The connection, made now if there is none.
    ///
    /// # Errors
    /// When it cannot be made within the connect timeout.
    pub async fn get(&self) -> Result<MultiplexedConnection, ConnectError> {
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref() {
            return Ok(conn.clone());
        }
        let made = tokio::time::timeout(CONNECT_TIMEOUT, self.connect())
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))??;
        *current = Some(made.clone());
        Ok(made)
    }

    async fn connect(&self) -> Result<MultiplexedConnection, ConnectError> {
        let stream = stream(&self.target).await.map_err(|e| e.to_string())?;
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let (conn, driver) =
            MultiplexedConnection::new_with_config(&self.target.info, stream, config)
                .await
                .map_err(|e| e.to_string())?;
        self.drivers.spawn(driver);
        Ok(conn)
    }

    /// Forgets the connection (it broke): the next [`Connection::get`]
    /// makes another.
    pub async fn reset(&self) {
        self.current.lock().await.take();
    }

    /// A pub/sub connection to the same server.
    ///
    /// # Errors
    /// When it cannot be made within the connect timeout.
    pub async fn pubsub(&self) -> Result<PubSub, ConnectError> {
        let connect = async {
            let stream = stream(&self.target).await.map_err(|e| e.to_string())?;
            PubSub::new(&self.target.info, stream)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
    }

    /// Drops the connection and waits (briefly) for its driver to end.
    pub async fn close(&self) {
        self.reset().await;
        self.drivers.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.drivers.wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_host_a_database_and_tls() {
        let target = parse("redis://:secret@127.0.0.1:6400/3").unwrap();
        assert_eq!(target.describe(), "127.0.0.1:6400/3");
        assert!(target.tls.is_none());
        assert!(!format!("{target:?}").contains("secret"));
        let refused = parse("rediss://127.0.0.1:6400/0").unwrap_err();
        assert!(refused.contains("sslrootcert"), "{refused}");
        assert!(
            parse("rediss://127.0.0.1:6400/0?sslmode=require")
                .unwrap()
                .tls
                .is_some()
        );
        assert!(parse("redis://127.0.0.1/0?sslmode=require").is_err());
        assert!(parse("postgres://127.0.0.1/0").is_err());
        assert!(parse("redis://127.0.0.1:6400/x").is_err());
    }
}
