//! The limits of the `sluice.v1` contract and the rules for names, in one
//! place for every side: the broker validates requests with them, the
//! worker checks its settings with them before it connects, and both
//! binaries bound their flags with them. The README's Limits table
//! documents these values.
//!
//! This crate has no dependencies, so the queue state machine can use it
//! without pulling in gRPC. Validators return the reason a value is
//! refused; the caller names the field or flag.

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::RangeInclusive;
use std::time::Duration;

/// The queue used when a request names none.
pub const DEFAULT_QUEUE: &str = "default";
/// Longest queue name, job type, worker id or header name, in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Most headers on one job.
pub const MAX_HEADERS: usize = 64;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;
/// Most overrides of named keys in one queue's limits.
pub const MAX_KEY_OVERRIDES: usize = 1000;
/// Highest weight of a key in fair dispatch.
pub const MAX_KEY_WEIGHT: u32 = 1000;
/// Highest rate of a queue or a key, in jobs a second.
pub const MAX_RATE_PER_SECOND: f64 = 1_000_000.0;
/// Largest burst of a rate.
pub const MAX_RATE_BURST: u32 = 1_000_000;
/// Most keys one ListKeys answers with.
pub const MAX_LIST_KEYS: u32 = 1000;
/// Keys a ListKeys answers with when it names no limit.
pub const DEFAULT_LIST_KEYS: u32 = 100;
/// Most attempts a job may have.
pub const MAX_ATTEMPTS: u32 = 10_000;
/// Most queues or job types one Lease stream may name.
pub const MAX_LEASE_FILTERS: usize = 256;
/// Largest `max_in_flight` of one Lease stream, and so a worker's concurrency.
pub const MAX_IN_FLIGHT: u32 = 65_536;
/// Longest duration accepted anywhere (timeouts, leases, delays).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Shortest lease or per-attempt timeout.
pub const MIN_RUN_LIMIT: Duration = Duration::from_secs(1);
/// The range of a lease or a per-attempt timeout: [`MIN_RUN_LIMIT`] to [`MAX_DURATION`].
pub const RUN_LIMIT: RangeInclusive<Duration> = MIN_RUN_LIMIT..=MAX_DURATION;
/// Furthest ahead a job may be scheduled.
pub const MAX_SCHEDULE_AHEAD: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most jobs or acks in one batch call (EnqueueBatch, AckBatch).
pub const MAX_BATCH: usize = 10_000;
/// Most requests an EnqueueStream or a Work session has read and not yet
/// answered: the broker reads no further until it answers, so a client
/// with more outstanding waits on the stream's flow control.
pub const STREAM_WINDOW: usize = 1024;
/// Largest message the Admin service reads: its requests are ids, names
/// and page tokens, far below this.
pub const MAX_ADMIN_MESSAGE: usize = 64 * 1024;
/// Largest ListJobs page.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// ListJobs page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Most distinct queue names and job types, together: names come from
/// clients, and each costs memory for the life of the broker.
pub const MAX_NAMES: usize = 100_000;
/// Longest `last_error` kept; longer errors keep their end, where the cause usually is.
pub const MAX_ERROR_BYTES: usize = 4096;
/// Largest result an Ack may carry: kept with the finished job for the
/// broker's `--retention`, so it counts against `--max-memory` like a payload.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Longest progress message (a short text or a small JSON document) a
/// worker may report on a running job.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 1024;
/// Highest progress percentage.
pub const MAX_PROGRESS_PERCENT: u32 = 100;

/// Distinct job types that get a `job_type` label of their own in the
/// broker's and the worker's metrics; later ones are counted under
/// [`OTHER_JOB_TYPE`], so a producer cannot grow the scrape without bound.
pub const MAX_JOB_TYPE_LABELS: usize = 100;
/// The `job_type` label of job types past [`MAX_JOB_TYPE_LABELS`], and
/// the `queue` label of queues past [`MAX_QUEUE_LABELS`].
pub const OTHER_JOB_TYPE: &str = "other";
/// Distinct queues that get a `queue` label of their own in the broker's
/// job counters and histograms; later ones share [`OTHER_JOB_TYPE`].
pub const MAX_QUEUE_LABELS: usize = 1000;

/// Which names of one metrics label get a value of their own: the first
/// `limit` keys seen; later ones get [`OTHER_JOB_TYPE`]. The decision for
/// a key is kept, so a name never moves between its own value and
/// `other`.
#[derive(Debug, Clone)]
pub struct LabelCap<K> {
    limit: usize,
    own: HashMap<K, bool>,
    labelled: usize,
}

