//! What a connection and a call must do before the broker works for them,
//! against the real binary: the credential is checked before a request
//! body is read (an unauthenticated call that declares 4 MiB is refused
//! at once, and a thousand of them hold no memory), a request must arrive
//! within `--request-timeout`, a connection's receiving calls are capped,
//! idle and silent sockets are closed on both listeners while TLS clients
//! are served, slowloris clients of the HTTP listener are cut off, and the
//! connection caps close the newest connection.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use sluice_e2e::tls::{self, Ca};
use sluice_e2e::{BrokerProcess, WAIT, scratch_dir};
use sluice_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ADMIN: &str = "admin-token-0123456789";
const ENQUEUE: &str = "/sluice.v1.Broker/Enqueue";
/// The documented first-byte and preface timeouts (`crate::listener`).
const SILENT: Duration = Duration::from_secs(5);
/// The HTTP listener's documented header-read timeout.
const HEADER_READ: Duration = Duration::from_secs(10);
/// Room for a loaded machine's scheduling on top of a documented timeout.
const SLACK: Duration = Duration::from_secs(3);

fn tokens(dir: &std::path::Path) -> String {
    let path = dir.join("tokens");
    std::fs::write(&path, format!("admin {ADMIN}\n")).unwrap();
    path.display().to_string()
}

/// A gRPC length prefix declaring `declared` bytes, then `sent` zero bytes.
fn partial_message(declared: u32, sent: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + sent);
    buf.put_u8(0);
    buf.put_u32(declared);
    buf.put_bytes(0, sent);
    buf.freeze()
}

/// A raw HTTP/2 connection to `addr`.
async fn h2_connect(addr: &str) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    sender.ready().await.unwrap()
}

/// Starts a call to `path` with `token` (if any), sends `body` without
/// ending the stream, and returns the response's gRPC status code and the
/// stream to keep it open.
async fn open_call(
    sender: &mut SendRequest<Bytes>,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://broker{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    *sender = sender.clone().ready().await.unwrap();
    let (response, mut stream) = sender
        .send_request(request.body(()).unwrap(), false)
        .unwrap();
    stream.reserve_capacity(body.len());
    stream.send_data(body, false).unwrap();
    (response, stream)
}

/// The `grpc-status` of a response (trailers-only, or in the trailers).
async fn grpc_status(response: h2::client::ResponseFuture) -> i32 {
    let response = response.await.unwrap();
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().unwrap().parse().unwrap();
    }
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    let trailers = body.trailers().await.unwrap().unwrap();
    trailers["grpc-status"].to_str().unwrap().parse().unwrap()
}

/// The broker's resident memory, in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test]
async fn an_unauthenticated_call_is_refused_before_its_body_arrives() {
    let dir = scratch_dir("admission-early-refusal");
    let broker = BrokerProcess::start(&["--auth-tokens", &tokens(&dir)]);
    let mut sender = h2_connect(&broker.addr).await;
    // 4 MiB declared, 64 KiB sent, and the stream left open: the answer
    // cannot wait for the rest.
    let (response, _stream) = open_call(
        &mut sender,
        ENQUEUE,
        None,
        partial_message(4 << 20, 64 << 10),
    )
    .await;
    let status = tokio::time::timeout(WAIT, grpc_status(response))
        .await
        .expect("the refusal waited for the rest of the body");
    assert_eq!(status, tonic::Code::Unauthenticated as i32);
}

#[tokio::test]
async fn a_thousand_open_unauthenticated_calls_hold_no_memory() {
    let dir = scratch_dir("admission-rss");
    let broker =
        BrokerProcess::start(&["--auth-tokens", &tokens(&dir), "--max-payload", "4194304"]);
    // Warm up the allocator and the connection machinery first.
    let mut warm = h2_connect(&broker.addr).await;
    let (response, _s) = open_call(&mut warm, ENQUEUE, None, partial_message(16, 0)).await;
    grpc_status(response).await;
    let before = rss(broker.process.pid());

    let mut held = Vec::new();
    for _ in 0..4 {
        let mut sender = h2_connect(&broker.addr).await;
        for _ in 0..250 {
            let (response, stream) = open_call(
                &mut sender,
                ENQUEUE,
                None,
                partial_message(4 << 20, 16 << 10),
            )
            .await;
            held.push((response, stream));
        }
    }
    // Every call answered, and the requests still open on the client side.
    let mut streams = Vec::new();
    for (response, stream) in held {
        let status = tokio::time::timeout(WAIT, grpc_status(response))
            .await
            .unwrap();
        assert_eq!(status, tonic::Code::Unauthenticated as i32);
        streams.push(stream);
    }
    let after = rss(broker.process.pid());
    let grown = after.saturating_sub(before);
    println!("RSS {before} B before, {after} B with 1,000 calls open: {grown} B more");
    // Read into buffers, the calls' 4 MiB messages would be gigabytes.
    // Refused at their headers, what they sent is at most what HTTP/2
    // flow control lets in (8 MiB a connection) and is dropped as it comes.
    assert!(grown < 64 << 20, "RSS grew by {grown} B");
    drop(streams);
}

