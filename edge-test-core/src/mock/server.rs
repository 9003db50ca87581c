//! The HTTP servers behind mock backends: one loopback port per declared backend, all
//! served from the test's own process on a runtime of their own (so that blocking tests,
//! and tests that await the guest, never starve them).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};

use super::mounted::MockSet;
use super::reply::Fault;
use super::verification::{MockFailure, Seen, UnmetExpectations, UnmetOnBackend};
use super::{Mock, Reply, Responder};
use crate::backend_request::BackendRequest;
use crate::error::EdgeError;

/// The state every backend of one test shares with the test.
#[derive(Default)]
struct MockState {
    backends: BTreeMap<String, BackendState>,
    /// Every request any backend received, in arrival order.
    received: Vec<BackendRequest>,
    /// Problems found while serving (no matching mock, a panicking responder), reported by
    /// the test after the invocation that caused them.
    failures: Vec<MockFailure>,
    /// The invocation now running, stamped on each request received.
    invocation: usize,
}

#[derive(Default)]
struct BackendState {
    mocks: MockSet,
}

/// A test's mock servers, one per backend the service declares.
pub(crate) struct MockHub {
    state: Arc<Mutex<MockState>>,
    addrs: BTreeMap<String, SocketAddr>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// One backend of the service under test, served by the test's mocks.
///
/// Get it from [`Edge::backend`](crate::Edge::backend), mount mocks on it, and read what it
/// received.
#[derive(Clone)]
pub struct MockBackend {
    name: String,
    state: Arc<Mutex<MockState>>,
}

fn lock(state: &Mutex<MockState>) -> MutexGuard<'_, MockState> {
    // A panicking responder is caught, so poisoning only follows a bug of ours; the data
    // is still consistent enough to report from.
    crate::sync::lock(state)
}

impl MockHub {
    pub(crate) fn start(backends: &[String]) -> Result<Self, EdgeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("edge-test mocks")
            .enable_all()
            .build()
            .map_err(|e| EdgeError::io("cannot start the mock servers' runtime", e))?;
        let state = Arc::new(Mutex::new(MockState::default()));
        let mut addrs = BTreeMap::new();
        for name in backends {
            lock(&state)
                .backends
                .insert(name.clone(), BackendState::default());
            let listener = TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|e| {
                    EdgeError::io(
                        format!("cannot bind a loopback port for backend `{name}`"),
                        e,
                    )
                })?;
            let addr = listener.local_addr().map_err(|e| {
                EdgeError::io(format!("cannot read the address of backend `{name}`"), e)
            })?;
            let server = {
                let _enter = runtime.enter();
                hyper::Server::from_tcp(listener).map_err(|e| {
                    EdgeError::io(
                        format!("cannot serve backend `{name}`"),
                        std::io::Error::other(e),
                    )
                })?
            };
            let (state, backend) = (state.clone(), name.clone());
            let service = hyper::service::make_service_fn(move |_conn| {
                let (state, backend) = (state.clone(), backend.clone());
                async move {
                    Ok::<_, Infallible>(hyper::service::service_fn(move |req| {
                        serve(state.clone(), backend.clone(), req)
                    }))
                }
            });
            runtime.spawn(server.serve(service));
            addrs.insert(name.clone(), addr);
        }
        Ok(Self {
            state,
            addrs,
            runtime: Some(runtime),
        })
    }

    pub(crate) fn addrs(&self) -> &BTreeMap<String, SocketAddr> {
        &self.addrs
    }

    pub(crate) fn backend(&self, name: &str) -> Option<MockBackend> {
        lock(&self.state)
            .backends
            .contains_key(name)
            .then(|| MockBackend {
                name: name.to_owned(),
                state: self.state.clone(),
            })
    }

    pub(crate) fn backend_names(&self) -> Vec<String> {
        self.addrs.keys().cloned().collect()
    }

    pub(crate) fn begin_invocation(&self, invocation: usize) {
        lock(&self.state).invocation = invocation;
    }

    /// The requests received during `invocation`, in arrival order.
    pub(crate) fn calls_of(&self, invocation: usize) -> Vec<BackendRequest> {
        lock(&self.state)
            .received
            .iter()
            .filter(|r| r.invocation == invocation)
            .cloned()
            .collect()
    }

    pub(crate) fn take_failures(&self) -> Vec<MockFailure> {
        std::mem::take(&mut lock(&self.state).failures)
    }

    /// Every expectation that was not met, with what each backend received.
    pub(crate) fn unmet_expectations(&self) -> Option<UnmetExpectations> {
        let state = lock(&self.state);
        let backends: Vec<UnmetOnBackend> = state
            .backends
            .iter()
            .filter_map(|(name, backend)| {
                let unmet = backend.mocks.unmet();
                (!unmet.is_empty()).then(|| UnmetOnBackend {
                    backend: name.clone(),
                    unmet,
                    received: state
                        .received
                        .iter()
                        .filter(|r| r.backend == *name)
                        .map(seen)
                        .collect(),
                })
            })
            .collect();
        (!backends.is_empty()).then_some(UnmetExpectations { backends })
    }
}

