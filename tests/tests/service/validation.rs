//! Bad input is refused with INVALID_ARGUMENT naming the field, or with the
//! documented status, and the broker keeps serving.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use prost_types::{Duration as PbDuration, Timestamp as PbTimestamp};
use sluice_e2e::in_process::*;
use sluice_limits::{
    MAX_DURATION, MAX_HEADER_VALUE_LEN, MAX_HEADERS, MAX_IDEMPOTENCY_KEY_LEN, MAX_IN_FLIGHT,
    MAX_LEASE_FILTERS, MAX_NAME_LEN, MAX_SCHEDULE_AHEAD,
};
use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_client::BrokerClient;
use tonic::Code;
use tonic::transport::Channel;

/// Asserts INVALID_ARGUMENT with a message that opens with `field: `.
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "message {:?} should name {field}",
        status.message()
    );
}

/// A change to a valid request.
type Edit<R> = fn(&mut R);

/// An Enqueue of type `t`, changed by `edit`.
fn enqueue_req(edit: Edit<pb::EnqueueRequest>) -> pb::EnqueueRequest {
    let mut req = pb::EnqueueRequest {
        job_type: "t".into(),
        ..Default::default()
    };
    edit(&mut req);
    req
}

/// A Lease of worker `w` for one job, changed by `edit`.
fn lease_req(edit: Edit<pb::LeaseRequest>) -> pb::LeaseRequest {
    let mut req = pb::LeaseRequest {
        worker_id: "w".into(),
        max_in_flight: 1,
        ..Default::default()
    };
    edit(&mut req);
    req
}

/// `n` headers whose values are `value_len` bytes long.
fn headers(n: usize, value_len: usize) -> HashMap<String, String> {
    (0..n)
        .map(|i| (format!("h{i}"), "v".repeat(value_len)))
        .collect()
}

/// `n` distinct names.
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}")).collect()
}

fn seconds(seconds: u64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: seconds.try_into().unwrap(),
        nanos: 0,
    })
}

fn from_now(ahead: Duration) -> Option<PbTimestamp> {
    Some(PbTimestamp::from(SystemTime::now() + ahead))
}

/// One hour: the margin around a time limit, so a slow machine does not
/// move a value across it.
const HOUR: Duration = Duration::from_secs(3600);

every_backend! {
    async fn bad_enqueues_are_refused_and_nothing_is_stored() {
        let mut config = test_config();
        config.max_payload = 8;
        let b = TestBroker::with_config(config).await;
        let mut broker = b.broker.clone();
        let req = |f: fn(&mut pb::EnqueueRequest)| {
            let mut r = pb::EnqueueRequest {
                job_type: "t".into(),
                ..Default::default()
            };
            f(&mut r);
            r
        };
        assert_invalid(
            broker.enqueue(req(|r| r.job_type.clear())).await,
            "job_type",
        );
        assert_invalid(
            broker.enqueue(req(|r| r.job_type = "x".repeat(200))).await,
            "job_type",
        );
        assert_invalid(
            broker.enqueue(req(|r| r.queue = "bad queue!".into())).await,
            "queue",
        );
        assert_invalid(
            broker.enqueue(req(|r| r.payload = vec![1; 9].into())).await,
            "payload",
        );
        assert_invalid(
            broker
                .enqueue(req(|r| {
                    r.timeout = Some(PbDuration {
                        seconds: 0,
                        nanos: 0,
                    })
                }))
                .await,
            "timeout",
        );
        assert_invalid(
            broker
                .enqueue(req(|r| {
                    r.timeout = Some(PbDuration {
                        seconds: 100_000,
                        nanos: 0,
                    })
                }))
                .await,
            "timeout",
        );
        assert!(
            b.admin
                .clone()
                .stats(pb::StatsRequest {})
                .await
                .unwrap()
                .into_inner()
                .queues
                .iter()
                .all(|q| q.enqueued_total == 0)
        );
        // Still serving.
        b.enqueue("t").await;
    }
}

