//! Connections to the database: `--store`'s URL parsed and checked, the
//! pool (deadpool-postgres) the operations share, and the connection for
//! LISTEN. TLS goes through rustls when the URL's `sslmode` asks for it
//! (`store_tls.rs`: the options every shared store takes).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::backend::cluster::timing::CONNECT_TIMEOUT;
use crate::backend::store_tls;

/// How TLS to the database is set up.
#[derive(Clone)]
pub enum Tls {
    /// Plain TCP (`sslmode=disable`, or none given).
    Off,
    /// rustls, with the URL's checks.
    On(MakeRustlsConnect),
}

/// A parsed `--store` URL.
#[derive(Clone)]
pub struct Target {
    /// What tokio-postgres connects with.
    pub config: Config,
    /// TLS, if the URL asks for it.
    pub tls: Tls,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only where it points.
        f.debug_struct("Target")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("tls", &matches!(self.tls, Tls::On(_)))
            .finish()
    }
}

/// Parses `url` (`postgres://user:password@host:port/db?sslmode=...`).
///
/// # Errors
/// A message naming what is wrong, without the password.
pub fn parse(url: &str) -> Result<Target, String> {
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err("--store: expected postgres://user@host:port/database".into());
    }
    // tokio-postgres knows sslmode disable/prefer/require only: take the
    // libpq parameters it lacks off the URL first.
    let (url, params) = store_tls::split_params(url);
    let mut config: Config = url
        .parse()
        .map_err(|e| format!("--store: not a PostgreSQL URL: {e}"))?;
    if config.get_hosts().is_empty() {
        return Err("--store: the URL names no host".into());
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    // Every OK the broker sends follows a commit that is on disk.
    config.options("-c synchronous_commit=on");
    config.application_name("sluice-broker");
    let tls = match store_tls::client_config(&params, "disable", "--store")? {
        None => {
            config.ssl_mode(SslMode::Disable);
            Tls::Off
        }
        Some(tls) => {
            config.ssl_mode(SslMode::Require);
            Tls::On(MakeRustlsConnect::new((*tls).clone()))
        }
    };
    Ok(Target { config, tls })
}

/// A pool of up to `size` connections to `target`.
///
/// # Errors
/// When the pool cannot be built (no connection is made yet).
pub fn pool(target: &Target, size: usize) -> Result<Pool, String> {
    let manager_config = ManagerConfig {
        // A connection that failed is replaced; a healthy one is reused
        // without a round trip.
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match &target.tls {
        Tls::Off => Manager::from_config(target.config.clone(), NoTls, manager_config),
        Tls::On(tls) => Manager::from_config(target.config.clone(), tls.clone(), manager_config),
    };
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| format!("--store: {e}"))
}

/// LISTENs on one connection outside the pool: runs `listen` (the LISTEN
/// statements), calls `on_listening`, then passes the channel and payload
/// of each notification to `on_notification`, until the connection closes or
/// `stop`. The connection is driven here, in the caller's task.
///
/// # Errors
/// When it cannot connect, LISTEN, or the connection fails.
pub async fn listen(
    target: &Target,
    listen: &str,
    on_listening: impl FnOnce(),
    on_notification: impl FnMut(&str, &str),
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    match &target.tls {
        Tls::Off => {
            let (client, connection) = target.config.connect(NoTls).await?;
            drive(
                client,
                connection,
                listen,
                on_listening,
                on_notification,
                stop,
            )
            .await
        }
        Tls::On(tls) => {
            let (client, connection) = target.config.connect(tls.clone()).await?;
            drive(
                client,
                connection,
                listen,
                on_listening,
                on_notification,
                stop,
            )
            .await
        }
    }
}

async fn drive<S, T>(
    client: Client,
    mut connection: tokio_postgres::Connection<S, T>,
    listen: &str,
    on_listening: impl FnOnce(),
    mut on_notification: impl FnMut(&str, &str),
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut listening = std::pin::pin!(client.batch_execute(listen));
    let mut on_listening = Some(on_listening);
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            done = &mut listening, if on_listening.is_some() => {
                done?;
                if let Some(f) = on_listening.take() {
                    f();
                }
            }
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    on_notification(n.channel(), n.payload());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}