fn seen(request: &BackendRequest) -> Seen {
    Seen {
        summary: request.summary(),
        invocation: request.invocation,
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        // Hanging mocks would keep a blocking shutdown waiting forever.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl MockBackend {
    /// The backend's name, as declared in `fastly.toml`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every request this backend received so far, in arrival order.
    pub fn received(&self) -> Vec<BackendRequest> {
        lock(&self.state)
            .received
            .iter()
            .filter(|r| r.backend == self.name)
            .cloned()
            .collect()
    }

    pub(crate) fn mount(&self, mock: Mock) {
        if let Some(backend) = lock(&self.state).backends.get_mut(&self.name) {
            backend.mocks.mount(mock);
        }
    }
}

/// Why a connection is closed without an answer; hyper drops the connection on an error.
#[derive(Debug)]
struct DroppedByMock;

impl std::fmt::Display for DroppedByMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the mock")
    }
}

impl std::error::Error for DroppedByMock {}

async fn serve(
    state: Arc<Mutex<MockState>>,
    backend: String,
    req: hyper::Request<hyper::Body>,
) -> Result<hyper::Response<hyper::Body>, DroppedByMock> {
    let (parts, body) = req.into_parts();
    let body = hyper::body::to_bytes(body).await.unwrap_or_default();
    let reply = record_and_choose(&state, backend, parts, body);
    answer(reply).await
}

/// Records the request and picks the answer: the first mounted mock that matches, or a 500
/// and a reported failure. Synchronous, so no lock is ever held across an await.
fn record_and_choose(
    state: &Mutex<MockState>,
    backend: String,
    parts: hyper::http::request::Parts,
    body: bytes::Bytes,
) -> Reply {
    let (method, headers) = match (
        crate::wire::method_from_hyper(&parts.method),
        crate::wire::headers_from_hyper(&parts.headers),
    ) {
        (Ok(method), Ok(headers)) => (method, headers),
        (Err(e), _) | (_, Err(e)) => {
            lock(state).failures.push(MockFailure::Unrepresentable {
                backend,
                reason: e.to_string(),
            });
            return Reply::text(500, format!("edge-test: invalid {e}"));
        }
    };
    let mut guard = lock(state);
    let request = BackendRequest {
        backend: backend.clone(),
        invocation: guard.invocation,
        method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        body,
    };
    guard.received.push(request.clone());
    let backend_state = guard
        .backends
        .get_mut(&backend)
        .expect("a mock server serves a declared backend");
    let chosen = backend_state.mocks.choose(&request);
    match chosen {
        Some(Responder::Canned(reply)) => reply,
        Some(Responder::Computed(respond)) => {
            drop(guard);
            let answered = std::panic::catch_unwind(AssertUnwindSafe(|| respond(&request)));
            guard = lock(state);
            match answered {
                Ok(reply) => reply,
                Err(panic) => {
                    let message = panic_message(&panic);
                    let reply =
                        Reply::text(500, format!("edge-test: mock closure panicked: {message}"));
                    guard.failures.push(MockFailure::ResponderPanicked {
                        backend,
                        request: request.summary(),
                        message,
                    });
                    reply
                }
            }
        }
        None => {
            let reply = Reply::text(
                500,
                format!(
                    "edge-test: no mock on backend `{backend}` matched {}",
                    request.summary()
                ),
            );
            let mounted = guard.backends[&backend].mocks.usage();
            guard.failures.push(MockFailure::Unmatched {
                backend,
                request: seen(&request),
                mounted,
            });
            reply
        }
    }
}

async fn answer(reply: Reply) -> Result<hyper::Response<hyper::Body>, DroppedByMock> {
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    match reply.fault {
        Some(Fault::DropConnection) => return Err(DroppedByMock),
        Some(Fault::Hang) => std::future::pending::<()>().await,
        None => {}
    }
    // A Reply checks its status and headers where the test writes it, so this holds.
    Ok(
        crate::wire::hyper_response(reply.status, &reply.headers, reply.body)
            .expect("a Reply is checked when it is built"),
    )
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a non-string panic payload)".to_owned())
}
