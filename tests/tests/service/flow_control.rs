//! Flow control: a job's key; a queue's limits (jobs in flight, rate, the
//! same per key, overrides) holding jobs READY without spending an
//! attempt; fair dispatch among keys; a worker's key back-off; limits
//! changed while jobs run and kept across a restart; what Stats and
//! ListKeys show; on every backend, and across brokers on the shared ones.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use sluice_broker::config::StoreConfig;
use sluice_e2e::in_process::*;
use sluice_e2e::scratch_dir;
use sluice_proto::v1 as pb;
use tonic::Code;

fn keyed(job_type: &str, key: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        job_type: job_type.into(),
        key: key.into(),
        ..Default::default()
    }
}

async fn set_limits(b: &TestBroker, limits: pb::QueueLimits) -> pb::QueueLimits {
    b.admin
        .clone()
        .set_queue_limits(pb::SetQueueLimitsRequest {
            queue: "default".into(),
            limits: Some(limits),
        })
        .await
        .unwrap()
        .into_inner()
}

fn key_limit(n: u32) -> pb::QueueLimits {
    pb::QueueLimits {
        key_max_in_flight: n,
        ..Default::default()
    }
}

async fn keys(b: &TestBroker) -> Vec<pb::KeyInfo> {
    b.admin
        .clone()
        .list_keys(pb::ListKeysRequest {
            queue: "default".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .keys
}

/// The next job's key.
async fn next_key(stream: &mut tonic::Streaming<pb::LeasedJob>) -> (String, pb::LeasedJob) {
    let leased = next_job(stream).await;
    let key = leased.job.as_ref().unwrap().key.clone();
    (key, leased)
}

const QUIET: Duration = Duration::from_millis(400);

every_backend! {
    async fn a_job_keeps_its_key_and_a_bad_key_is_refused_naming_it() {
        let b = TestBroker::start().await;
        let id = b.enqueue_req(keyed("t", "tenant-7")).await;
        assert_eq!(b.job(&id).await.key, "tenant-7");
        let mut stream = b.lease("w1", 1).await;
        assert_eq!(next_key(&mut stream).await.0, "tenant-7");
        let mut broker = b.broker.clone();
        for bad in ["x".repeat(129), "tab\tkey".to_owned()] {
            let status = broker.enqueue(keyed("t", &bad)).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(status.message().starts_with("key"), "{}", status.message());
        }
    }
}

every_backend! {
    async fn a_key_limit_holds_its_jobs_ready_without_spending_an_attempt() {
        let b = TestBroker::start().await;
        set_limits(&b, key_limit(1)).await;
        let a1 = b.enqueue_req(keyed("t", "a")).await;
        let a2 = b.enqueue_req(keyed("t", "a")).await;
        let mut stream = b.lease("w1", 10).await;
        let (_, first) = next_key(&mut stream).await;
        assert_eq!(job_id(&first), a1);
        assert_quiet(&mut stream, QUIET).await;
        let held = b.job(&a2).await;
        assert_eq!((held.state(), held.attempt), (pb::JobState::Ready, 0));
        let stats = b.queue_stats("default").await;
        assert_eq!(stats.held.unwrap().key_limit, 1);
        assert_eq!(stats.limits.unwrap().key_max_in_flight, 1);
        let listed = keys(&b).await;
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].key.as_str(), listed[0].in_flight, listed[0].ready, listed[0].held_by.as_str()),
            ("a", 1, 1, "key_limit")
        );
        // Jobs of another key go meanwhile.
        let b1 = b.enqueue_req(keyed("t", "b")).await;
        assert_eq!(job_id(&next_job(&mut stream).await), b1);
        b.ack(&first).await.unwrap();
        let (_, second) = next_key(&mut stream).await;
        assert_eq!(job_id(&second), a2);
        assert_eq!(b.job(&a2).await.attempt, 1);
    }
}

every_backend! {
    async fn one_at_a_time_a_key_runs_its_jobs_in_the_queue_order() {
        let b = TestBroker::start().await;
        set_limits(&b, key_limit(1)).await;
        let mut ids = Vec::new();
        for priority in [0, 0, 0, 5, 0] {
            ids.push(
                b.enqueue_req(pb::EnqueueRequest {
                    priority,
                    ..keyed("t", "tenant")
                })
                .await,
            );
        }
        let mut stream = b.lease("w1", 10).await;
        let mut order = Vec::new();
        for _ in 0..5 {
            let leased = next_job(&mut stream).await;
            assert_quiet(&mut stream, Duration::from_millis(100)).await;
            order.push(job_id(&leased).to_owned());
            b.ack(&leased).await.unwrap();
        }
        let expected = [&ids[3], &ids[0], &ids[1], &ids[2], &ids[4]];
        assert_eq!(order.iter().collect::<Vec<_>>(), expected);
    }
}

