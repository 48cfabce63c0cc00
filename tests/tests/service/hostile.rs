//! Hostile inputs below the gRPC client: malformed requests sent as raw
//! HTTP/2 frames with `h2`, one connection per input. Each must end in an
//! error (a gRPC status, an HTTP status, or an HTTP/2 reset), never hang,
//! except the header-only oddities tonic serves as normal calls (see
//! [`Expect::Tolerated`]), and leave the broker whole: after each one a canary job goes through
//! Enqueue, Lease and Ack on the normal client, and the jobs enqueued
//! before the first input are all still there.
//!
//! The per-field limits of the README's "Limits and errors" table are
//! covered through the Rust client in `validation.rs` (and ListJobs'
//! `page_size` in `admin.rs`); this file does not repeat them.
//!
//! `cargo test -p sluice-e2e --test service hostile -- --nocapture` prints
//! the table of inputs and outcomes.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use sluice_e2e::in_process::*;
use sluice_proto::v1 as pb;

/// Longest one hostile exchange may take: an answer or a reset, never a hang.
const EXCHANGE: Duration = Duration::from_secs(5);

/// The broker's `--max-payload` in this test; a request message may be
/// 512 KiB more.
const MAX_PAYLOAD: usize = 1024;

/// Jobs enqueued before the first hostile input, checked after each.
const KEPT_JOBS: usize = 20;

/// One malformed request.
struct Input {
    name: &'static str,
    path: &'static str,
    /// Headers besides the pseudo-headers; `None` leaves one out.
    content_type: Option<&'static str>,
    te_trailers: bool,
    extra_headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Ends the stream after the body; false leaves it open, so the
    /// broker must answer without waiting for more.
    end_stream: bool,
    expect: Expect,
}

/// What an input must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// A gRPC status other than OK, or an HTTP/2 error.
    Refused,
    /// This gRPC status exactly.
    Status(tonic::Code),
    /// Served as a normal call (OK). tonic routes on the path and decodes
    /// the body whatever the `content-type` and `te` headers say; the gRPC
    /// spec says a server SHOULD answer 415 to a content-type that is not
    /// `application/grpc*`, and grpc-go tolerates a missing `te` too. The
    /// body is a well-formed Enqueue, so nothing malformed gets further
    /// than it would with the right headers. Pinned, so a change shows.
    Tolerated,
}

/// What the broker did.
#[derive(Debug)]
enum Outcome {
    /// A gRPC status from the headers (trailers-only) or the trailers.
    Grpc(tonic::Code, String),
    /// An HTTP status with no gRPC status.
    Http(u16),
    /// The stream or connection was reset or failed.
    H2(String),
}

impl Outcome {
    fn is_error(&self) -> bool {
        !matches!(self, Outcome::Grpc(tonic::Code::Ok, _))
    }

    fn show(&self) -> String {
        match self {
            Outcome::Grpc(code, msg) => {
                let msg: String = percent_decode(msg).chars().take(70).collect();
                format!("grpc-status {} {code:?}: {msg}", *code as i32)
            }
            Outcome::Http(status) => format!("HTTP {status}, no grpc-status"),
            Outcome::H2(e) => format!("HTTP/2 error: {e}"),
        }
    }
}