every_backend! {
    async fn bad_lease_requests_are_refused() {
        let b = TestBroker::start().await;
        let mut broker = b.broker.clone();
        let req = |f: fn(&mut pb::LeaseRequest)| {
            let mut r = pb::LeaseRequest {
                worker_id: "w".into(),
                max_in_flight: 1,
                ..Default::default()
            };
            f(&mut r);
            r
        };
        assert_invalid(
            broker.lease(req(|r| r.max_in_flight = 0)).await,
            "max_in_flight",
        );
        assert_invalid(
            broker.lease(req(|r| r.worker_id.clear())).await,
            "worker_id",
        );
        assert_invalid(
            broker.lease(req(|r| r.queues = vec!["a/b".into()])).await,
            "queues",
        );
        assert_invalid(
            broker
                .lease(req(|r| {
                    r.lease_duration = Some(PbDuration {
                        seconds: 0,
                        nanos: 500,
                    })
                }))
                .await,
            "lease_duration",
        );
    }
}

every_backend! {
    async fn bad_durations_on_resolution_are_refused() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        let mut stream = b.lease("w", 1).await;
        let leased = next_job(&mut stream).await;
        let mut broker = b.broker.clone();
        let too_long = Some(PbDuration {
            seconds: 86_401,
            nanos: 0,
        });
        let negative = Some(PbDuration {
            seconds: -1,
            nanos: 0,
        });
        let nack = pb::NackRequest {
            job_id: id.clone(),
            lease_id: leased.lease_id.clone(),
            retry_after: too_long,
            ..Default::default()
        };
        assert_invalid(broker.nack(nack).await, "retry_after");
        let extend = pb::ExtendRequest {
            job_id: id.clone(),
            lease_id: leased.lease_id.clone(),
            extend_by: negative,
        };
        assert_invalid(broker.extend(extend).await, "extend_by");
        let release = pb::ReleaseRequest {
            key_delay: None,
            job_id: id.clone(),
            lease_id: leased.lease_id.clone(),
            delay: too_long,
        };
        assert_invalid(broker.release(release).await, "delay");
        assert_eq!(b.state(&id).await, pb::JobState::Leased);
        b.ack(&leased).await.unwrap();
    }
}

every_backend! {
    async fn full_queue_refuses_with_resource_exhausted() {
        let mut config = test_config();
        config.queue.max_queue_size = Some(2);
        let b = TestBroker::with_config(config).await;
        b.enqueue("t").await;
        b.enqueue("t").await;
        let req = pb::EnqueueRequest {
            job_type: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            code(b.broker.clone().enqueue(req).await),
            Code::ResourceExhausted
        );
    }
}

every_backend! {
    async fn unknown_ids_are_not_found() {
        let b = TestBroker::start().await;
        let missing = pb::GetJobRequest {
            job_id: "00000000-0000-0000-0000-000000000001".into(),
        };
        assert_eq!(code(b.admin.clone().get_job(missing).await), Code::NotFound);
        assert_invalid(
            b.admin
                .clone()
                .get_job(pb::GetJobRequest { job_id: "x".into() })
                .await,
            "job_id",
        );
        assert_invalid(
            b.admin
                .clone()
                .list_jobs(pb::ListJobsRequest {
                    state: 99,
                    ..Default::default()
                })
                .await,
            "state",
        );
    }
}

every_backend! {
    async fn enqueue_fields_are_accepted_at_their_limit_and_refused_past_it() {
        let b = TestBroker::start().await;
        // (the field named, a value at its limit, a value past it)
        type Case = (
            &'static str,
            Edit<pb::EnqueueRequest>,
            Edit<pb::EnqueueRequest>,
        );
        let cases: [Case; 6] = [
            (
                "queue",
                |r| r.queue = "q".repeat(MAX_NAME_LEN),
                |r| r.queue = "q".repeat(MAX_NAME_LEN + 1),
            ),
            (
                "headers",
                |r| r.headers = headers(MAX_HEADERS, 1),
                |r| r.headers = headers(MAX_HEADERS + 1, 1),
            ),
            (
                "headers",
                |r| r.headers = headers(1, MAX_HEADER_VALUE_LEN),
                |r| r.headers = headers(1, MAX_HEADER_VALUE_LEN + 1),
            ),
            (
                "idempotency_key",
                |r| r.idempotency_key = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN),
                |r| r.idempotency_key = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1),
            ),
            (
                "max_attempts",
                |r| r.max_attempts = sluice_limits::MAX_ATTEMPTS,
                |r| r.max_attempts = sluice_limits::MAX_ATTEMPTS + 1,
            ),
            (
                "run_at",
                |r| r.run_at = from_now(MAX_SCHEDULE_AHEAD - HOUR),
                |r| r.run_at = from_now(MAX_SCHEDULE_AHEAD + HOUR),
            ),
        ];
        let mut broker = b.broker.clone();
        for (field, at_limit, past_limit) in cases {
            if let Err(status) = broker.enqueue(enqueue_req(at_limit)).await {
                panic!("{field} at its limit was refused: {status:?}");
            }
            assert_invalid(broker.enqueue(enqueue_req(past_limit)).await, field);
        }
        // A past run_at means now.
        let past = b
            .enqueue_req(enqueue_req(|r| {
                r.run_at = Some(PbTimestamp::from(SystemTime::now() - HOUR));
            }))
            .await;
        assert_eq!(b.state(&past).await, pb::JobState::Ready);
    }
}

