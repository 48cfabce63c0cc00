//! How many connections the broker holds open: at most `--max-connections`
//! in all and `--max-connections-per-ip` from one client address, over
//! both listeners. A connection past either cap is closed as soon as it is
//! accepted (the newest goes, the established stay), and logged at warn at
//! most once per [`WARN_EVERY`] with the count closed since the last line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

/// Shortest time between two warnings about refused connections.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The two caps, and the connections open now.
#[derive(Debug)]
pub struct ConnectionCaps {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
    warn: RateLimitedWarn,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Only addresses with at least one connection: an entry goes when its
    /// count reaches zero, so the map holds no more than `total` entries.
    per_ip: HashMap<IpAddr, usize>,
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapHit {
    /// `--max-connections`.
    Total,
    /// `--max-connections-per-ip`.
    PerIp,
}

/// One admitted connection: counted against the caps until dropped.
#[derive(Debug)]
pub struct Admitted {
    caps: Arc<ConnectionCaps>,
    ip: IpAddr,
}

impl ConnectionCaps {
    /// At most `max_total` connections, `max_per_ip` of them from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            open: Mutex::new(Open::default()),
            warn: RateLimitedWarn::default(),
        })
    }

    /// Counts a new connection from `ip`, or says which cap it is past
    /// (and warns, at most every [`WARN_EVERY`]).
    ///
    /// # Errors
    /// [`CapHit`] when the connection must be closed.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, CapHit> {
        let refused = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let from_ip = open.per_ip.get(&ip).copied().unwrap_or(0);
            if open.total >= self.max_total {
                Some(CapHit::Total)
            } else if from_ip >= self.max_per_ip {
                Some(CapHit::PerIp)
            } else {
                open.total += 1;
                open.per_ip.insert(ip, from_ip + 1);
                None
            }
        };
        match refused {
            None => Ok(Admitted {
                caps: self.clone(),
                ip,
            }),
            Some(hit) => {
                self.warn.refused(hit, ip, self.max_total, self.max_per_ip);
                Err(hit)
            }
        }
    }

    /// Connections open now, in all.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .caps
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// A warning that fires at most every [`WARN_EVERY`], saying how many
/// connections were closed since it last fired: a flood of refused
/// connections must not become a flood of log lines.
#[derive(Debug, Default)]
struct RateLimitedWarn {
    last: Mutex<Option<Instant>>,
    /// Refusals not yet reported.
    quiet: AtomicU64,
}

impl RateLimitedWarn {
    fn refused(&self, hit: CapHit, ip: IpAddr, max_total: usize, max_per_ip: usize) {
        self.quiet.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let closed = self.quiet.swap(0, Ordering::Relaxed);
        match hit {
            CapHit::Total => warn!(
                closed,
                max_connections = max_total,
                "connection limit reached (--max-connections): closing new connections"
            ),
            CapHit::PerIp => warn!(
                closed,
                client = %ip,
                max_connections_per_ip = max_per_ip,
                "connections from one address at the limit (--max-connections-per-ip): closing its new connections"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cap_closes_the_newest_and_frees_its_place_on_drop() {
        let caps = ConnectionCaps::new(3, 2);
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let first = caps.admit(a).unwrap();
        let _second = caps.admit(a).unwrap();
        assert_eq!(caps.admit(a).unwrap_err(), CapHit::PerIp);
        let _third = caps.admit(b).unwrap();
        assert_eq!(caps.admit(b).unwrap_err(), CapHit::Total);
        assert_eq!(caps.open(), 3);
        drop(first);
        assert_eq!(caps.open(), 2);
        let _again = caps.admit(a).unwrap();
    }
}
