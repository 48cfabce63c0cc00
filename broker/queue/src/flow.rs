//! Flow control: the limits an operator sets on a queue, and the rule that
//! says whether the queue, or one key of it, may have another job leased
//! now.
//!
//! A job may carry a key (a customer, a tenant). A queue's limits cap its
//! jobs in flight (leased) across every worker, its dispatch rate (a token
//! bucket), and the same two per key, with overrides for named keys. A job
//! whose key or queue is at a limit is simply not leased: it stays READY,
//! its attempt counter does not move, and it is dealt the moment a slot or
//! a token frees. A key can also be held back for a while by a worker
//! (`key_delay` on Release or Nack, after a downstream 429).
//!
//! The token bucket's bound: over any window of `T` seconds, at most
//! `burst + rate × T` jobs are leased. A bucket starts full.
//!
//! This module holds the rules and the per-queue and per-key state; the
//! queue (`lib.rs`, `consumers.rs`) asks [`Flow::key_hold`] and
//! [`Flow::queue_hold`] before dealing, and tells the flow of every lease
//! that starts or ends. Keys are dealt in turn by `lanes.rs`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::Timestamp;

/// A token bucket's settings: `per_second` tokens a second, holding at
/// most `burst` (at least 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Jobs a second, above 0.
    pub per_second: f64,
    /// Jobs that may start at once after a quiet spell; at least 1.
    pub burst: u32,
}

/// A named key's own limits, in place of the queue's key limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyOverride {
    /// Its jobs in flight; `None` for the queue's `key_max_in_flight`.
    /// 0 holds every job of the key.
    pub max_in_flight: Option<u32>,
    /// Its rate; `None` for the queue's `key_rate`.
    pub rate: Option<RateLimit>,
    /// Jobs dealt to it per turn of fair dispatch; `None` for 1.
    pub weight: Option<u32>,
}

/// The limits of one queue, as an operator sets them (`SetQueueLimits`).
/// `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueLimits {
    /// The queue's jobs in flight across every worker.
    pub max_in_flight: Option<u32>,
    /// The queue's dispatch rate.
    pub rate: Option<RateLimit>,
    /// Each key's jobs in flight.
    pub key_max_in_flight: Option<u32>,
    /// Each key's dispatch rate.
    pub key_rate: Option<RateLimit>,
    /// Named keys' own limits.
    pub overrides: BTreeMap<String, KeyOverride>,
}

impl QueueLimits {
    /// No limit at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The in-flight limit of `key`.
    pub fn key_max_in_flight(&self, key: &str) -> Option<u32> {
        self.overrides
            .get(key)
            .and_then(|o| o.max_in_flight)
            .or(self.key_max_in_flight)
    }

    /// The rate of `key`.
    pub fn key_rate(&self, key: &str) -> Option<RateLimit> {
        self.overrides
            .get(key)
            .and_then(|o| o.rate)
            .or(self.key_rate)
    }

    /// Jobs dealt to `key` per turn.
    pub fn weight(&self, key: &str) -> u32 {
        self.overrides
            .get(key)
            .and_then(|o| o.weight)
            .unwrap_or(1)
            .max(1)
    }
}

/// Why a queue or a key deals no job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldReason {
    /// The key has its limit of jobs in flight.
    KeyLimit,
    /// The queue has its limit of jobs in flight.
    QueueLimit,
    /// The key's or the queue's bucket is empty.
    Rate,
    /// A worker held the key back (`key_delay`).
    KeyDelay,
}

impl HoldReason {
    /// Every reason, in the order Stats and the metrics show them.
    pub const ALL: [HoldReason; 4] = [
        HoldReason::KeyLimit,
        HoldReason::QueueLimit,
        HoldReason::Rate,
        HoldReason::KeyDelay,
    ];

    /// Its name in metrics labels and the JSON form.
    pub const fn name(self) -> &'static str {
        match self {
            HoldReason::KeyLimit => "key_limit",
            HoldReason::QueueLimit => "queue_limit",
            HoldReason::Rate => "rate",
            HoldReason::KeyDelay => "key_delay",
        }
    }
}

/// Why something deals no job now, and until when if that is known (a
/// slot frees only when a lease ends, which has no time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// What holds it.
    pub reason: HoldReason,
    /// When it may deal again, if a time says so.
    pub until: Option<Timestamp>,
}

/// A token bucket's state: `tokens` as of `at`. Every backend keeps its
/// buckets in this form (a shared store in two columns or fields) and
/// applies its rules through these methods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Tokens as of `at`.
    pub tokens: f64,
    /// When `tokens` was counted.
    pub at: Timestamp,
}

/// Tokens short of a whole one that still count as one: the float sums of
/// refills must not hold a job a microsecond too long.
const TOKEN_SLACK: f64 = 1e-9;