#[tokio::test]
async fn a_request_must_arrive_within_the_request_timeout() {
    let broker = BrokerProcess::start(&["--request-timeout", "1s"]);
    let mut sender = h2_connect(&broker.addr).await;
    let started = Instant::now();
    let (response, _stream) = open_call(&mut sender, ENQUEUE, None, partial_message(100, 10)).await;
    let status = tokio::time::timeout(WAIT, grpc_status(response))
        .await
        .unwrap();
    assert_eq!(status, tonic::Code::DeadlineExceeded as i32);
    assert!(started.elapsed() >= Duration::from_secs(1));
}

/// A Work session's first message is its request: a session that does not
/// open within the timeout ends as a unary call that does not arrive.
#[tokio::test]
async fn a_work_session_must_open_within_the_request_timeout() {
    let broker = BrokerProcess::start(&["--request-timeout", "1s"]);
    let mut client = broker.broker().await;
    let (open, requests) = tokio::sync::mpsc::channel::<pb::WorkRequest>(1);
    let started = Instant::now();
    let session = tokio::time::timeout(
        WAIT,
        client.work(tokio_stream::wrappers::ReceiverStream::new(requests)),
    )
    .await
    .unwrap();
    assert_eq!(
        session.map(|_| ()).unwrap_err().code(),
        tonic::Code::DeadlineExceeded
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    drop(open);
}

#[tokio::test]
async fn a_connection_receives_at_most_64_requests_at_once() {
    let timeout = Duration::from_secs(3);
    let broker = BrokerProcess::start(&["--request-timeout", "3s"]);
    let mut sender = h2_connect(&broker.addr).await;
    // 65 calls that never finish sending: 64 take every place, one waits,
    // and its time starts only when a place frees.
    let mut stalled = Vec::new();
    for _ in 0..65 {
        let (response, stream) =
            open_call(&mut sender, ENQUEUE, None, partial_message(100, 10)).await;
        stalled.push((Box::pin(grpc_status(response)), stream));
    }
    // Another connection is served meanwhile.
    let channel = tonic::transport::Channel::from_shared(broker.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    sluice_proto::v1::broker_client::BrokerClient::new(channel)
        .enqueue(sluice_e2e::job("t", b""))
        .await
        .unwrap();
    let mut answered = Vec::new();
    for (response, _stream) in &mut stalled {
        assert!(
            tokio::time::timeout(Duration::ZERO, response)
                .await
                .is_err(),
            "a stalled call was answered before the other connection's"
        );
    }
    let calls = stalled.into_iter().map(|(response, stream)| async move {
        let status = response.await;
        drop(stream);
        (status, Instant::now())
    });
    for handle in calls.map(tokio::spawn).collect::<Vec<_>>() {
        answered.push(tokio::time::timeout(WAIT, handle).await.unwrap().unwrap());
    }
    assert!(
        answered
            .iter()
            .all(|(status, _)| *status == tonic::Code::DeadlineExceeded as i32)
    );
    let mut times: Vec<Instant> = answered.iter().map(|(_, at)| *at).collect();
    times.sort();
    // The 65th got its place when the first of the others gave one up,
    // and then had its whole time: it ends a timeout after the first (had
    // its time started on arrival, it would end with the others). The
    // times are when this test saw each answer, so each may be late by a
    // scheduling delay: the bound leaves half a second for that.
    let waited = times[64].duration_since(times[0]);
    assert!(
        waited >= timeout - Duration::from_millis(500),
        "the 65th ended {waited:?} after the first"
    );
    assert!(times[63].duration_since(times[0]) < timeout);
}

/// Whether the server closed `socket` (EOF or reset) within `limit`.
async fn closed_within(socket: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // Server frames (an HTTP/2 SETTINGS, a TLS alert): read on.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn silent_sockets_are_closed_on_both_listeners_while_tls_clients_are_served() {
    let dir = scratch_dir("admission-silent");
    let ca = Ca::new("ca").unwrap();
    let server = ca.server().unwrap();
    let cert = tls::write(&dir, "server.pem", &server.cert);
    let key = tls::write(&dir, "server.key", &server.key);
    let broker = BrokerProcess::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--http-addr",
        "127.0.0.1:0",
        "--max-connections-per-ip",
        "5000",
    ]);
    let http = broker.process.http_addr();
    // More silent sockets than handshakes may run at once: before, each
    // took a handshake's place as it was accepted, and new clients waited.
    let mut silent = Vec::new();
    for _ in 0..1100 {
        silent.push(TcpStream::connect(&broker.addr).await.unwrap());
    }
    for _ in 0..20 {
        silent.push(TcpStream::connect(http).await.unwrap());
    }
    let opened = Instant::now();
    // A socket that starts a TLS handshake and stalls.
    let mut stalled = TcpStream::connect(&broker.addr).await.unwrap();
    stalled.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    // A new TLS client is served meanwhile.
    let served = tokio::time::timeout(SILENT, async {
        let channel = tls::channel(&broker.addr, tls::client_config(&ca.pem, None))
            .await
            .unwrap();
        sluice_proto::v1::admin_client::AdminClient::new(channel)
            .stats(pb::StatsRequest {})
            .await
            .unwrap();
    })
    .await;
    assert!(served.is_ok(), "a TLS client waited behind silent sockets");
    for (i, socket) in silent.iter_mut().enumerate() {
        let left = (SILENT + SLACK).saturating_sub(opened.elapsed());
        assert!(
            closed_within(socket, left).await,
            "silent socket {i} still open"
        );
    }
    // The stalled handshake ends with its handshake time (10 s).
    assert!(closed_within(&mut stalled, Duration::from_secs(10) + SLACK).await);
}