every_backend! {
    async fn a_queue_limit_counts_the_jobs_of_every_stream() {
        let b = TestBroker::start().await;
        set_limits(&b, pb::QueueLimits { max_in_flight: 3, ..Default::default() }).await;
        for _ in 0..6 {
            b.enqueue("t").await;
        }
        let mut one = b.lease("w1", 2).await;
        let mut two = b.lease("w2", 2).await;
        let mut leased = Vec::new();
        for _ in 0..3 {
            tokio::select! {
                l = next_job(&mut one) => leased.push(l),
                l = next_job(&mut two) => leased.push(l),
            }
        }
        assert_quiet(&mut one, QUIET).await;
        assert_quiet(&mut two, Duration::from_millis(50)).await;
        assert_eq!(b.queue_stats("default").await.held.unwrap().queue_limit, 3);
        b.ack(&leased[0]).await.unwrap();
        tokio::select! {
            _ = next_job(&mut one) => {}
            _ = next_job(&mut two) => {}
        }
    }
}

every_backend! {
    async fn keys_are_dealt_in_turn_so_a_backlog_does_not_starve_the_others() {
        let b = TestBroker::start().await;
        // A limit that never binds: fair dispatch comes with limits.
        set_limits(&b, key_limit(1000)).await;
        let jobs: Vec<pb::EnqueueRequest> = (0..50).map(|_| keyed("t", "hot")).collect();
        b.enqueue_batch(jobs).await.unwrap();
        for key in ["c1", "c2", "c3"] {
            b.enqueue_req(keyed("t", key)).await;
        }
        let mut stream = b.lease("w1", 4).await;
        let mut first = HashSet::new();
        for _ in 0..4 {
            first.insert(next_key(&mut stream).await.0);
        }
        let want: HashSet<String> = ["hot", "c1", "c2", "c3"].map(String::from).into();
        assert_eq!(first, want, "each key's first job before the hot key's second");
    }
}

every_backend! {
    async fn an_override_gives_one_key_its_own_limit() {
        let b = TestBroker::start().await;
        let limits = pb::QueueLimits {
            key_max_in_flight: 1,
            overrides: vec![
                pb::KeyOverride { key: "big".into(), max_in_flight: Some(3), ..Default::default() },
                pb::KeyOverride { key: "blocked".into(), max_in_flight: Some(0), ..Default::default() },
            ],
            ..Default::default()
        };
        let answered = set_limits(&b, limits).await;
        assert_eq!(answered.overrides.len(), 2);
        for key in ["big", "big", "big", "big", "small", "small", "blocked"] {
            b.enqueue_req(keyed("t", key)).await;
        }
        let mut stream = b.lease("w1", 10).await;
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next_key(&mut stream).await.0);
        }
        assert_quiet(&mut stream, QUIET).await;
        got.sort();
        assert_eq!(got, ["big", "big", "big", "small"]);
    }
}

every_backend! {
    async fn a_key_back_off_holds_every_job_of_the_key_for_its_time() {
        let b = TestBroker::start().await;
        let first = b.enqueue_req(keyed("t", "api")).await;
        let second = b.enqueue_req(keyed("t", "api")).await;
        let mut stream = b.lease("w1", 1).await;
        let leased = next_job(&mut stream).await;
        assert_eq!(job_id(&leased), first);
        b.broker
            .clone()
            .release(pb::ReleaseRequest {
                job_id: first.clone(),
                lease_id: leased.lease_id.clone(),
                delay: None,
                key_delay: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
            })
            .await
            .unwrap();
        let released = b.job(&first).await;
        assert_eq!((released.state(), released.attempt), (pb::JobState::Ready, 0));
        let other = b.enqueue_req(keyed("t", "other")).await;
        let leased_other = next_job(&mut stream).await;
        assert_eq!(job_id(&leased_other), other, "other keys run meanwhile");
        let api = keys(&b).await.into_iter().find(|k| k.key == "api").unwrap();
        assert_eq!(api.held_by, "key_delay");
        assert!(api.held_until.is_some());
        assert_eq!(b.queue_stats("default").await.held.unwrap().key_delay, 2);
        b.ack(&leased_other).await.unwrap();
        assert_quiet(&mut stream, QUIET).await;
        // The hold ends: api's jobs run again, in their order.
        let again = next_job(&mut stream).await;
        assert_eq!(job_id(&again), first);
        b.ack(&again).await.unwrap();
        assert_eq!(job_id(&next_job(&mut stream).await), second);
    }
}

