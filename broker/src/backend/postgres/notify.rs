//! The notifications brokers send each other through the database, each
//! after the change it announces has committed:
//!
//! - on the wake-up channel, `ready` (a job became READY: claim) and
//!   `scheduled` (a job was scheduled: look at the due times again);
//! - on a broker's own channel, the leases of its streams that ended
//!   through another broker (Ack, Nack, Release, expiry), whose slots it
//!   frees when told, not at its next poll.
//!
//! One task sends them, what gathered in one statement. A NOTIFY inside
//! the change's own transaction would make its commit take PostgreSQL's
//! global notification lock, and so wait for every other such commit and
//! its WAL flush, one at a time; sent on their own, they write no WAL. A
//! broker that dies between a commit and its notification leaves the
//! others to find the change at their next poll.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Pool;
use sluice_queue::JobState;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::debug;
use uuid::Uuid;

use super::sql;
use crate::backend::cluster::lease_entry;

/// The channel every broker LISTENs on for wake-ups.
pub const WAKE_CHANNEL: &str = "sluice_wake";
/// The wake-up's payload when a job became READY.
pub const READY: &str = "ready";
/// The wake-up's payload when a job was scheduled.
pub const SCHEDULED: &str = "scheduled";

/// Ended leases waiting to be told; past this, one is dropped (its
/// broker's recount at the next poll finds it instead).
const WAITING: usize = 8192;

/// Most bytes of one notification's payload (PostgreSQL's limit is 8000).
const MAX_PAYLOAD: usize = 7900;

/// A lease that ended here: the broker and stream that held it, and its job.
type Ended = (Uuid, i64, Uuid);

/// What is to be sent, gathered until the task sends it.
pub struct Notifier {
    ready: AtomicBool,
    scheduled: AtomicBool,
    /// Wakes the task for a wake-up to send.
    wake: Notify,
    ended: mpsc::Sender<Ended>,
    /// The task's end, taken when it starts.
    receiver: Mutex<Option<mpsc::Receiver<Ended>>>,
}

impl Default for Notifier {
    fn default() -> Self {
        let (ended, receiver) = mpsc::channel(WAITING);
        Self {
            ready: AtomicBool::new(false),
            scheduled: AtomicBool::new(false),
            wake: Notify::new(),
            ended,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl Notifier {
    /// A change that left a job in `state` committed: every broker hears
    /// of it if the job became READY or SCHEDULED.
    pub fn job_now(&self, state: JobState) {
        let flag = match state {
            JobState::Ready => &self.ready,
            JobState::Scheduled => &self.scheduled,
            _ => return,
        };
        flag.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The lease of `job` on `stream` of another broker, `broker`, ended
    /// (committed).
    pub fn lease_ended(&self, broker: Uuid, stream: i64, job: Uuid) {
        if self.ended.try_send((broker, stream, job)).is_err() {
            debug!(%broker, "too many ended leases to tell: that broker recounts at its poll");
        }
    }

    /// Sends what is gathered, until `stop`; the first call does the work.
    pub async fn run(&self, pool: Pool, stop: CancellationToken) {
        let taken = self
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut receiver) = taken else { return };
        let mut ended = Vec::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                n = receiver.recv_many(&mut ended, WAITING) => if n == 0 { return },
            }
            while let Ok(more) = receiver.try_recv() {
                ended.push(more);
            }
            let (mut channels, mut payloads) = lease_notifications(&ended);
            ended.clear();
            for (flag, payload) in [(&self.ready, READY), (&self.scheduled, SCHEDULED)] {
                if flag.swap(false, Ordering::AcqRel) {
                    channels.push(WAKE_CHANNEL.to_owned());
                    payloads.push(payload.to_owned());
                }
            }
            if channels.is_empty() {
                continue;
            }
            let sent = async {
                let client = sql::connection(&pool).await?;
                sql::execute(
                    &client,
                    "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS n(c, p)",
                    &[&channels, &payloads],
                )
                .await
            };
            if let Err(e) = sent.await {
                // The brokers recount and claim at their next poll.
                debug!(error = %e, "could not notify the other brokers");
            }
        }
    }
}

/// The channel broker `broker_id` LISTENs on for its streams' leases
/// that ended through other brokers (63 bytes at most, as PostgreSQL's
/// identifiers).
pub fn freed_channel(broker_id: Uuid) -> String {
    format!("sluice_freed_{}", broker_id.simple())
}

/// The entries of a [`freed_channel`] payload (each a
/// [`lease_entry`], joined with `,`).
pub fn freed_entries(payload: &str) -> impl Iterator<Item = &str> {
    payload.split(',')
}

/// One notification per broker (more if its payload would be too long):
/// the channels and the payloads.
fn lease_notifications(ended: &[Ended]) -> (Vec<String>, Vec<String>) {
    let mut by_broker: HashMap<Uuid, Vec<String>> = HashMap::new();
    for &(broker, stream, job) in ended {
        by_broker
            .entry(broker)
            .or_default()
            .push(lease_entry(stream, job));
    }
    let (mut channels, mut payloads) = (Vec::new(), Vec::new());
    for (broker, entries) in by_broker {
        let mut payload = String::new();
        for entry in entries {
            if !payload.is_empty() && payload.len() + 1 + entry.len() > MAX_PAYLOAD {
                channels.push(freed_channel(broker));
                payloads.push(std::mem::take(&mut payload));
            }
            if !payload.is_empty() {
                payload.push(',');
            }
            payload.push_str(&entry);
        }
        channels.push(freed_channel(broker));
        payloads.push(payload);
    }
    (channels, payloads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cluster::parse_lease_entry;

    #[test]
    fn long_lists_are_split_under_the_payload_limit() {
        let broker = Uuid::from_u128(1);
        let ended: Vec<Ended> = (0..500).map(|i| (broker, 7, Uuid::from_u128(i))).collect();
        let (channels, payloads) = lease_notifications(&ended);
        assert!(channels.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let parsed: Vec<(i64, Uuid)> = payloads
            .iter()
            .flat_map(|p| freed_entries(p))
            .map(|entry| parse_lease_entry(entry).expect("an entry"))
            .collect();
        assert_eq!(parsed.len(), 500);
        assert_eq!(
            parsed.iter().filter(|(stream, _)| *stream == 7).count(),
            500
        );
    }
}