impl<K: Hash + Eq> LabelCap<K> {
    /// A cap of `limit` names.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            own: HashMap::new(),
            labelled: 0,
        }
    }

    /// Forgets the decision for `key`, whose name is gone (its key may
    /// name another later). Its place stays counted: the values a label
    /// ever took stay bounded by the cap.
    pub fn forget(&mut self, key: &K) {
        self.own.remove(key);
    }

    /// The label value of `name`, known by `key`.
    pub fn label<'a>(&mut self, key: K, name: &'a str) -> &'a str {
        let own = *self.own.entry(key).or_insert_with(|| {
            let own = self.labelled < self.limit;
            self.labelled += usize::from(own);
            own
        });
        if own { name } else { OTHER_JOB_TYPE }
    }
}
/// Upper bounds, in seconds, of the buckets of every job-duration
/// histogram (wait and run times, broker and worker): 1 ms to 1 h.
pub const JOB_SECONDS_BUCKETS: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The characters a queue name may hold, as the README and messages say them.
pub const QUEUE_NAME_CHARS: &str = "A-Z a-z 0-9 . _ : -";

/// Checks a queue name: 1 to [`MAX_NAME_LEN`] bytes of [`QUEUE_NAME_CHARS`].
/// (An empty name in a request means [`DEFAULT_QUEUE`]; callers map it first.)
///
/// # Errors
/// Why the name is refused.
pub fn check_queue_name(queue: &str) -> Result<(), String> {
    check_handle("queue", queue)
}

/// Checks a schedule name: the rules of a queue name.
///
/// # Errors
/// Why the name is refused.
pub fn check_schedule_name(name: &str) -> Result<(), String> {
    check_handle("schedule", name)
}

/// A `what` name of 1 to [`MAX_NAME_LEN`] bytes of [`QUEUE_NAME_CHARS`].
fn check_handle(what: &str, name: &str) -> Result<(), String> {
    check_chars(what, name, MAX_NAME_LEN)
}

/// A `what` name of 1 to `max` bytes of [`QUEUE_NAME_CHARS`].
fn check_chars(what: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} name is empty"));
    }
    if name.len() > max {
        return Err(format!("{what} name is over {max} bytes"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!(
            "{what} name {name:?} has {c:?}; allowed are {QUEUE_NAME_CHARS}"
        ));
    }
    Ok(())
}

/// Checks a required name (job type, worker id, header name): 1 to
/// [`MAX_NAME_LEN`] bytes, no control characters.
///
/// # Errors
/// Why the name is refused.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is required".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is over {MAX_NAME_LEN} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("has control characters".to_owned());
    }
    Ok(())
}

/// Checks a job's flow-control key: the rules of a job type (1 to
/// [`MAX_NAME_LEN`] bytes, no control characters).
///
/// # Errors
/// Why the key is refused.
pub fn check_job_key(key: &str) -> Result<(), String> {
    check_name(key)
}

/// Checks a header value: at most [`MAX_HEADER_VALUE_LEN`] bytes, and no
/// control character but tab. Values become environment variables of
/// exec handlers (no NUL possible there) and lines on operators'
/// terminals (no escape sequences).
///
/// # Errors
/// Why the value is refused.
pub fn check_header_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_HEADER_VALUE_LEN {
        return Err(format!("is over {MAX_HEADER_VALUE_LEN} bytes"));
    }
    if let Some(c) = value.chars().find(|&c| c.is_control() && c != '\t') {
        return Err(format!(
            "has the control character {c:?}; only tab is allowed"
        ));
    }
    Ok(())
}

/// Checks a lease or per-attempt timeout against [`RUN_LIMIT`].
///
/// # Errors
/// Why the value is refused: `must be 1s to 24h`.
pub fn check_run_limit(d: Duration) -> Result<(), String> {
    if RUN_LIMIT.contains(&d) {
        return Ok(());
    }
    Err(format!(
        "must be {} to {}",
        whole_unit(*RUN_LIMIT.start()),
        whole_unit(*RUN_LIMIT.end())
    ))
}

