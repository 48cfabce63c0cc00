//! What operators rely on: health, reflection (v1 and v1alpha), and the
//! drain that shutdown starts.

#![allow(clippy::unwrap_used)]

use std::time::SystemTime;

use sluice_e2e::in_process::*;
use sluice_proto::v1 as pb;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn health(b: &TestBroker, service: &str) -> ServingStatus {
    let req = HealthCheckRequest {
        service: service.into(),
    };
    HealthClient::new(b.channel.clone())
        .check(req)
        .await
        .unwrap()
        .into_inner()
        .status()
}

every_backend! {
    async fn health_is_serving_for_the_server_and_the_broker() {
        let b = TestBroker::start().await;
        assert_eq!(health(&b, "").await, ServingStatus::Serving);
        assert_eq!(health(&b, "sluice.v1.Broker").await, ServingStatus::Serving);
    }
}

every_backend! {
    async fn reflection_v1_and_v1alpha_list_the_services() {
        use tonic_reflection::pb::{v1, v1alpha};
        let b = TestBroker::start().await;

        let req = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut client = v1::server_reflection_client::ServerReflectionClient::new(b.channel.clone());
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            responses.next().await.unwrap().unwrap().message_response
        else {
            panic!("not a service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for want in [
            "sluice.v1.Broker",
            "sluice.v1.Admin",
            "grpc.health.v1.Health",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }

        let req = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "sluice.v1.Broker".into(),
                ),
            ),
        };
        let mut client =
            v1alpha::server_reflection_client::ServerReflectionClient::new(b.channel.clone());
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.next().await.unwrap().unwrap().message_response;
        assert!(
            matches!(response, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
            "{response:?}"
        );
    }
}

every_backend! {
    async fn shutdown_drains_leased_jobs_before_stopping() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        let waiting = b.enqueue("t").await;
        let mut stream = b.lease("w1", 1).await;
        let leased = next_job(&mut stream).await;

        b.begin_shutdown();
        // The stream ends, and no new work is taken.
        assert_stream_ends(&mut stream).await;
        eventually("health to turn NOT_SERVING", || async {
            health(&b, "").await == ServingStatus::NotServing
        })
        .await;
        assert_eq!(
            health(&b, "sluice.v1.Broker").await,
            ServingStatus::NotServing
        );
        let enqueue = pb::EnqueueRequest {
            job_type: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            code(b.broker.clone().enqueue(enqueue).await),
            Code::Unavailable
        );
        let lease = pb::LeaseRequest {
            worker_id: "late".into(),
            max_in_flight: 1,
            ..Default::default()
        };
        assert_eq!(code(b.broker.clone().lease(lease).await), Code::Unavailable);
        assert_eq!(b.state(&waiting).await, pb::JobState::Ready);
        // A new connection can still resolve the lease; that ends the drain.
        let fresh = pb::AckRequest {
            job_id: id.clone(),
            lease_id: leased.lease_id.clone(),
            ..Default::default()
        };
        sluice_proto::v1::broker_client::BrokerClient::new(connect(b.addr).await)
            .ack(fresh)
            .await
            .unwrap();

        let report = b.stopped().await;
        assert_eq!((report.still_leased, report.unfinished), (0, 1));
    }
}

every_backend! {
    async fn nack_extend_and_release_are_served_during_a_drain_like_ack() {
        let b = TestBroker::start().await;
        for _ in 0..3 {
            b.enqueue("t").await;
        }
        let mut stream = b.lease("w1", 3).await;
        let nacked = next_job(&mut stream).await;
        let extended = next_job(&mut stream).await;
        let released = next_job(&mut stream).await;

        b.begin_shutdown();
        eventually("health to turn NOT_SERVING", || async {
            health(&b, "").await == ServingStatus::NotServing
        })
        .await;
        let mut broker = b.broker.clone();
        let r = b.nack(&nacked, "failed while draining").await.unwrap();
        assert_eq!(r.state(), pb::JobState::Scheduled);
        let extend = pb::ExtendRequest {
            job_id: job_id(&extended).into(),
            lease_id: extended.lease_id.clone(),
            extend_by: None,
        };
        let r = broker.extend(extend).await.unwrap().into_inner();
        let expiry = |t: Option<prost_types::Timestamp>| SystemTime::try_from(t.unwrap()).unwrap();
        assert!(
            expiry(r.lease_expires_at) > expiry(extended.lease_expires_at),
            "{r:?}"
        );
        let release = pb::ReleaseRequest {
            key_delay: None,
            job_id: job_id(&released).into(),
            lease_id: released.lease_id.clone(),
            delay: None,
        };
        let r = broker.release(release).await.unwrap().into_inner();
        assert_eq!(r.state(), pb::JobState::Ready);
        // The extended job is the last one leased: its Ack ends the drain.
        assert_eq!(b.queue_stats("default").await.leased, 1);
        b.ack(&extended).await.unwrap();

        let report = b.stopped().await;
        assert_eq!((report.still_leased, report.unfinished), (0, 2));
    }
}