/// `grpc-message` is percent-encoded on the wire.
fn percent_decode(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        let hex = || -> Option<u8> {
            let pair = [bytes.clone().next()?, bytes.clone().nth(1)?];
            u8::from_str_radix(std::str::from_utf8(&pair).ok()?, 16).ok()
        };
        match (b, hex()) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                bytes.nth(1);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A length-prefixed gRPC message frame.
fn frame(compressed: bool, declared: u32, message: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_u8(u8::from(compressed));
    buf.put_u32(declared);
    buf.put_slice(message);
    buf.to_vec()
}

/// A valid Enqueue message, encoded.
fn enqueue_bytes() -> Vec<u8> {
    sluice_e2e::job("hostile", b"payload").encode_to_vec()
}

fn valid_frame() -> Vec<u8> {
    let msg = enqueue_bytes();
    frame(false, msg.len() as u32, &msg)
}

const ENQUEUE: &str = "/sluice.v1.Broker/Enqueue";

fn input(name: &'static str, body: Vec<u8>) -> Input {
    Input {
        name,
        path: ENQUEUE,
        content_type: Some("application/grpc"),
        te_trailers: true,
        extra_headers: Vec::new(),
        body,
        end_stream: true,
        expect: Expect::Refused,
    }
}

fn inputs() -> Vec<Input> {
    let msg = enqueue_bytes();
    let max_message = MAX_PAYLOAD + 512 * 1024;
    vec![
        Input {
            content_type: Some("application/json"),
            expect: Expect::Tolerated,
            ..input("wrong content-type (application/json)", valid_frame())
        },
        Input {
            content_type: None,
            expect: Expect::Tolerated,
            ..input("no content-type", valid_frame())
        },
        Input {
            te_trailers: false,
            expect: Expect::Tolerated,
            ..input("missing te: trailers", valid_frame())
        },
        Input {
            expect: Expect::Status(tonic::Code::Internal),
            ..input("truncated length prefix (3 of 5 bytes)", vec![0, 0, 0])
        },
        Input {
            expect: Expect::Status(tonic::Code::Internal),
            ..input(
                "declared 100 bytes, sent 10, end of stream",
                frame(false, 100, &[0; 10]),
            )
        },
        Input {
            expect: Expect::Status(tonic::Code::Internal),
            ..input(
                "compressed flag without grpc-encoding",
                frame(true, msg.len() as u32, &msg),
            )
        },
        Input {
            expect: Expect::Status(tonic::Code::Internal),
            ..input(
                "message 3 bytes longer than declared",
                [valid_frame(), vec![0, 0, 1]].concat(),
            )
        },
        Input {
            expect: Expect::Status(tonic::Code::Internal),
            ..input(
                "invalid protobuf (wire type 7)",
                frame(false, 8, &[0xff; 8]),
            )
        },
        Input {
            expect: Expect::Status(tonic::Code::Internal),
            ..input(
                "protobuf length running past the message",
                frame(false, 3, &[0x12, 0x7f, b'x']),
            )
        },
        Input {
            path: "/sluice.v1.Broker/NoSuchMethod",
            expect: Expect::Status(tonic::Code::Unimplemented),
            ..input("unknown method", valid_frame())
        },
        Input {
            path: "/no.such.Service/Enqueue",
            expect: Expect::Status(tonic::Code::Unimplemented),
            ..input("unknown service", valid_frame())
        },
        Input {
            extra_headers: (0..64)
                .map(|i| (format!("x-hostile-{i}"), "v".repeat(1024)))
                .collect(),
            ..input("oversized header list (64 x 1 KiB)", valid_frame())
        },
        Input {
            end_stream: false,
            expect: Expect::Status(tonic::Code::OutOfRange),
            ..input(
                "declared length above the max message, stream left open",
                frame(false, (max_message + 1) as u32, &[0; 16]),
            )
        },
        Input {
            expect: Expect::Status(tonic::Code::OutOfRange),
            ..input("declared length u32::MAX", frame(false, u32::MAX, &[0; 16]))
        },
        Input {
            expect: Expect::Status(tonic::Code::Internal),
            ..input("empty body", Vec::new())
        },
    ]
}

/// Sends `input` on a connection of its own and reads what comes back.
async fn exchange(addr: SocketAddr, input: &Input) -> Outcome {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = match h2::client::handshake(tcp).await {
        Ok(pair) => pair,
        Err(e) => return Outcome::H2(format!("handshake: {e}")),
    };
    // The connection's driver; it ends with the connection.
    let driver = tokio::spawn(connection);
    let outcome = send(client, input).await;
    driver.abort();
    outcome
}

async fn send(client: h2::client::SendRequest<Bytes>, input: &Input) -> Outcome {
    let mut client = match client.ready().await {
        Ok(c) => c,
        Err(e) => return Outcome::H2(e.to_string()),
    };
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://sluice{}", input.path));
    if let Some(ct) = input.content_type {
        request = request.header("content-type", ct);
    }
    if input.te_trailers {
        request = request.header("te", "trailers");
    }
    for (name, value) in &input.extra_headers {
        request = request.header(name, value);
    }
    let request = request.body(()).unwrap();
    let (response, mut body_tx) = match client.send_request(request, false) {
        Ok(pair) => pair,
        Err(e) => return Outcome::H2(e.to_string()),
    };
    body_tx.reserve_capacity(input.body.len());
    if let Err(e) = body_tx.send_data(Bytes::from(input.body.clone()), input.end_stream) {
        return Outcome::H2(format!("sending: {e}"));
    }
    let response = match response.await {
        Ok(r) => r,
        Err(e) => return Outcome::H2(e.to_string()),
    };
    let grpc = |headers: &http::HeaderMap| {
        let code = headers
            .get("grpc-status")?
            .to_str()
            .ok()?
            .parse::<i32>()
            .ok()?;
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or_default();
        Some(Outcome::Grpc(
            tonic::Code::from_i32(code),
            message.to_owned(),
        ))
    };
    if let Some(outcome) = grpc(response.headers()) {
        return outcome;
    }
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(bytes) => {
                let _ = body.flow_control().release_capacity(bytes.len());
            }
            Err(e) => return Outcome::H2(e.to_string()),
        }
    }
    match body.trailers().await {
        Ok(Some(trailers)) => grpc(&trailers).unwrap_or(Outcome::Http(status)),
        Ok(None) => Outcome::Http(status),
        Err(e) => Outcome::H2(e.to_string()),
    }
}

