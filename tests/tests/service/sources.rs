//! Source groups (Broker.ClaimPartitions, CommitPartition,
//! LeaveSourceGroup; Admin.ListSourcePartitions, SetSourcePositions), on
//! every backend: claims dealt among members and fenced by epoch, a
//! commit's jobs and position together, stale commits refused, records
//! that cannot be jobs kept as dead letters, a full queue taking a prefix,
//! and positions set by an admin.

#![allow(clippy::unwrap_used)]

use sluice_e2e::all_jobs;
use sluice_e2e::in_process::*;
use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_client::BrokerClient;
use tonic::Code;
use tonic::transport::Channel;

const GROUP: &str = "orders-bridge";

fn partitions(n: i32) -> Vec<pb::SourcePartition> {
    (0..n)
        .map(|partition| pb::SourcePartition {
            stream: "orders".into(),
            partition,
        })
        .collect()
}

async fn claim(broker: &mut BrokerClient<Channel>, member: &str, n: i32) -> Vec<pb::HeldPartition> {
    broker
        .claim_partitions(pb::ClaimPartitionsRequest {
            group: GROUP.into(),
            member_id: member.into(),
            partitions: partitions(n),
            lease_duration: Some(prost_types::Duration {
                seconds: 30,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .held
}

fn record(offset: i64, queue: &str) -> pb::SourceRecord {
    pb::SourceRecord {
        job: Some(pb::EnqueueRequest {
            queue: queue.into(),
            job_type: "order.created".into(),
            payload: format!("{{\"offset\":{offset}}}").into_bytes().into(),
            headers: [("kafka-offset".to_owned(), offset.to_string())].into(),
            ..Default::default()
        }),
        offset,
        invalid: String::new(),
    }
}

fn commit(
    member: &str,
    held: &pb::HeldPartition,
    from: Option<i64>,
    records: Vec<pb::SourceRecord>,
    to: i64,
) -> pb::CommitPartitionRequest {
    pb::CommitPartitionRequest {
        group: GROUP.into(),
        member_id: member.into(),
        stream: held.stream.clone(),
        partition: held.partition,
        epoch: held.epoch,
        from_position: from,
        records,
        to_position: to,
    }
}

every_backend! {
    async fn a_commit_adds_its_jobs_and_moves_the_position_once() {
        let b = TestBroker::start().await;
        let mut broker = b.broker.clone();
        let held = claim(&mut broker, "a", 2).await;
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(held.iter().all(|h| h.epoch == 1 && h.position.is_none()), "{held:?}");
        let p0 = &held[0];
        // The first commit may start anywhere (the member's start offset).
        let first = broker
            .commit_partition(commit("a", p0, None, vec![record(5, "orders"), record(7, "orders")], 9))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.position, 9);
        assert_eq!(first.results.len(), 2);
        assert!(first.results.iter().all(|r| r.code == 0 && !r.job_id.is_empty()));
        // The same commit again (a retry after a lost answer) is stale.
        let again = broker
            .commit_partition(commit("a", p0, None, vec![record(5, "orders")], 6))
            .await;
        assert_eq!(code(again), Code::FailedPrecondition);
        let next = broker
            .commit_partition(commit("a", p0, Some(9), vec![record(9, "orders")], 10))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(next.position, 10);
        let mut admin = b.admin.clone();
        let jobs = all_jobs(&mut admin, "orders").await;
        let mut offsets: Vec<String> = jobs.iter().map(|j| j.headers["kafka-offset"].clone()).collect();
        offsets.sort();
        assert_eq!(offsets, ["5", "7", "9"]);
        let listed = admin
            .list_source_partitions(pb::ListSourcePartitionsRequest { group: GROUP.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.members, ["a"]);
        let p0_state = listed.partitions.iter().find(|p| p.partition == 0).unwrap();
        assert_eq!((p0_state.holder.as_str(), p0_state.epoch, p0_state.position), ("a", 1, Some(10)));
        // A claim again keeps the epoch and the position.
        let renewed = claim(&mut broker, "a", 2).await;
        assert_eq!((renewed[0].epoch, renewed[0].position), (1, Some(10)));
        // Bad requests name their field.
        let backwards = broker
            .commit_partition(commit("a", p0, Some(10), vec![record(12, "orders"), record(11, "orders")], 13))
            .await;
        assert!(backwards.unwrap_err().message().starts_with("records:"));
        let two_queues = broker
            .commit_partition(commit("a", p0, Some(10), vec![record(10, "orders"), record(11, "other")], 12))
            .await;
        assert!(two_queues.unwrap_err().message().starts_with("records.job.queue:"));
        let negative = broker
            .commit_partition(commit("a", p0, Some(-5), vec![], 0))
            .await;
        assert!(negative.unwrap_err().message().starts_with("from_position:"));
        let bad_group = broker
            .claim_partitions(pb::ClaimPartitionsRequest { group: "no spaces".into(), member_id: "a".into(), ..Default::default() })
            .await;
        assert!(bad_group.unwrap_err().message().starts_with("group:"));
    }
}

every_backend! {
    async fn members_share_partitions_and_a_moved_partition_fences_its_old_holder() {
        let b = TestBroker::start().await;
        let mut broker = b.broker.clone();
        let held_a = claim(&mut broker, "a", 4).await;
        assert_eq!(held_a.len(), 4);
        for h in &held_a {
            broker
                .commit_partition(commit("a", h, None, vec![record(0, "orders")], 1))
                .await
                .unwrap();
        }
        // b joins: a still holds everything, so b gets nothing yet.
        assert!(claim(&mut broker, "b", 4).await.is_empty());
        // a's next claim gives up b's share (every other partition).
        let kept = claim(&mut broker, "a", 4).await;
        assert_eq!(kept.len(), 2, "{kept:?}");
        let taken = claim(&mut broker, "b", 4).await;
        assert_eq!(taken.len(), 2, "{taken:?}");
        assert!(taken.iter().all(|h| h.epoch == 2 && h.position == Some(1)), "{taken:?}");
        // a's late commit on a partition b took is refused: nothing added.
        let gone = held_a.iter().find(|h| h.partition == taken[0].partition).unwrap();
        let late = broker
            .commit_partition(commit("a", gone, Some(1), vec![record(1, "orders")], 2))
            .await;
        assert_eq!(code(late), Code::FailedPrecondition);
        broker
            .commit_partition(commit("b", &taken[0], Some(1), vec![record(1, "orders")], 2))
            .await
            .unwrap();
        let mut admin = b.admin.clone();
        assert_eq!(all_jobs(&mut admin, "orders").await.len(), 5);
        // a leaves: b takes a's partitions at its next claim.
        let left = broker
            .leave_source_group(pb::LeaveSourceGroupRequest { group: GROUP.into(), member_id: "a".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(left.released, 2);
        assert_eq!(claim(&mut broker, "b", 4).await.len(), 4);
    }
}

every_backend! {
    async fn records_that_cannot_be_jobs_are_kept_as_dead_letters_in_order() {
        let b = TestBroker::start().await;
        let mut broker = b.broker.clone();
        let held = claim(&mut broker, "a", 1).await;
        let mut marked = record(1, "orders");
        marked.invalid = "header sluice-type is missing".into();
        let mut bad_header = record(2, "orders");
        bad_header.job.as_mut().unwrap().headers.insert("bell".into(), "\u{7}".into());
        let mut bad_type = record(3, "orders");
        bad_type.job.as_mut().unwrap().job_type = String::new();
        let answer = broker
            .commit_partition(commit("a", &held[0], None, vec![record(0, "orders"), marked, bad_header, bad_type, record(4, "orders")], 5))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((answer.position, answer.dead_lettered, answer.results.len()), (5, 3, 5));
        let mut admin = b.admin.clone();
        let jobs = all_jobs(&mut admin, "orders").await;
        let dead: Vec<&pb::Job> = jobs.iter().filter(|j| j.state() == pb::JobState::Dead).collect();
        assert_eq!(dead.len(), 3);
        let reasons: Vec<&str> = dead.iter().map(|j| j.last_error.as_str()).collect();
        assert!(reasons.contains(&"header sluice-type is missing"), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.starts_with("headers:")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.starts_with("job_type:")), "{reasons:?}");
        assert!(dead.iter().any(|j| j.job_type == sluice_broker::service::INVALID_JOB_TYPE));
        assert!(dead.iter().all(|j| j.attempt == 0 && j.headers.contains_key("kafka-offset")));
        assert_eq!(jobs.iter().filter(|j| j.state() == pb::JobState::Ready).count(), 2);
    }
}

every_backend! {
    async fn a_full_queue_takes_the_records_before_the_refusal_and_holds_the_rest() {
        let mut config = test_config();
        config.queue.max_queue_size = Some(2);
        let b = TestBroker::with_config(config).await;
        let mut broker = b.broker.clone();
        let held = claim(&mut broker, "a", 1).await;
        let records = (0..4).map(|o| record(o, "orders")).collect();
        let answer = broker
            .commit_partition(commit("a", &held[0], None, records, 4))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.position, 2, "{answer:?}");
        assert_eq!(answer.results.len(), 3);
        assert_eq!(answer.results[2].code, Code::ResourceExhausted as i32, "{answer:?}");
        let mut admin = b.admin.clone();
        assert_eq!(all_jobs(&mut admin, "orders").await.len(), 2);
    }
}

every_backend! {
    async fn an_admin_moves_a_position_and_fences_its_holder() {
        let b = TestBroker::start().await;
        let mut broker = b.broker.clone();
        let held = claim(&mut broker, "a", 1).await;
        broker
            .commit_partition(commit("a", &held[0], None, vec![record(0, "orders")], 1))
            .await
            .unwrap();
        let mut admin = b.admin.clone();
        let set = admin
            .set_source_positions(pb::SetSourcePositionsRequest {
                group: GROUP.into(),
                positions: vec![pb::SourcePosition { stream: "orders".into(), partition: 0, position: Some(0) }],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((set.partitions[0].epoch, set.partitions[0].position), (2, Some(0)));
        let stale = broker
            .commit_partition(commit("a", &held[0], Some(1), vec![record(1, "orders")], 2))
            .await;
        assert_eq!(code(stale), Code::FailedPrecondition);
        let again = claim(&mut broker, "a", 1).await;
        assert_eq!((again[0].epoch, again[0].position), (3, Some(0)));
        // The replay enqueues offset 0 again: a reset repeats what it covers.
        broker
            .commit_partition(commit("a", &again[0], Some(0), vec![record(0, "orders")], 1))
            .await
            .unwrap();
        assert_eq!(all_jobs(&mut admin, "orders").await.len(), 2);
    }
}
