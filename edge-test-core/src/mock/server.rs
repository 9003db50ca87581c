//! The HTTP servers behind mock backends: one loopback port per declared backend, all
//! served from the test's own process on a runtime of their own (so that blocking tests,
//! and tests that await the guest, never starve them).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::mounted::MockSet;
use super::reply::Fault;
use super::verification::{MockFailure, Seen, UnmetExpectations, UnmetOnBackend};
use super::{Mock, Reply, Responder};
use crate::backend_request::{BackendRequest, DynamicBackend};
use crate::cassette::{CassetteRequest, Served, Tape};
use crate::error::EdgeError;
use crate::process_backend::Running;
use crate::wire::DynamicRegistration;

/// The state every backend of one test shares with the test.
#[derive(Default)]
struct MockState {
    backends: BTreeMap<String, BackendState>,
    /// Dynamic backends' mocks, by the target the test named (`Edge::dynamic_backend`).
    dynamic: BTreeMap<String, BackendState>,
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
    /// Where requests no mock matches go, if the test put a cassette on the backend.
    cassette: Option<Arc<Tape>>,
    /// Or the service that answers them (`edge::service_routes`).
    route: Option<Arc<dyn Route>>,
    /// Or the local process that does (`process_backend`).
    process: Option<Arc<Running>>,
}

/// Another service answering a backend: `Err` is why it could not, for the test's failure.
/// Called on a blocking thread: the other service's invocation runs to its end.
pub(crate) trait Route: Send + Sync {
    fn answer(&self, request: &BackendRequest) -> Result<Reply, String>;
}

/// How a backend answers a request.
enum Choice {
    Reply(Reply),
    /// Recording a cassette: forward to the origin, and write the exchange down.
    Forward(Arc<Tape>, String, CassetteRequest),
    /// Another service answers it.
    Routed(Arc<dyn Route>, Box<BackendRequest>),
    /// A local process answers it.
    Process(Arc<Running>, Box<BackendRequest>),
}

/// A test's mock servers, one per backend the service declares.
pub(crate) struct MockHub {
    state: Arc<Mutex<MockState>>,
    addrs: BTreeMap<String, SocketAddr>,
    /// Where redirected dynamic-backend connections arrive (`executor::guest::dynamic_backends`).
    dynamic_addr: SocketAddr,
    /// The hub's own runtime, or none when it serves on one that outlives it.
    runtime: Option<tokio::runtime::Runtime>,
    /// Its listeners' tasks, stopped when it is dropped (on a runtime it does not own).
    listeners: Vec<tokio::task::JoinHandle<()>>,
}