impl Bucket {
    /// A full bucket, as a rate's first use finds it.
    pub fn full(rate: RateLimit, now: Timestamp) -> Self {
        Self {
            tokens: f64::from(rate.burst),
            at: now,
        }
    }

    fn tokens_at(&self, rate: RateLimit, now: Timestamp) -> f64 {
        let elapsed = now.saturating_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst))
    }

    /// Whole tokens there at `now`.
    pub fn whole_tokens(&self, rate: RateLimit, now: Timestamp) -> u64 {
        (self.tokens_at(rate, now) + TOKEN_SLACK).floor() as u64
    }

    /// When a whole token is there: `None` if it is now.
    pub fn wait(&self, rate: RateLimit, now: Timestamp) -> Option<Timestamp> {
        let missing = 1.0 - self.tokens_at(rate, now);
        (missing > TOKEN_SLACK).then(|| {
            // Rounded up to the microsecond, so that the wake-up finds it.
            let micros = (missing / rate.per_second * 1e6).ceil();
            now.saturating_add(Duration::from_micros(micros as u64))
        })
    }

    /// Takes one token (the caller checked there is one).
    pub fn take(&mut self, rate: RateLimit, now: Timestamp) {
        self.tokens = (self.tokens_at(rate, now) - 1.0).max(0.0);
        self.at = now;
    }

    fn is_full(&self, rate: RateLimit, now: Timestamp) -> bool {
        self.tokens_at(rate, now) >= f64::from(rate.burst) - TOKEN_SLACK
    }
}

/// What the queue knows of one key of a queue.
#[derive(Debug, Default)]
pub(crate) struct KeyState {
    /// Its jobs leased now.
    pub in_flight: u32,
    /// Its jobs READY now (of every type).
    pub ready: u64,
    /// Held back by a worker until then.
    pub held_until: Option<Timestamp>,
    /// Its token bucket, while it has a rate.
    bucket: Option<Bucket>,
    /// Its jobs are in the lanes' rings (see `lanes.rs`): it may be dealt.
    pub open: bool,
}

/// The flow control of one queue: its limits, what is in flight, its
/// buckets and its keys.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    pub limits: QueueLimits,
    /// Its jobs leased now.
    pub in_flight: u32,
    bucket: Option<Bucket>,
    /// Every key with a job ready or in flight, a hold, or a bucket not
    /// yet full again.
    pub keys: HashMap<Arc<str>, KeyState>,
    /// The queue itself deals nothing now (the last [`Flow::queue_hold`]).
    pub held: bool,
}

impl Flow {
    /// Why the queue deals nothing now, if it does not.
    pub fn queue_hold(&self, now: Timestamp) -> Option<Hold> {
        queue_hold(&self.limits, self.in_flight, self.bucket.as_ref(), now)
    }

    /// Why jobs of `key` are not dealt now, if they are not (the queue's
    /// own hold aside).
    pub fn key_hold(&self, key: &str, now: Timestamp) -> Option<Hold> {
        let state = self.keys.get(key);
        key_hold(
            &self.limits,
            key,
            state.map_or(0, |s| s.in_flight),
            state.and_then(|s| s.held_until),
            state.and_then(|s| s.bucket.as_ref()),
            now,
        )
    }

    /// A job of `key` (if it has one) was leased: it takes a slot and a
    /// token of its key and of the queue.
    pub fn leased(&mut self, key: Option<&Arc<str>>, now: Timestamp) {
        self.in_flight += 1;
        if let Some(rate) = self.limits.rate {
            self.bucket
                .get_or_insert_with(|| Bucket::full(rate, now))
                .take(rate, now);
        }
        let Some(key) = key else { return };
        let rate = self.limits.key_rate(key);
        let state = self.keys.entry(key.clone()).or_default();
        state.in_flight += 1;
        if let Some(rate) = rate {
            state
                .bucket
                .get_or_insert_with(|| Bucket::full(rate, now))
                .take(rate, now);
        }
    }

    /// A lease of a job of `key` ended: its slots are free again.
    pub fn lease_ended(&mut self, key: Option<&Arc<str>>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(state) = key.and_then(|k| self.keys.get_mut(k)) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }

    /// Holds every job of `key` until `until` (a later hold wins).
    pub fn hold_key(&mut self, key: &Arc<str>, until: Timestamp) {
        let state = self.keys.entry(key.clone()).or_default();
        state.held_until = Some(state.held_until.map_or(until, |t| t.max(until)));
    }

    /// New limits: buckets refill to the new burst from where they were.
    pub fn set_limits(&mut self, limits: QueueLimits) {
        self.limits = limits;
        if self.limits.rate.is_none() {
            self.bucket = None;
        }
        for (key, state) in &mut self.keys {
            if self.limits.key_rate(key).is_none() {
                state.bucket = None;
            }
        }
    }