#[tokio::test]
async fn a_plaintext_connection_without_a_preface_in_time_is_closed() {
    let broker = BrokerProcess::start(&[]);
    let mut socket = TcpStream::connect(&broker.addr).await.unwrap();
    // Half the preface, then nothing.
    socket.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut socket, SILENT + SLACK).await);
    assert!(started.elapsed() >= SILENT - Duration::from_millis(100));
}

#[tokio::test]
async fn a_slowloris_client_of_the_http_listener_is_cut_off() {
    let broker = BrokerProcess::start(&["--http-addr", "127.0.0.1:0"]);
    let http = broker.process.http_addr();
    let mut slow = TcpStream::connect(http).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // One byte of a header every half second: never a whole request.
    let cut = async {
        for byte in b"X-Slow: ".iter().cycle() {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::time::timeout(HEADER_READ + SLACK, cut)
        .await
        .expect("the slow client was never cut off");
    let lasted = started.elapsed();
    assert!(lasted >= HEADER_READ - Duration::from_secs(1), "{lasted:?}");
    // A kept-alive connection left idle goes the same way.
    let mut idle = TcpStream::connect(http).await.unwrap();
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_within(&mut idle, HEADER_READ + SLACK).await);
}

/// A raw HTTP/2 handshake from `local` (an address of 127/8) to `addr`:
/// whether the broker kept the connection.
async fn connect_from(local: [u8; 4], addr: SocketAddr) -> Option<SendRequest<Bytes>> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((local, 0))).unwrap();
    let tcp = socket.connect(addr).await.ok()?;
    let (sender, connection) = tokio::time::timeout(WAIT, h2::client::handshake(tcp))
        .await
        .unwrap()
        .ok()?;
    tokio::spawn(connection);
    let mut sender = tokio::time::timeout(WAIT, sender.ready())
        .await
        .ok()?
        .ok()?;
    // A refused connection is closed at once: a call on it fails.
    let request = http::Request::builder()
        .method("POST")
        .uri("http://broker/grpc.health.v1.Health/Check")
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let (response, mut stream) = sender.send_request(request, false).ok()?;
    stream
        .send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .ok()?;
    tokio::time::timeout(WAIT, response).await.ok()?.ok()?;
    Some(sender)
}

#[tokio::test]
async fn the_connection_caps_close_the_newest_connection() {
    let broker = BrokerProcess::start(&["--max-connections", "4", "--max-connections-per-ip", "2"]);
    let addr: SocketAddr = broker.addr.parse().unwrap();
    let first = connect_from([127, 0, 0, 1], addr).await.expect("first");
    let _second = connect_from([127, 0, 0, 1], addr).await.expect("second");
    assert!(
        connect_from([127, 0, 0, 1], addr).await.is_none(),
        "a third from one address"
    );
    broker.wait_for_log("--max-connections-per-ip");
    let _third = connect_from([127, 0, 0, 2], addr)
        .await
        .expect("another address");
    let _fourth = connect_from([127, 0, 0, 3], addr)
        .await
        .expect("the fourth");
    assert!(
        connect_from([127, 0, 0, 4], addr).await.is_none(),
        "a fifth in all"
    );
    // A closed connection frees its place.
    drop(first);
    let reopened = async {
        loop {
            if connect_from([127, 0, 0, 1], addr).await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, reopened).await.unwrap();
}