/// One backend of the service under test, served by the test's mocks.
///
/// Get it from [`Edge::backend`](crate::Edge::backend), mount mocks on it, and read what it
/// received.
#[derive(Clone)]
pub struct MockBackend {
    name: String,
    /// A dynamic backend's target, rather than a declared backend's name.
    dynamic: bool,
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
        let mut hub = Self::start_on(runtime.handle(), backends)?;
        hub.runtime = Some(runtime);
        Ok(hub)
    }

    /// A hub served on `runtime`, which outlives it (the host's, for the guest unit tests it
    /// runs on a thin runner's behalf: a runtime per test would be two threads per test).
    /// Its listeners stop when it is dropped.
    pub(crate) fn start_on(
        runtime: &tokio::runtime::Handle,
        backends: &[String],
    ) -> Result<Self, EdgeError> {
        let state = Arc::new(Mutex::new(MockState::default()));
        let mut addrs = BTreeMap::new();
        let mut listeners = Vec::new();
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
            let served = server.serve(service);
            listeners.push(runtime.spawn(async move {
                let _ = served.await;
            }));
            addrs.insert(name.clone(), addr);
        }
        let (dynamic_addr, dispatcher) = start_dynamic_dispatcher(runtime, state.clone())?;
        listeners.push(dispatcher);
        Ok(Self {
            state,
            addrs,
            dynamic_addr,
            runtime: None,
            listeners,
        })
    }

    pub(crate) fn dynamic_dispatcher(&self) -> Option<SocketAddr> {
        Some(self.dynamic_addr)
    }

    /// The mocks of dynamic backends to `target` (made on first use).
    pub(crate) fn dynamic_backend(&self, target: &str) -> MockBackend {
        lock(&self.state)
            .dynamic
            .entry(target.to_owned())
            .or_default();
        MockBackend {
            name: target.to_owned(),
            dynamic: true,
            state: self.state.clone(),
        }
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
                dynamic: false,
                state: self.state.clone(),
            })
    }

    /// Routes declared backend `name` to a local process.
    pub(crate) fn set_process(&self, name: &str, process: Arc<Running>) {
        if let Some(backend) = lock(&self.state).backends.get_mut(name) {
            backend.process = Some(process);
        }
    }

    /// Routes declared backend `name` to another service.
    pub(crate) fn set_route(&self, name: &str, route: Arc<dyn Route>) {
        if let Some(backend) = lock(&self.state).backends.get_mut(name) {
            backend.route = Some(route);
        }
    }

    /// Puts `tape` on declared backend `name`; `false` if the service declares no such backend.
    pub(crate) fn set_cassette(&self, name: &str, tape: Arc<Tape>) -> bool {
        match lock(&self.state).backends.get_mut(name) {
            Some(backend) => {
                backend.cassette = Some(tape);
                true
            }
            None => false,
        }
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
            .chain(&state.dynamic)
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
        for listener in &self.listeners {
            listener.abort();
        }
        // Hanging mocks would keep a blocking shutdown waiting forever.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl MockBackend {
    /// The backend's name, as declared in `fastly.toml`, or a dynamic backend's target.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every request this backend received so far, in arrival order.
    pub fn received(&self) -> Vec<BackendRequest> {
        lock(&self.state)
            .received
            .iter()
            .filter(|r| r.backend == self.name && r.dynamic.is_some() == self.dynamic)
            .cloned()
            .collect()
    }

    pub(crate) fn mount(&self, mock: Mock) {
        let mut state = lock(&self.state);
        let backends = if self.dynamic {
            &mut state.dynamic
        } else {
            &mut state.backends
        };
        if let Some(backend) = backends.get_mut(&self.name) {
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
    let choice = record_and_choose(&state, backend, None, parts, body);
    answer(resolve(&state, choice).await).await
}

/// The listener redirected dynamic-backend connections reach: each starts with one JSON
/// line saying which registration it is for, then carries the guest's HTTP/1 requests.
fn start_dynamic_dispatcher(
    runtime: &tokio::runtime::Handle,
    state: Arc<Mutex<MockState>>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), EdgeError> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| EdgeError::io("cannot bind a loopback port for dynamic backends", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| EdgeError::io("cannot read the dynamic backends' address", e))?;
    let listener = {
        let _enter = runtime.enter();
        tokio::net::TcpListener::from_std(listener)
            .map_err(|e| EdgeError::io("cannot serve dynamic backends", e))?
    };
    let accepting = runtime.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_dynamic(state.clone(), stream));
        }
    });
    Ok((addr, accepting))
}

async fn serve_dynamic(state: Arc<Mutex<MockState>>, stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut stream = tokio::io::BufReader::new(stream);
    let mut line = Vec::new();
    if (&mut stream)
        .take(64 * 1024)
        .read_until(b'\n', &mut line)
        .await
        .is_err()
    {
        return;
    }
    let Ok(registration) = serde_json::from_slice::<DynamicRegistration>(&line) else {
        lock(&state).failures.push(MockFailure::Unrepresentable {
            backend: "(a dynamic backend)".into(),
            reason: format!(
                "registration line {:?}",
                String::from_utf8_lossy(&line).trim_end()
            ),
        });
        return;
    };
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::Body>| {
        let (state, registration) = (state.clone(), registration.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = hyper::body::to_bytes(body).await.unwrap_or_default();
            let target = mocked_target(&state, &registration);
            let choice = record_and_choose(&state, target, Some(registration), parts, body);
            answer(resolve(&state, choice).await).await
        }
    });
    let _ = hyper::server::conn::Http::new()
        .http1_only(true)
        .serve_connection(stream, service)
        .await;
}

/// The target the test mounted mocks for that `registration` reaches: its own, or with the
/// port its scheme implies (443 with TLS, 80 without) when the guest named none.
fn mocked_target(state: &Mutex<MockState>, registration: &DynamicRegistration) -> String {
    let named = registration.target.clone();
    let has_port = named
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.ends_with(']') || !port.is_empty())
        && !named.ends_with(']');
    if has_port {
        return named;
    }
    let with_port = format!("{named}:{}", if registration.use_tls { 443 } else { 80 });
    if lock(state).dynamic.contains_key(&with_port) {
        with_port
    } else {
        named
    }
}

/// Records the request and picks the answer: the first mounted mock that matches, else the
/// backend's cassette, else a 500 and a reported failure. Synchronous, so no lock is ever
/// held across an await.
fn record_and_choose(
    state: &Mutex<MockState>,
    backend: String,
    dynamic: Option<DynamicRegistration>,
    parts: hyper::http::request::Parts,
    body: bytes::Bytes,
) -> Choice {
    Choice::Reply(match choose(state, backend, dynamic, parts, body) {
        Ok(choice) => return choice,
        Err(reply) => reply,
    })
}

