//! A TCP proxy on 127.0.0.1 in front of a broker, that a test can cut: it
//! drops every open connection and refuses new ones for a while, as a
//! network partition or a restarting load balancer does, while the broker
//! itself stays up; or freeze the open connections: nothing passes any
//! more, and nothing is closed either, as when a host vanishes or a NAT
//! forgets a mapping (only keepalive tells). Runs on the test's tokio runtime, which must have
//! worker threads of its own (`flavor = "multi_thread"`) if the test also
//! blocks its thread.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The proxy; stops (with every connection) on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    /// The copy tasks of open connections, aborted by a cut.
    connections: Vec<AbortHandle>,
    /// New connections are closed at once until then.
    refuse_until: Option<Instant>,
    /// Cancelled to freeze the connections open now; new ones get a new one.
    freeze: CancellationToken,
}

impl Proxy {
    /// A proxy to `target` on a free loopback port.
    pub async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let target = target.to_owned();
        let accept = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let refused = state
                        .lock()
                        .unwrap()
                        .refuse_until
                        .is_some_and(|until| Instant::now() < until);
                    if refused {
                        continue; // dropping it closes it
                    }
                    let target = target.clone();
                    let frozen = state.lock().unwrap().freeze.clone();
                    let copy = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&target).await {
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                () = frozen.cancelled() => {
                                    // Hold both sockets open, passing nothing,
                                    // until a cut or the proxy's drop.
                                    std::future::pending::<()>().await;
                                }
                            }
                        }
                    });
                    let mut state = state.lock().unwrap();
                    state.connections.retain(|c| !c.is_finished());
                    state.connections.push(copy.abort_handle());
                }
            })
        };
        Self {
            addr,
            state,
            accept,
        }
    }

    /// The proxy's URL, for a worker or client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Freezes every open connection (see the module doc); new ones pass.
    pub fn freeze(&self) {
        let mut state = self.state.lock().unwrap();
        state.freeze.cancel();
        state.freeze = CancellationToken::new();
    }

    /// Drops every open connection, and refuses new ones for `refuse`.
    pub fn cut(&self, refuse: Duration) {
        let mut state = self.state.lock().unwrap();
        state.refuse_until = Some(Instant::now() + refuse);
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut(Duration::ZERO);
    }
}