every_backend! {
    async fn header_values_hold_no_control_character_but_tab() {
        let b = TestBroker::start().await;
        let mut broker = b.broker.clone();
        for bad in [
            "a\0b",
            "\x1b]0;pwned\x07",
            "a\nb",
            "a\rb",
            "a\u{7f}b",
            "a\u{85}b",
        ] {
            let mut enqueue = enqueue_req(|_| {});
            enqueue.headers.insert("x-note".into(), bad.into());
            let status = broker.enqueue(enqueue).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
            assert!(
                status
                    .message()
                    .starts_with("headers: the value of \"x-note\" has the control character"),
                "{status:?}"
            );
        }
        let mut enqueue = enqueue_req(|_| {});
        enqueue.headers.insert("x-list".into(), "a\tb".into());
        broker.enqueue(enqueue).await.unwrap();
    }
}

every_backend! {
    async fn names_are_required_at_most_128_bytes_and_free_of_control_characters() {
        let b = TestBroker::start().await;
        let mut broker = b.broker.clone();
        let too_long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in ["", too_long.as_str(), "a\nb", "a\u{7f}b"] {
            let mut enqueue = enqueue_req(|_| {});
            enqueue.job_type = bad.into();
            assert_invalid(broker.enqueue(enqueue).await, "job_type");
            let mut enqueue = enqueue_req(|_| {});
            enqueue.headers.insert(bad.into(), "v".into());
            assert_invalid(broker.enqueue(enqueue).await, "headers");
            let mut lease = lease_req(|_| {});
            lease.worker_id = bad.into();
            assert_invalid(broker.lease(lease).await, "worker_id");
            let mut lease = lease_req(|_| {});
            lease.job_types = vec![bad.into()];
            assert_invalid(broker.lease(lease).await, "job_types");
        }
        let longest = "x".repeat(MAX_NAME_LEN);
        let mut enqueue = enqueue_req(|_| {});
        enqueue.job_type = longest.clone();
        enqueue.headers.insert(longest.clone(), "v".into());
        broker.enqueue(enqueue).await.unwrap();
        let mut lease = lease_req(|_| {});
        lease.worker_id = longest;
        broker.lease(lease).await.unwrap();
    }
}