/// A job goes through Enqueue, Lease and Ack on the normal client.
async fn canary(b: &TestBroker, after: &str) {
    let id = b
        .enqueue_req(pb::EnqueueRequest {
            queue: "canary".into(),
            ..sluice_e2e::job("canary", b"")
        })
        .await;
    let mut stream = b
        .lease_req(pb::LeaseRequest {
            worker_id: "canary".into(),
            queues: vec!["canary".into()],
            max_in_flight: 1,
            ..Default::default()
        })
        .await;
    let leased = next_job(&mut stream).await;
    assert_eq!(job_id(&leased), id, "the canary after {after:?}");
    b.ack(&leased)
        .await
        .unwrap_or_else(|e| panic!("the canary's Ack after {after:?}: {e:?}"));
}

/// The jobs enqueued at the start are all there and READY.
async fn assert_kept(b: &TestBroker, kept: &[String], after: &str) {
    let list = b
        .admin
        .clone()
        .list_jobs(pb::ListJobsRequest {
            queue: "kept".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut listed: Vec<&str> = list
        .jobs
        .iter()
        .filter(|j| j.state() == pb::JobState::Ready)
        .map(|j| j.id.as_str())
        .collect();
    listed.sort_unstable();
    let mut want: Vec<&str> = kept.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(listed, want, "jobs lost after {after:?}");
}

every_backend! {
    async fn malformed_grpc_frames_are_refused_and_the_broker_keeps_every_job() {
        let mut config = test_config();
        config.max_payload = MAX_PAYLOAD;
        let b = TestBroker::with_config(config).await;
        let mut kept = Vec::new();
        for _ in 0..KEPT_JOBS {
            kept.push(
                b.enqueue_req(pb::EnqueueRequest {
                    queue: "kept".into(),
                    ..sluice_e2e::job("kept", b"keep me")
                })
                .await,
            );
        }
        canary(&b, "nothing").await;

        let mut table = Vec::new();
        let mut failures = Vec::new();
        for input in inputs() {
            let outcome = tokio::time::timeout(EXCHANGE, exchange(b.addr, &input))
                .await
                .unwrap_or_else(|_| panic!("{:?} hung: no answer in {EXCHANGE:?}", input.name));
            let ok = match (input.expect, &outcome) {
                (Expect::Refused, outcome) => outcome.is_error(),
                (Expect::Status(want), Outcome::Grpc(code, _)) => *code == want,
                (Expect::Status(_), _) => false,
                (Expect::Tolerated, outcome) => matches!(outcome, Outcome::Grpc(tonic::Code::Ok, _)),
            };
            if !ok {
                failures.push(format!(
                    "{}: expected {:?}, got {outcome:?}",
                    input.name, input.expect
                ));
            }
            let expected = match input.expect {
                Expect::Refused => "error".to_owned(),
                Expect::Status(code) => format!("{code:?}"),
                Expect::Tolerated => "tolerated".to_owned(),
            };
            table.push((input.name, expected, outcome.show()));
            canary(&b, input.name).await;
            assert_kept(&b, &kept, input.name).await;
        }

        println!("\n{:<58} | {:<13} | outcome", "hostile input", "expected");
        println!("{:-<58}-+-{:-<13}-+-{:-<60}", "", "", "");
        for (name, expected, outcome) in &table {
            println!("{name:<58} | {expected:<13} | {outcome}");
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