fn choose(
    state: &Mutex<MockState>,
    backend: String,
    dynamic: Option<DynamicRegistration>,
    parts: hyper::http::request::Parts,
    body: bytes::Bytes,
) -> Result<Choice, Reply> {
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
            return Err(Reply::text(500, format!("edge-test: invalid {e}")));
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
        dynamic: dynamic.as_ref().map(DynamicBackend::from),
    };
    guard.received.push(request.clone());
    let backend_state = if let Some(registration) = &dynamic {
        match guard.dynamic.get_mut(&backend) {
            Some(backend_state) => backend_state,
            None => {
                guard.failures.push(MockFailure::UnmockedDynamic {
                    name: registration.name.clone(),
                    target: registration.target.clone(),
                    request: seen(&request),
                });
                return Err(Reply::text(
                    502,
                    format!(
                        "edge-test: no mock for dynamic backend target {}",
                        registration.target
                    ),
                ));
            }
        }
    } else {
        guard
            .backends
            .get_mut(&backend)
            .expect("a mock server serves a declared backend")
    };
    let chosen = backend_state.mocks.choose(&request);
    if let (None, Some(route)) = (&chosen, backend_state.route.clone()) {
        return Ok(Choice::Routed(route, Box::new(request)));
    }
    if let (None, Some(process)) = (&chosen, backend_state.process.clone()) {
        return Ok(Choice::Process(process, Box::new(request)));
    }
    let cassette = backend_state.cassette.clone();
    if let (None, Some(tape)) = (&chosen, cassette) {
        drop(guard);
        let live = cassette_request(&request);
        return match tape.serve(live.clone()) {
            Served::Forward(origin) => Ok(Choice::Forward(tape, origin, live)),
            Served::Replayed(Ok(reply)) => Ok(Choice::Reply(reply)),
            Served::Replayed(Err((report, reply))) => {
                lock(state).failures.push(MockFailure::Cassette {
                    backend,
                    request: seen(&request),
                    report,
                });
                Ok(Choice::Reply(reply))
            }
        };
    }
    Ok(Choice::Reply(match chosen {
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
            let mounted = if dynamic.is_some() {
                guard.dynamic[&backend].mocks.usage()
            } else {
                guard.backends[&backend].mocks.usage()
            };
            guard.failures.push(MockFailure::Unmatched {
                backend,
                dynamic: dynamic.is_some(),
                request: seen(&request),
                mounted,
            });
            reply
        }
    }))
}

/// A request as a cassette holds it.
fn cassette_request(request: &BackendRequest) -> CassetteRequest {
    CassetteRequest {
        method: request.method.to_string(),
        path: request.path.clone(),
        query: request.query.clone(),
        headers: crate::cassette::header_pairs(
            request
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_bytes())),
        ),
        body: request.body.to_vec(),
    }
}

/// How long a process backend may take over one answer.
const PROCESS_ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// The reply a choice comes to: a mock's, a recording's, another service's or a process's.
async fn resolve(state: &Mutex<MockState>, choice: Choice) -> Reply {
    match choice {
        Choice::Reply(reply) => reply,
        Choice::Forward(tape, origin, request) => tape.forward(&origin, request).await,
        Choice::Process(process, request) => {
            let origin = format!("http://{}", process.addr);
            let forwarded = cassette_request(&request);
            let outcome =
                crate::cassette::origin::forward(&origin, &forwarded, PROCESS_ANSWER_LIMIT).await;
            if let crate::cassette::Outcome::Response(_) = &outcome {
                return outcome.reply();
            }
            // Give a dying process a moment to be reaped, so its exit is what is said.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let what = match (process.exit(), &outcome) {
                (Some(exit), _) => format!("{} {exit}", process.describe()),
                (None, crate::cassette::Outcome::Fault(crate::cassette::Fault::Timeout)) => {
                    format!(
                        "{} did not answer within {PROCESS_ANSWER_LIMIT:?}",
                        process.describe()
                    )
                }
                (None, _) => format!(
                    "{} closed the connection without an answer",
                    process.describe()
                ),
            };
            let report = format!("{what}; its last output:\n{}", process.last_output(20));
            lock(state).failures.push(MockFailure::Process {
                backend: request.backend.clone(),
                request: seen(&request),
                report,
            });
            Reply::text(502, format!("edge-test: {what}"))
        }
        Choice::Routed(route, request) => {
            let asked = request.clone();
            let answered = tokio::task::spawn_blocking(move || route.answer(&asked)).await;
            let failure = match answered {
                Ok(Ok(reply)) => return reply,
                Ok(Err(failure)) => failure,
                Err(panicked) => format!("service that answers it panicked: {panicked}"),
            };
            let reply = Reply::text(502, format!("edge-test: {failure}"));
            lock(state).failures.push(MockFailure::Service {
                backend: request.backend.clone(),
                request: seen(&request),
                failure,
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