every_backend! {
    async fn a_rate_deals_its_burst_at_once_then_one_job_per_interval() {
        let b = TestBroker::start().await;
        set_limits(
            &b,
            pb::QueueLimits {
                rate: Some(pb::RateLimit { per_second: 2.0, burst: 2 }),
                ..Default::default()
            },
        )
        .await;
        for _ in 0..4 {
            b.enqueue("t").await;
        }
        let started = tokio::time::Instant::now();
        let mut stream = b.lease("w1", 10).await;
        next_job(&mut stream).await;
        next_job(&mut stream).await;
        // At 2 a second after the burst: the third at least 0.5 s after
        // the burst, the fourth at least 1 s after it.
        next_job(&mut stream).await;
        next_job(&mut stream).await;
        assert!(started.elapsed() >= Duration::from_millis(950), "{:?}", started.elapsed());
    }
}

every_backend! {
    async fn limits_changed_while_jobs_run_apply_at_once() {
        let b = TestBroker::start().await;
        set_limits(&b, key_limit(1)).await;
        for _ in 0..6 {
            b.enqueue_req(keyed("t", "a")).await;
        }
        let mut stream = b.lease("w1", 10).await;
        let first = next_job(&mut stream).await;
        assert_quiet(&mut stream, QUIET).await;
        set_limits(&b, key_limit(3)).await;
        let second = next_job(&mut stream).await;
        next_job(&mut stream).await;
        assert_quiet(&mut stream, QUIET).await;
        // Lowered under what runs: none starts until the count is under it.
        set_limits(&b, key_limit(1)).await;
        b.ack(&first).await.unwrap();
        b.ack(&second).await.unwrap();
        assert_quiet(&mut stream, QUIET).await;
        // Cleared: the rest start.
        set_limits(&b, pb::QueueLimits::default()).await;
        for _ in 0..3 {
            next_job(&mut stream).await;
        }
        assert!(b.queue_stats("default").await.limits.is_none());
    }
}

every_backend! {
    async fn bad_limits_are_refused_naming_the_field() {
        let b = TestBroker::start().await;
        let mut admin = b.admin.clone();
        let refused = admin
            .set_queue_limits(pb::SetQueueLimitsRequest {
                queue: "default".into(),
                limits: Some(pb::QueueLimits {
                    rate: Some(pb::RateLimit { per_second: -1.0, burst: 1 }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().starts_with("limits.rate"), "{}", refused.message());
        let bad_queue = admin
            .get_queue_limits(pb::GetQueueLimitsRequest { queue: "no spaces".into() })
            .await
            .unwrap_err();
        assert_eq!(bad_queue.code(), Code::InvalidArgument);
    }
}

every_backend! {
    async fn a_restart_keeps_the_limits() {
        let mut config = test_config();
        if matches!(config.store, StoreConfig::Local { .. }) {
            config.store = StoreConfig::data_dir(scratch_dir("limits-restart"));
        }
        let b = TestBroker::with_config(config.clone()).await;
        let limits = pb::QueueLimits {
            queue: "default".into(),
            max_in_flight: 7,
            rate: Some(pb::RateLimit { per_second: 0.5, burst: 3 }),
            key_max_in_flight: 2,
            key_rate: None,
            overrides: vec![pb::KeyOverride {
                key: "acme".into(),
                max_in_flight: Some(4),
                weight: 2,
                ..Default::default()
            }],
        };
        assert_eq!(set_limits(&b, limits.clone()).await, limits);
        b.begin_shutdown();
        b.stopped().await;
        let b = TestBroker::with_config(config).await;
        let read = b
            .admin
            .clone()
            .get_queue_limits(pb::GetQueueLimitsRequest { queue: "default".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(read, limits);
    }
}

shared_backends! {
    /// Two brokers, a stream on each, one key allowed one job in flight:
    /// never two at once, and an Ack through the other broker lets the
    /// next one go.
    async fn a_key_limit_holds_across_brokers() {
        let config = test_config();
        let one = TestBroker::with_config(config.clone()).await;
        let two = TestBroker::with_config(config).await;
        set_limits(&one, key_limit(1)).await;
        for _ in 0..4 {
            one.enqueue_req(keyed("t", "a")).await;
        }
        let mut on_one = one.lease("w1", 4).await;
        let mut on_two = two.lease("w2", 4).await;
        for round in 0..4 {
            let leased = tokio::select! {
                l = next_job(&mut on_one) => l,
                l = next_job(&mut on_two) => l,
            };
            assert_quiet(&mut on_one, Duration::from_millis(300)).await;
            assert_quiet(&mut on_two, Duration::from_millis(50)).await;
            // Resolved through the broker it did not come from, half the time.
            let through = if round % 2 == 0 { &one } else { &two };
            through.ack(&leased).await.unwrap();
        }
    }
}