/// `d` in its largest whole unit (`500ms`, `1s`, `24h`), as the README writes limits.
fn whole_unit(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Checks a Lease stream's `max_in_flight` (a worker's concurrency): 1 to [`MAX_IN_FLIGHT`].
///
/// # Errors
/// Why the value is refused.
pub fn check_max_in_flight(n: u64) -> Result<(), String> {
    if n == 0 || n > u64::from(MAX_IN_FLIGHT) {
        return Err(format!("must be 1 to {MAX_IN_FLIGHT}, got {n}"));
    }
    Ok(())
}

// Schedules.

/// A due schedule tick at most this old when a firing pass sees it is on
/// time: it fires whatever the schedule's catch-up policy. Older ticks were
/// missed (the brokers were down) and follow the policy.
pub const SCHEDULE_ON_TIME: Duration = Duration::from_secs(10);
/// Most missed ticks of one schedule that the catch-up policy `all`
/// enqueues in one firing pass; older missed ticks are skipped.
pub const SCHEDULE_CATCH_UP_MAX: usize = 100;
/// Shortest interval of an interval (`every`) schedule.
pub const MIN_SCHEDULE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest interval of an interval (`every`) schedule.
pub const MAX_SCHEDULE_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);
/// How many upcoming fire times a schedule shows when it is created or read.
pub const SCHEDULE_UPCOMING: usize = 5;

// Sources.

/// Longest stream name of a source (a Kafka topic name's limit).
pub const MAX_STREAM_NAME_LEN: usize = 249;
/// How long a source member's claims last when it names no duration.
pub const SOURCE_LEASE_DEFAULT: Duration = Duration::from_secs(10);
/// The durations a source member's claims may last.
pub const SOURCE_LEASE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(600);

/// Checks a source group's name: the rules of a queue name.
///
/// # Errors
/// Why the name is refused.
pub fn check_source_group(name: &str) -> Result<(), String> {
    check_handle("source group", name)
}

/// Checks a source's stream name (a Kafka topic): 1 to
/// [`MAX_STREAM_NAME_LEN`] bytes of [`QUEUE_NAME_CHARS`].
///
/// # Errors
/// Why the name is refused.
pub fn check_stream_name(name: &str) -> Result<(), String> {
    check_chars("stream", name, MAX_STREAM_NAME_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_allow_only_the_documented_characters() {
        assert!(check_queue_name("emails.eu-1:high_prio").is_ok());
        assert!(check_queue_name(&"q".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_queue_name(&"q".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_queue_name("").is_err());
        let refused = check_queue_name("a b").unwrap_err();
        assert!(
            refused.contains("' '") && refused.contains(QUEUE_NAME_CHARS),
            "{refused}"
        );
    }

    #[test]
    fn a_label_cap_keeps_the_first_names_and_its_decisions() {
        let mut cap = LabelCap::new(2);
        assert_eq!(cap.label(1, "a"), "a");
        assert_eq!(cap.label(2, "b"), "b");
        assert_eq!(cap.label(3, "c"), OTHER_JOB_TYPE);
        // Known keys keep their decision.
        assert_eq!(cap.label(1, "a"), "a");
        assert_eq!(cap.label(3, "c"), OTHER_JOB_TYPE);
    }

    #[test]
    fn names_are_required_bounded_and_free_of_control_characters() {
        assert!(check_name("resize image ✓").is_ok());
        assert_eq!(check_name("").unwrap_err(), "is required");
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert_eq!(check_name("a\nb").unwrap_err(), "has control characters");
    }

    #[test]
    fn max_in_flight_bounds_are_inclusive() {
        assert!(check_max_in_flight(1).is_ok());
        assert!(check_max_in_flight(u64::from(MAX_IN_FLIGHT)).is_ok());
        assert!(check_max_in_flight(0).is_err());
        assert!(check_max_in_flight(u64::from(MAX_IN_FLIGHT) + 1).is_err());
    }

    #[test]
    fn run_limits_span_a_second_to_a_day() {
        assert!(check_run_limit(Duration::from_secs(1)).is_ok());
        assert!(check_run_limit(Duration::from_secs(86_400)).is_ok());
        assert_eq!(
            check_run_limit(Duration::from_millis(999)).unwrap_err(),
            "must be 1s to 24h"
        );
        assert!(check_run_limit(Duration::from_secs(86_401)).is_err());
        assert_eq!(whole_unit(Duration::from_millis(1500)), "1500ms");
        assert_eq!(whole_unit(Duration::from_secs(90)), "90s");
        assert_eq!(whole_unit(Duration::from_secs(120)), "2m");
    }
}
