//! The backends the service tests run on. One test body runs once per
//! backend: [`every_backend!`] makes a test module holding one `#[tokio::test]`
//! per backend (`embedded`, `postgres`, `redis`), and [`shared_backends!`]
//! one per backend shared by several brokers (`postgres`, `redis`), each
//! running the body with [`run_on`]. Inside,
//! [`crate::in_process::test_config`] puts the broker on that backend:
//! memory only, or a fresh database of the test binary's private
//! PostgreSQL ([`crate::postgres::shared`]) or Redis
//! ([`crate::redis::shared`]). A test run by no macro is on the embedded
//! store.
//!
//! A backend whose server is not installed is skipped, saying so, unless
//! `SLUICE_TEST_BACKENDS` names it: `scripts/test` sets it to every
//! backend, so that CI fails instead of skipping.

use std::future::Future;
use std::time::Duration;

use sluice_broker::backend::postgres::PostgresSettings;
use sluice_broker::backend::redis::RedisSettings;
use sluice_broker::config::{Config, StoreConfig};

/// A backend a service test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The broker's own store (memory only in these tests).
    Embedded,
    /// A database of a private PostgreSQL server.
    Postgres,
    /// A database of a private Redis server.
    Redis,
}

impl Store {
    /// Its name, as `SLUICE_TEST_BACKENDS` and the tests' names spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
        }
    }

    /// Whether it is shared by several brokers.
    pub fn is_shared(self) -> bool {
        self != Self::Embedded
    }
}

/// The variable naming the backends that must run (comma-separated).
pub const REQUIRED_VAR: &str = "SLUICE_TEST_BACKENDS";

tokio::task_local! {
    static CURRENT: Store;
}

/// The backend of the running test: the one [`run_on`] set, else the
/// embedded store.
pub fn current() -> Store {
    CURRENT.try_with(|store| *store).unwrap_or(Store::Embedded)
}

/// Runs `test` on `store`; skips it, saying why, when `store`'s server is
/// not installed and [`REQUIRED_VAR`] does not name it (then it fails).
pub async fn run_on(store: Store, test: impl Future<Output = ()>) {
    if let Err(why) = installed(store) {
        let required = std::env::var(REQUIRED_VAR)
            .is_ok_and(|names| names.split(',').any(|n| n.trim() == store.name()));
        assert!(!required, "{REQUIRED_VAR} names {}: {why}", store.name());
        eprintln!("skipped on {}: {why}", store.name());
        return;
    }
    CURRENT.scope(store, test).await;
}

fn installed(store: Store) -> Result<(), String> {
    match store {
        Store::Embedded => Ok(()),
        Store::Postgres => crate::postgres::shared().map(drop),
        Store::Redis => crate::redis::shared().map(drop),
    }
}

/// The settings of a broker on the current backend: see the module doc.
pub fn store_config() -> StoreConfig {
    match current() {
        Store::Embedded => StoreConfig::default(),
        Store::Postgres => {
            let postgres = crate::postgres::shared().unwrap_or_else(|e| panic!("{e}"));
            let settings = PostgresSettings::new(&postgres.fresh_database(), 8).unwrap();
            StoreConfig::Postgres(Box::new(settings))
        }
        Store::Redis => {
            let redis = crate::redis::shared().unwrap_or_else(|e| panic!("{e}"));
            let settings = RedisSettings::new(&redis.fresh_database(), true).unwrap();
            StoreConfig::Redis(Box::new(settings))
        }
    }
}

/// Sets how often a broker of `config` on a shared backend looks for work
/// without a notification (claims, due jobs, leases ended elsewhere): a
/// test that must see a notification's effect sets it past its own length.
pub fn set_poll_interval(config: &mut Config, every: Duration) {
    match &mut config.store {
        StoreConfig::Postgres(settings) => settings.poll_interval = every,
        StoreConfig::Redis(settings) => settings.poll_interval = every,
        StoreConfig::Local { .. } => {}
    }
}

/// Sets how often a broker of `config` on a shared backend removes the
/// queues that hold nothing.
pub fn set_queue_sweep(config: &mut Config, every: Duration) {
    match &mut config.store {
        StoreConfig::Postgres(settings) => settings.queue_sweep = every,
        StoreConfig::Redis(settings) => settings.queue_sweep = every,
        StoreConfig::Local { .. } => {}
    }
}

/// Skips the rest of a test on a shared backend, where `why` makes it not
/// apply (each such difference is listed in the README's Scale-out
/// section). Returns whether the test goes on.
pub fn local_only(why: &str) -> bool {
    let store = current();
    if store.is_shared() {
        eprintln!("not on {}: {why}", store.name());
        return false;
    }
    true
}

/// One test per backend: see the module doc.
#[macro_export]
macro_rules! every_backend {
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        $crate::backend_tests!(
            $(#[$attr])* $name, $body, embedded => Embedded, postgres => Postgres, redis => Redis
        );
    };
}

/// One test per backend shared by several brokers: see the module doc.
#[macro_export]
macro_rules! shared_backends {
    ($(#[$attr:meta])* async fn $name:ident() $body:block) => {
        $crate::backend_tests!($(#[$attr])* $name, $body, postgres => Postgres, redis => Redis);
    };
}

/// What the two macros above expand to: a module `$name` holding the
/// body, and one test per store listed (`test_name => Store variant`).
#[doc(hidden)]
#[macro_export]
macro_rules! backend_tests {
    ($(#[$attr:meta])* $name:ident, $body:block, $($test:ident => $store:ident),+) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn test() $body

            $(
                #[tokio::test]
                async fn $test() {
                    $crate::backends::run_on($crate::backends::Store::$store, test()).await;
                }
            )+
        }
    };
}