    /// Forgets `key` if nothing of it is left to remember: no job ready or
    /// in flight, no hold to come, and a bucket that is full again (a
    /// bucket forgotten earlier would come back full too soon).
    pub fn forget_if_idle(&mut self, key: &str, now: Timestamp) {
        let rate = self.limits.key_rate(key);
        let idle = self.keys.get(key).is_some_and(|s| {
            s.in_flight == 0
                && s.ready == 0
                && s.held_until.is_none_or(|t| t <= now)
                && s.bucket
                    .as_ref()
                    .zip(rate)
                    .is_none_or(|(b, rate)| b.is_full(rate, now))
        });
        if idle {
            self.keys.remove(key);
        }
    }
}

/// The rule for a queue: why it deals nothing now, with `in_flight` jobs
/// leased and its bucket as it is, if it does not. One definition for
/// every backend.
pub fn queue_hold(
    limits: &QueueLimits,
    in_flight: u32,
    bucket: Option<&Bucket>,
    now: Timestamp,
) -> Option<Hold> {
    if limits.max_in_flight.is_some_and(|max| in_flight >= max) {
        return Some(Hold {
            reason: HoldReason::QueueLimit,
            until: None,
        });
    }
    rate_hold(limits.rate, bucket, now)
}

/// The rule for a key: why its jobs are not dealt now (the queue's own
/// hold aside), with `in_flight` of them leased, held back by a worker
/// until `held_until` and its bucket as it is, if they are not. One
/// definition for every backend.
pub fn key_hold(
    limits: &QueueLimits,
    key: &str,
    in_flight: u32,
    held_until: Option<Timestamp>,
    bucket: Option<&Bucket>,
    now: Timestamp,
) -> Option<Hold> {
    if let Some(until) = held_until.filter(|&t| t > now) {
        return Some(Hold {
            reason: HoldReason::KeyDelay,
            until: Some(until),
        });
    }
    if limits
        .key_max_in_flight(key)
        .is_some_and(|max| in_flight >= max)
    {
        return Some(Hold {
            reason: HoldReason::KeyLimit,
            until: None,
        });
    }
    rate_hold(limits.key_rate(key), bucket, now)
}

/// The hold of an empty bucket.
fn rate_hold(rate: Option<RateLimit>, bucket: Option<&Bucket>, now: Timestamp) -> Option<Hold> {
    let until = bucket?.wait(rate?, now)?;
    Some(Hold {
        reason: HoldReason::Rate,
        until: Some(until),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_micros(ms * 1000)
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = RateLimit {
            per_second: 10.0,
            burst: 3,
        };
        let mut flow = Flow::default();
        flow.set_limits(QueueLimits {
            rate: Some(rate),
            ..QueueLimits::default()
        });
        for _ in 0..3 {
            assert_eq!(flow.queue_hold(at(0)), None);
            flow.leased(None, at(0));
        }
        let hold = flow.queue_hold(at(0)).expect("the burst is spent");
        assert_eq!(hold.reason, HoldReason::Rate);
        assert_eq!(hold.until, Some(at(100)));
        assert!(flow.queue_hold(at(99)).is_some());
        assert_eq!(flow.queue_hold(at(100)), None);
    }

    #[test]
    fn an_override_replaces_the_key_limits_of_one_key() {
        let mut flow = Flow::default();
        let mut limits = QueueLimits {
            key_max_in_flight: Some(1),
            ..QueueLimits::default()
        };
        limits.overrides.insert(
            "big".into(),
            KeyOverride {
                max_in_flight: Some(2),
                weight: Some(3),
                ..KeyOverride::default()
            },
        );
        flow.set_limits(limits);
        let (small, big): (Arc<str>, Arc<str>) = ("small".into(), "big".into());
        flow.leased(Some(&small), at(0));
        flow.leased(Some(&big), at(0));
        assert_eq!(
            flow.key_hold("small", at(0)).map(|h| h.reason),
            Some(HoldReason::KeyLimit)
        );
        assert_eq!(flow.key_hold("big", at(0)), None);
        flow.leased(Some(&big), at(0));
        assert!(flow.key_hold("big", at(0)).is_some());
        flow.lease_ended(Some(&big));
        assert_eq!(flow.key_hold("big", at(0)), None);
        assert_eq!(flow.limits.weight("big"), 3);
        assert_eq!(flow.limits.weight("small"), 1);
    }

    #[test]
    fn a_held_key_waits_until_its_time() {
        let mut flow = Flow::default();
        let key: Arc<str> = "k".into();
        flow.hold_key(&key, at(500));
        flow.hold_key(&key, at(200)); // an earlier hold does not shorten it
        let hold = flow.key_hold("k", at(0)).expect("held");
        assert_eq!(
            (hold.reason, hold.until),
            (HoldReason::KeyDelay, Some(at(500)))
        );
        assert_eq!(flow.key_hold("k", at(500)), None);
        flow.forget_if_idle("k", at(500));
        assert!(flow.keys.is_empty());
    }
}