every_backend! {
    async fn lease_fields_are_accepted_at_their_limit_and_refused_past_it() {
        let b = TestBroker::start().await;
        type Case = (&'static str, Edit<pb::LeaseRequest>, Edit<pb::LeaseRequest>);
        let cases: [Case; 4] = [
            (
                "max_in_flight",
                |r| r.max_in_flight = MAX_IN_FLIGHT,
                |r| r.max_in_flight = MAX_IN_FLIGHT + 1,
            ),
            (
                "lease_duration",
                |r| r.lease_duration = seconds(MAX_DURATION.as_secs()),
                |r| r.lease_duration = seconds(MAX_DURATION.as_secs() + 1),
            ),
            (
                "queues",
                |r| r.queues = names(MAX_LEASE_FILTERS),
                |r| r.queues = names(MAX_LEASE_FILTERS + 1),
            ),
            (
                "job_types",
                |r| r.job_types = names(MAX_LEASE_FILTERS),
                |r| r.job_types = names(MAX_LEASE_FILTERS + 1),
            ),
        ];
        let mut broker = b.broker.clone();
        for (field, at_limit, past_limit) in cases {
            if let Err(status) = broker.lease(lease_req(at_limit)).await {
                panic!("{field} at its limit was refused: {status:?}");
            }
            assert_invalid(broker.lease(lease_req(past_limit)).await, field);
        }
    }
}

/// Enqueues `jobs` in batches, every one of which must be taken.
async fn enqueue_all(broker: &mut BrokerClient<Channel>, jobs: Vec<pb::EnqueueRequest>) {
    for batch in jobs.chunks(sluice_limits::MAX_BATCH) {
        let jobs = batch.to_vec();
        let results = broker
            .enqueue_batch(pb::EnqueueBatchRequest { jobs })
            .await
            .unwrap()
            .into_inner()
            .results;
        let refused = results.iter().find(|r| r.code != 0);
        assert!(refused.is_none(), "{refused:?}");
    }
}

every_backend! {
    async fn names_in_use_are_capped_at_100_000_and_freed_names_are_taken_again() {
        use sluice_limits::MAX_NAMES;
        if !local_only("the cap bounds one broker's memory; PostgreSQL caps its queues instead") {
            return;
        }
        let b = TestBroker::start().await;
        let mut broker = b.broker.clone();
        // Each job brings two new names: its queue and its type.
        let jobs: Vec<pb::EnqueueRequest> = (0..MAX_NAMES / 2)
            .map(|i| pb::EnqueueRequest {
                queue: format!("q{i}"),
                job_type: format!("t{i}"),
                ..Default::default()
            })
            .collect();
        enqueue_all(&mut broker, jobs).await;
        // Known names are still served; a new one, anywhere, is not.
        b.enqueue_req(pb::EnqueueRequest {
            queue: "q0".into(),
            job_type: "t1".into(),
            ..Default::default()
        })
        .await;
        let new_name = |queue: &str, job_type: &str| pb::EnqueueRequest {
            queue: queue.into(),
            job_type: job_type.into(),
            ..Default::default()
        };
        let status = broker
            .enqueue(new_name("q0", "one-too-many"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("100000"), "{status:?}");
        // A Lease naming queues and types no job uses takes no name: it is
        // served, and waits for them.
        let waiting = lease_req(|r| {
            r.queues = vec!["later".into()];
            r.job_types = (0..sluice_limits::MAX_LEASE_FILTERS)
                .map(|i| format!("unused-{i}"))
                .collect();
        });
        let mut stream = broker.lease(waiting).await.unwrap().into_inner();
        // Names nothing uses any more are taken by new ones.
        let mut admin = b.admin.clone();
        for i in 100..110 {
            let purge = pb::PurgeQueueRequest {
                queue: format!("q{i}"),
                state: pb::JobState::Ready.into(),
            };
            assert_eq!(
                admin.purge_queue(purge).await.unwrap().into_inner().purged,
                1
            );
        }
        // Ten queues and their ten types freed: twenty new names fit, one more does not.
        for i in 0..9 {
            broker
                .enqueue(new_name(&format!("new-q{i}"), &format!("new-t{i}")))
                .await
                .unwrap();
        }
        let id = broker
            .enqueue(new_name("later", "unused-7"))
            .await
            .unwrap()
            .into_inner()
            .job_id;
        let status = broker.enqueue(new_name("q0", "fresh")).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        // The waiting stream took up its names and gets its job.
        assert_eq!(job_id(&next_job(&mut stream).await), id);
    }
}

every_backend! {
    async fn a_request_message_over_max_payload_plus_512_kib_is_out_of_range() {
        let mut config = test_config();
        config.max_payload = 1024;
        let limit = config.max_payload + 512 * 1024;
        let b = TestBroker::with_config(config).await;
        let mut broker = b.broker.clone();
        // An Enqueue of type "t" with a payload of n bytes encodes to 3 bytes
        // for the type (tag, length, "t"), then the payload's tag, its length
        // (3 bytes from 16 KiB to 2 MiB) and the n bytes.
        let of_size = |size: usize| sluice_e2e::job("t", &vec![0; size - 7]);
        // At the limit gRPC takes it, and the broker refuses its payload.
        assert_invalid(broker.enqueue(of_size(limit)).await, "payload");
        let status = broker.enqueue(of_size(limit + 1)).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        for size in [limit + 1, limit] {
            assert!(status.message().contains(&size.to_string()), "{status:?}");
        }
        // 600 KiB of headers (too many anyway): the whole message is measured.
        let req = enqueue_req(|r| r.headers = headers(150, 4096));
        assert_eq!(code(broker.enqueue(req).await), Code::OutOfRange);
        b.enqueue("t").await;
    }
}

every_backend! {
    async fn the_largest_valid_enqueue_fits_in_a_request_message() {
        let max_payload = test_config().max_payload;
        let b = TestBroker::start().await;
        let name = |i: usize| format!("{i:x>width$}", width = MAX_NAME_LEN);
        let req = pb::EnqueueRequest {
            key: String::new(),
            queue: "q".repeat(MAX_NAME_LEN),
            job_type: name(0),
            payload: vec![0; max_payload].into(),
            headers: (0..MAX_HEADERS)
                .map(|i| (name(i), "v".repeat(MAX_HEADER_VALUE_LEN)))
                .collect(),
            priority: i32::MIN,
            max_attempts: sluice_limits::MAX_ATTEMPTS,
            timeout: seconds(MAX_DURATION.as_secs()),
            run_at: from_now(MAX_SCHEDULE_AHEAD - HOUR),
            idempotency_key: "k".repeat(MAX_IDEMPOTENCY_KEY_LEN),
        };
        let id = b.enqueue_req(req).await;
        let job = b.job(&id).await;
        assert_eq!(
            (job.payload.len(), job.headers.len()),
            (max_payload, MAX_HEADERS)
        );
    }
}

every_backend! {
    async fn an_admin_message_over_64_kib_is_out_of_range() {
        let b = TestBroker::start().await;
        let mut admin = b.admin.clone();
        let limit = sluice_limits::MAX_ADMIN_MESSAGE;
        // A GetJob's id field: a tag, a length (3 bytes from 16 KiB) and the id.
        let of_size = |size: usize| pb::GetJobRequest {
            job_id: "x".repeat(size - 4),
        };
        assert_eq!(
            code(admin.get_job(of_size(limit)).await),
            Code::InvalidArgument,
            "at the limit the message is read, and its id refused"
        );
        let status = admin.get_job(of_size(limit + 1)).await.unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    }
}

shared_backends! {
    /// The embedded store caps its names instead (above).
    async fn shared_stores_cap_their_queues_and_sweep_the_empty_ones() {
        use sluice_limits::MAX_NAMES;
        let mut config = test_config();
        sluice_e2e::backends::set_queue_sweep(&mut config, Duration::from_millis(200));
        let b = TestBroker::with_config(config).await;
        let mut broker = b.broker.clone();
        let jobs: Vec<pb::EnqueueRequest> = (0..MAX_NAMES)
            .map(|i| pb::EnqueueRequest {
                queue: format!("q{i}"),
                job_type: "t".into(),
                ..Default::default()
            })
            .collect();
        enqueue_all(&mut broker, jobs).await;
        let new_queue = |queue: &str| pb::EnqueueRequest {
            queue: queue.into(),
            job_type: "t".into(),
            ..Default::default()
        };
        // A known queue takes more jobs; a new one does not fit.
        broker.enqueue(new_queue("q0")).await.unwrap();
        let status = broker.enqueue(new_queue("one-too-many")).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("100000 queues"), "{status:?}");
        // Queues that hold nothing are swept, and their places taken again.
        let mut admin = b.admin.clone();
        for i in 1..=3 {
            let purge = pb::PurgeQueueRequest {
                queue: format!("q{i}"),
                state: pb::JobState::Ready.into(),
            };
            admin.purge_queue(purge).await.unwrap();
        }
        // Swept: their places are taken again (one cheap call per try;
        // Stats of 100,000 queues is not), and they leave Stats.
        for queue in ["new-1", "new-2", "new-3"] {
            eventually("an empty queue swept", || async {
                broker.clone().enqueue(new_queue(queue)).await.is_ok()
            })
            .await;
        }
        let stats = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner();
        let left: Vec<&str> = stats
            .queues
            .iter()
            .map(|q| q.queue.as_str())
            .filter(|q| ["q1", "q2", "q3"].contains(q))
            .collect();
        assert!(left.is_empty(), "{left:?} still in Stats");
        let status = broker.enqueue(new_queue("new-4")).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
}
