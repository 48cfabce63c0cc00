//! A small HTTP/1.1 client: of the broker's JSON API (`/api/v1/`) and its
//! dashboard files ([`Api`]), and of chromedriver (`browser.rs`). hyper,
//! one connection per request, bounded by [`WAIT`]. Answers keep their
//! status, headers and body; JSON bodies parse with [`Reply::json`].

use std::net::SocketAddr;

use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::WAIT;

/// What the server answered.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; fails the test if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The gRPC code name of a refusal's JSON body.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// The JSON API of the broker whose `--http-addr` is `addr`, called with
/// `token` (as `Authorization: Bearer`) when there is one.
#[derive(Debug, Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

impl Api {
    /// Without a token.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, token: None }
    }

    /// The same API with `token`.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            addr: self.addr,
            token: Some(token.to_owned()),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[]).await
    }

    /// `POST path` with no body.
    pub async fn post(&self, path: &str) -> Reply {
        self.send(Method::POST, path, &[]).await
    }

    /// `GET path`, which must answer 200 with JSON.
    pub async fn get_ok(&self, path: &str) -> Value {
        let reply = self.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {path}: {}", reply.json());
        reply.json()
    }

    /// `POST path`, which must answer 200 with JSON.
    pub async fn post_ok(&self, path: &str) -> Value {
        let reply = self.post(path).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "POST {path}: {}",
            reply.json()
        );
        reply.json()
    }

    /// `method path` with `headers` (the Host header is the address unless
    /// given), and the token if any.
    pub async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut all: Vec<(&str, String)> =
            headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect();
        if let Some(token) = &self.token {
            all.push(("authorization", format!("Bearer {token}")));
        }
        request(self.addr, method, path, &all, None).await
    }
}

/// `method path` to `addr` with `headers` (Host is `addr` unless given) and
/// `body` as JSON if any; bounded by [`WAIT`].
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Option<&Value>,
) -> Reply {
    let send = async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder().method(method.clone()).uri(path);
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            request = request.header("host", addr.to_string());
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(json).unwrap())
            }
            None => Bytes::new(),
        };
        let response = sender
            .send_request(request.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    };
    tokio::time::timeout(WAIT, send)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} took longer than {WAIT:?}"))
}
