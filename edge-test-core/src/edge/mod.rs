//! `Edge`: one test's own Fastly edge running the service, with its mocks and its logs.
//! What it offers of the platform besides requests and backends is in `platform`.

mod platform;
mod process_routes;
mod service_routes;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::error::EdgeError;
use crate::executor::{self, InvocationReport, InvocationRequest, SessionSpec};
use crate::logs::Logs;
use crate::manifest_edits::ManifestEdits;
use crate::mock::MockBackend;
use crate::mock::server::MockHub;
use crate::platform::{Device, Geo, Tls};
use crate::response::{GuestFailure, GuestFailureKind, Invocation, Judged, Response};
use crate::service::{self, ResolvedService};
use crate::wire::PlatformChange;

/// The host a request is addressed to unless the edge or the request says otherwise.
const DEFAULT_HOST: &str = "edge.test";

/// A test's own edge: the service's guest, an empty cache, the stores as `fastly.toml`
/// declares them, and a mock for each backend. Cloning is cheap and shares the same edge;
/// invocations run one at a time, sharing cache and stores as on a real POP.
///
/// ```no_run
/// # async fn f(edge: edge_test_core::Edge) {
/// let resp = edge.get("/todos/1").header("accept", "application/json").send().await;
/// assert_eq!(resp.status(), 200);
/// assert_eq!(resp.logs().endpoint("access"), ["GET /todos/1 200 MISS"]);
/// # }
/// ```
#[derive(Clone)]
pub struct Edge {
    inner: Arc<EdgeInner>,
}

struct EdgeInner {
    service: Arc<ResolvedService>,
    test: String,
    // Field order matters on drop: the guest stops before the mocks it may be calling.
    /// The running guest; started again, from the edited manifest, when the test edits it
    /// (`manifest_edits`) before its first request.
    session: Mutex<Arc<executor::Session>>,
    /// What the session was first started with.
    spec: SessionSpec,
    /// The test's edits of the manifest, and those the running session was started with.
    edits: Mutex<(ManifestEdits, ManifestEdits)>,
    /// Set once a request (or a platform read) went to the session: from then on the
    /// manifest can no longer change.
    session_used: std::sync::atomic::AtomicBool,
    mocks: MockHub,
    guest_timeout: Mutex<Duration>,
    max_log_bytes: AtomicUsize,
    /// The authority requests are addressed to unless they set a `host` header.
    default_host: Mutex<String>,
    invocations: AtomicUsize,
    /// What the test changed in the platform since the last invocation, in order.
    platform_changes: Mutex<Vec<PlatformChange>>,
    /// Whether the last invocation's request came over TLS: its facts are then cleared
    /// for a plain one.
    downstream_facts: std::sync::atomic::AtomicBool,
    /// A request whose test stopped awaiting it (a `timeout` or `select!` around `send`):
    /// its invocation number and summary, until it is settled.
    abandoned: Mutex<Option<(usize, String)>>,
    /// One invocation at a time: logs and backend calls are attributed by invocation.
    turn: tokio::sync::Mutex<()>,
    /// The cassettes on its backends, finished (written, or checked) when the test passes.
    tapes: Mutex<Vec<Arc<crate::cassette::Tape>>>,
    /// Services started beside it in the test (`service_routes`), by name.
    services: Mutex<std::collections::BTreeMap<String, Edge>>,
    /// The edges its backends are routed to.
    routes: Mutex<Vec<Edge>>,
    /// What it answered to requests routed to it from another service's backend.
    served: Mutex<Vec<Response>>,
    /// The local processes its backends are routed to (`process_routes`); isolated ones stop
    /// with it.
    processes: Mutex<Vec<Arc<crate::process_backend::Running>>>,
    /// e2e mode: the deployment the requests go to, instead of a local guest.
    deployed: Option<Arc<crate::e2e::Target>>,
}

impl Drop for EdgeInner {
    fn drop(&mut self) {
        for process in crate::sync::lock(&self.processes).iter() {
            if process.is_isolated() {
                process.stop();
            }
        }
    }
}

impl Edge {
    /// Starts an edge for `service` (as registered with `register_service!`). Tests get
    /// one from `#[edge_test]`; call this directly only outside that attribute.
    pub fn start(service: &str, test: &str) -> Result<Self, EdgeError> {
        if let Some(target) = crate::e2e::target_for(service)? {
            return Self::start_deployed(service, test, target);
        }
        let service = service::resolve(service)?;
        let backends = service
            .manifest
            .as_ref()
            .map(|m| m.backends.clone())
            .unwrap_or_default();
        let kv_guest = match &service.manifest {
            Some(manifest) if !manifest.kv_stores.is_empty() => {
                Some(crate::guest_build::kv_guest_wasm()?)
            }
            _ => None,
        };
        let mocks = MockHub::start(&backends)?;
        let spec = SessionSpec {
            service: service.name.clone(),
            test: test.to_owned(),
            wasm: service.wasm.clone(),
            fastly_toml: service.manifest.as_ref().map(|m| m.text.clone()),
            backend_addrs: mocks.addrs().clone(),
            kv_guest,
            http_cache_shim: service.http_cache_shim.clone(),
            capture_stdio: false,
        };
        let session = executor::Session::start(spec.clone())?;
        Ok(Self::assemble(service, test, spec, session, mocks, None))
    }

    /// An edge whose requests go to a deployment of the service (e2e mode): no guest, no
    /// mocks; what needs them skips the test (`local_only`).
    fn start_deployed(
        service: &str,
        test: &str,
        target: Arc<crate::e2e::Target>,
    ) -> Result<Self, EdgeError> {
        let service = service::resolve_deployed(service)?;
        let mocks = MockHub::start(&[])?;
        let spec = SessionSpec {
            service: service.name.clone(),
            test: test.to_owned(),
            wasm: std::path::PathBuf::new(),
            fastly_toml: None,
            backend_addrs: Default::default(),
            kv_guest: None,
            http_cache_shim: None,
            capture_stdio: false,
        };
        let session = executor::Session::Deployed(crate::e2e::DeployedSession::new(target.clone()));
        Ok(Self::assemble(
            service,
            test,
            spec,
            session,
            mocks,
            Some(target),
        ))
    }

    fn assemble(
        service: Arc<ResolvedService>,
        test: &str,
        spec: SessionSpec,
        session: executor::Session,
        mocks: MockHub,
        deployed: Option<Arc<crate::e2e::Target>>,
    ) -> Self {
        let session = Mutex::new(Arc::new(session));
        Self {
            inner: Arc::new(EdgeInner {
                guest_timeout: Mutex::new(service.guest_timeout),
                max_log_bytes: AtomicUsize::new(service.max_log_bytes),
                default_host: Mutex::new(DEFAULT_HOST.to_owned()),
                abandoned: Mutex::new(None),
                service,
                test: test.to_owned(),
                session,
                spec,
                edits: Mutex::new(Default::default()),
                session_used: Default::default(),
                mocks,
                invocations: AtomicUsize::new(0),
                platform_changes: Mutex::new(Vec::new()),
                downstream_facts: Default::default(),
                turn: tokio::sync::Mutex::new(()),
                tapes: Mutex::new(Vec::new()),
                services: Mutex::new(Default::default()),
                routes: Mutex::new(Vec::new()),
                served: Mutex::new(Vec::new()),
                processes: Mutex::new(Vec::new()),
                deployed,
            }),
        }
    }

    /// The deployment this edge's requests go to, in e2e mode (`EDGE_TEST_TARGET_<SERVICE>`).
    pub fn deployed_url(&self) -> Option<&str> {
        self.inner.deployed.as_deref().map(|t| t.url.as_str())
    }

    /// Skips the test in e2e mode: `what` (what the test does, "mocks backend
    /// `origin`") needs a local run.
    #[track_caller]
    pub(crate) fn local_only(&self, what: impl FnOnce() -> String) {
        if let Some(target) = &self.inner.deployed {
            crate::e2e::skip_local_only(&format!("it {}", what()), &target.url);
        }
    }

    /// The name of the service this edge runs.
    pub fn service(&self) -> &str {
        &self.inner.service.name
    }

    /// A request with any method: a [`Method`] or its name (`edge.request("PURGE", "/")`).
    /// Panics, naming it, on a name that is not a valid method.
    #[track_caller]
    pub fn request<M>(&self, method: M, path: &str) -> RequestBuilder
    where
        M: TryInto<Method> + std::fmt::Debug,
        M::Error: std::fmt::Display,
    {
        let shown = format!("{method:?}");
        let method = method
            .try_into()
            .unwrap_or_else(|e| panic!("edge-test: {shown} is not a valid HTTP method ({e})"));
        RequestBuilder {
            edge: self.clone(),
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            geo: None,
            device: None,
            tls: None,
        }
    }

    /// The authority requests are addressed to unless they set a `host` header: the guest
    /// sees `http://<host><path>` as its URL (default `edge.test`). Services that build
    /// absolute URLs (redirects, OAuth callbacks) from the request see this host. Panics,
    /// naming it, when `host` is not a valid authority.
    #[track_caller]
    pub fn set_default_host(&self, host: &str) {
        self.local_only(|| "sets the host requests are addressed to".to_owned());
        if let Err(e) = host.parse::<http::uri::Authority>() {
            panic!("edge-test: {host:?} is not a valid host for requests ({e})");
        }
        *crate::sync::lock(&self.inner.default_host) = host.to_owned();
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// The mock behind backend `name` (as declared in `fastly.toml`); panics, listing the
    /// declared backends, when the service has no such backend.
    pub fn backend(&self, name: &str) -> MockBackend {
        self.local_only(|| format!("mocks backend `{name}`"));
        self.inner.mocks.backend(name).unwrap_or_else(|| {
            let declared = self.inner.mocks.backend_names();
            panic!(
                "edge-test: service `{}` declares no backend `{name}`; declared backends: {}",
                self.service(),
                if declared.is_empty() {
                    "none (add them under [local_server.backends] in fastly.toml)".to_owned()
                } else {
                    declared.join(", ")
                }
            )
        })
    }

    /// The running session.
    fn session(&self) -> Arc<executor::Session> {
        crate::sync::lock(&self.inner.session).clone()
    }

    /// How long each following invocation may run before its guest is stopped.
    pub fn set_guest_timeout(&self, limit: Duration) {
        *crate::sync::lock(&self.inner.guest_timeout) = limit;
    }

    /// How many bytes of log output (endpoints, stdout and stderr together) each following
    /// invocation may write. Output past it is dropped and fails the test, naming how much
    /// was dropped: memory stays bounded whatever the guest prints.
    pub fn set_max_log_bytes(&self, limit: usize) {
        self.inner.max_log_bytes.store(limit, Ordering::SeqCst);
    }

    /// Panics with a report when a mock's expectation is not met. `#[edge_test]` calls it
    /// when the test body returns; call it earlier to check at a point of your choosing.
    pub fn verify(&self) {
        if let Some(report) = self.inner.mocks.unmet_expectations() {
            panic!("{report}");
        }
        for tape in crate::sync::lock(&self.inner.tapes).iter() {
            if let Err(failure) = tape.finish() {
                panic!("{failure}");
            }
        }
        for service in self.services() {
            service.verify();
        }
    }

    /// Serves backend `name`'s requests that no mock matches from a cassette: replayed from
    /// its file (the default), or recorded from the real origin and written when the test
    /// passes. See [`Cassette`](crate::cassette::Cassette). Panics, naming the problem and
    /// the fix, for a backend the service does not declare, a missing or unreadable
    /// cassette, or recording while `CI` is set.
    ///
    /// ```no_run
    /// # async fn doc(edge: edge_test_core::Edge) {
    /// use edge_test_core::cassette::Cassette;
    /// edge.cassette("origin", Cassette::new());
    /// let todos = edge.get("/todos/1").send().await; // answered as the origin once did
    /// # let _ = todos;
    /// # }
    /// ```
    pub fn cassette(
        &self,
        name: &str,
        cassette: crate::cassette::Cassette,
    ) -> crate::cassette::CassetteHandle {
        self.local_only(|| format!("plays a cassette on backend `{name}`"));
        let _ = self.backend(name);
        let url = self.inner.service.manifest.as_ref().and_then(|m| {
            let parsed: toml::Table = m.text.parse().ok()?;
            parsed
                .get("local_server")?
                .get("backends")?
                .get(name)?
                .get("url")?
                .as_str()
                .map(str::to_owned)
        });
        let handle = crate::cassette::open(
            cassette,
            self.service(),
            &self.inner.test,
            name,
            url.as_deref(),
        )
        .unwrap_or_else(|e| panic!("edge-test: {e}"));
        self.inner.mocks.set_cassette(name, handle.tape());
        crate::sync::lock(&self.inner.tapes).push(handle.tape());
        handle
    }

    fn next_invocation(&self, builder: &RequestBuilder) -> (usize, InvocationRequest) {
        let invocation = self.inner.invocations.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.mocks.begin_invocation(invocation);
        if let Some(geo) = &builder.geo {
            self.change_platform(geo.change_for(builder.client_ip));
        }
        match &builder.tls {
            Some(tls) => {
                let mut facts = tls.facts.clone();
                facts
                    .entry("tls_server_name".to_owned())
                    .or_insert_with(|| builder.host(&crate::sync::lock(&self.inner.default_host)));
                self.change_platform(PlatformChange::Downstream { facts });
                self.inner.downstream_facts.store(true, Ordering::SeqCst);
            }
            None if self.inner.downstream_facts.swap(false, Ordering::SeqCst) => {
                self.change_platform(PlatformChange::Downstream {
                    facts: Default::default(),
                });
            }
            None => {}
        }
        if let Some(device) = &builder.device {
            let user_agent = builder
                .headers
                .get(http::header::USER_AGENT)
                .map(|ua| String::from_utf8_lossy(ua.as_bytes()).into_owned())
                .unwrap_or_default();
            self.change_platform(device.change_for(&user_agent));
        }
        let mut request = builder.to_invocation(
            *crate::sync::lock(&self.inner.guest_timeout),
            self.inner.max_log_bytes.load(Ordering::SeqCst),
            &crate::sync::lock(&self.inner.default_host),
        );
        request.platform = std::mem::take(&mut *crate::sync::lock(&self.inner.platform_changes));
        request.dynamic_dispatcher = self.inner.mocks.dynamic_dispatcher();
        (invocation, request)
    }

    /// Settles a request the test stopped awaiting, if there is one: waits for its guest to
    /// finish, so that nothing it does is counted as the next invocation's, and fails the
    /// test, naming it, when it trapped, timed out or broke a rule.
    pub(crate) async fn settle_abandoned(&self) {
        if let Some((invocation, summary)) = self.take_abandoned()
            && let Some(report) = self.session().settle().await
        {
            self.judge_abandoned(invocation, summary, report);
        }
    }

    fn settle_abandoned_blocking(&self) {
        if let Some((invocation, summary)) = self.take_abandoned()
            && let Some(report) = self.session().settle_blocking()
        {
            self.judge_abandoned(invocation, summary, report);
        }
    }

    fn take_abandoned(&self) -> Option<(usize, String)> {
        crate::sync::lock(&self.inner.abandoned).take()
    }

    fn judge_abandoned(&self, invocation: usize, summary: String, report: InvocationReport) {
        let summary =
            format!("{summary} (invocation {invocation}, which the test stopped awaiting)");
        if let Err(failure) = self.conclude(invocation, &summary, summary.clone(), report) {
            // A mock's report names the backend's request, not the test's.
            if matches!(failure.kind(), GuestFailureKind::MockFailed { .. }) {
                panic!("edge-test: during {summary}:\n{failure}");
            }
            panic!("{failure}");
        }
    }

    /// What the invocation did that a test never means to happen, whatever it asserts on:
    /// a mock problem (a request no mock matched, a panicking closure), a connection past
    /// the mocks, a backend `fastly.toml` does not declare, log output past the cap. The
    /// first found, in that order.
    fn broken_rule(&self, report: &InvocationReport) -> Option<GuestFailureKind> {
        let failures = self.inner.mocks.take_failures();
        if !failures.is_empty() {
            return Some(GuestFailureKind::MockFailed {
                reports: failures.iter().map(ToString::to_string).collect(),
            });
        }
        if !report.refused_connections.is_empty() {
            return Some(GuestFailureKind::ReachedPastMocks {
                destinations: report.refused_connections.clone(),
            });
        }
        let undeclared: Vec<String> = report
            .runtime_warnings
            .iter()
            .filter_map(|warning| executor::undeclared_backend(warning))
            .map(str::to_owned)
            .collect();
        if !undeclared.is_empty() {
            return Some(GuestFailureKind::UndeclaredBackend {
                backends: undeclared,
                declared: self.inner.mocks.backend_names(),
            });
        }
        (report.dropped_log_bytes > 0).then(|| GuestFailureKind::OutputOverCap {
            cap: self.inner.max_log_bytes.load(Ordering::SeqCst),
            dropped: report.dropped_log_bytes,
        })
    }

    /// Judges one invocation's report. `what` names it in messages ("GET / (invocation
    /// 2)"); `summary` is the request as a `GuestFailure` shows it.
    fn conclude(
        &self,
        invocation: usize,
        what: &str,
        summary: String,
        report: InvocationReport,
    ) -> Result<Response, GuestFailure> {
        let during = format!("during {what}");
        let service = self.service();
        if let Some(why) = &report.unfenced {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                executor::warn(&format!(
                    "guests in this process run without the network fence: {why}. A guest \
                     can reach the network past its mocks unnoticed."
                ))
            });
        }
        let broken = self.broken_rule(&report);
        let logs = Logs::new(executor::parse_log(&report.log));
        let judged = crate::response::judge(
            report,
            Invocation {
                number: invocation,
                service: self.service(),
                request: &summary,
                during: &during,
                logs,
                backend_calls: self.inner.mocks.calls_of(invocation),
            },
            broken,
        );
        match judged {
            Judged::Answered(mut response) => {
                response.deployed = self.deployed_url().map(str::to_owned);
                Ok(response)
            }
            Judged::Failed(failure) => Err(failure),
            Judged::NotRun { reason } => {
                panic!("edge-test: {summary} to service `{service}` was not run: {reason}")
            }
            Judged::Invalid(e) => panic!(
                "edge-test: {during} the runtime answered with an invalid {e}; this is a bug \
                 in edge-test, please report it"
            ),
        }
    }
}

/// Where an edge's guest runs, for edge-test's own tests (through `__private`): kept off
/// `Edge`, whose methods are the public API.
pub(crate) mod internals {
    use super::Edge;

    /// The process running the edge's guest, when it runs in a forked worker.
    pub fn worker_pid(edge: &Edge) -> Option<u32> {
        edge.session().worker_pid()
    }

    /// The compiled template the edge's worker was forked from: edges with equal ids share
    /// one compile.
    pub fn template_id(edge: &Edge) -> Option<u64> {
        edge.session().template_id()
    }
}

// Every lock in an edge tolerates poisoning and a failed invocation leaves it consistent,
// so tests may check for panics (`catch_unwind(|| edge.verify())`) without wrappers.
impl std::panic::UnwindSafe for Edge {}
impl std::panic::RefUnwindSafe for Edge {}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("service", &self.service())
            .field("test", &self.inner.test)
            .finish_non_exhaustive()
    }
}

/// A downstream request being built; send it with `send().await` (or `send_blocking()` in a
/// plain `fn` test).
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    edge: Edge,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    client_ip: IpAddr,
    geo: Option<Geo>,
    device: Option<Device>,
    tls: Option<Tls>,
}

impl RequestBuilder {
    /// Adds a header (repeating a name adds another value). Panics on an invalid name or
    /// value: that is a bug in the test.
    #[track_caller]
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: std::fmt::Debug,
        V: std::fmt::Debug,
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: std::fmt::Display,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: std::fmt::Display,
    {
        let shown = format!("{name:?}");
        let name = HeaderName::try_from(name).unwrap_or_else(|e| {
            panic!("edge-test: the request header name {shown} is not valid ({e}); header names are tokens: letters, digits and !#$%&'*+-.^_`|~")
        });
        let shown_value = format!("{value:?}");
        let value = HeaderValue::try_from(value).unwrap_or_else(|e| {
            panic!("edge-test: the value {shown_value} of request header `{name}` is not valid ({e}); header values may not hold control characters such as newlines")
        });
        self.headers.append(name, value);
        self
    }

    /// The request body, as bytes.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// A text body; sets `content-type: text/plain; charset=utf-8` unless already set.
    pub fn text(self, body: impl Into<String>) -> Self {
        self.with_default_content_type("text/plain; charset=utf-8")
            .body(body.into())
    }

    /// A JSON body; sets `content-type: application/json` unless already set.
    pub fn json(self, body: &impl serde::Serialize) -> Self {
        let bytes = serde_json::to_vec(body).expect("the request body serializes to JSON");
        self.with_default_content_type("application/json")
            .body(bytes)
    }

    /// The client's IP address, as the guest sees it (default 127.0.0.1).
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.edge
            .local_only(|| "sets the client's IP address".to_owned());
        self.client_ip = ip;
        self
    }

    /// The geolocation of the client's address ([`client_ip`](Self::client_ip)), as the
    /// guest reads it with `fastly::geo::geo_lookup`. It stays that address's record for
    /// later requests of this test.
    pub fn geo(mut self, geo: Geo) -> Self {
        self.edge
            .local_only(|| "sets the client's geolocation".to_owned());
        self.geo = Some(geo);
        self
    }

    /// The request arrives over TLS: its URL is `https://`, and the guest reads `tls`'s
    /// facts (protocol, cipher, server name, fingerprints). Without it, a plain HTTP
    /// request, whose TLS facts are absent.
    pub fn tls(mut self, tls: Tls) -> Self {
        self.edge
            .local_only(|| "sets the client's TLS facts".to_owned());
        self.tls = Some(tls);
        self
    }

    /// What device detection reports for this request's `User-Agent` header (set it with
    /// [`header`](Self::header)), as the guest reads it with
    /// `fastly::device_detection::lookup`. It stays that user agent's record for later
    /// requests of this test.
    pub fn device(mut self, device: Device) -> Self {
        self.edge
            .local_only(|| "sets the client's device".to_owned());
        self.device = Some(device);
        self
    }

    /// Runs the request and waits until the guest has fully finished (its work after the
    /// response included), and returns what the client received.
    ///
    /// # Panics
    ///
    /// On every failure [`try_send`](Self::try_send) returns: the guest traps (a panic,
    /// before or after responding, or mid-stream), exits with an error or runs past its time
    /// limit, or the invocation breaks a rule (an unmatched backend request, a connection
    /// past the mocks, an undeclared backend, log output past the cap). Use `try_send` to
    /// assert on one instead. And in every case where `try_send` panics.
    pub async fn send(self) -> Response {
        self.try_send()
            .await
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Like [`send`](Self::send), but a failure is returned as a [`GuestFailure`] rather
    /// than panicking: a trap or a time-out, and also a rule the invocation broke, which
    /// `send` fails the test for: a backend request no mock matched (or a mock closure that
    /// panicked), a connection past the mocks, a backend `fastly.toml` does not declare, log
    /// output past the cap ([`GuestFailureKind`] says which).
    ///
    /// Stopping awaiting it (a `timeout` or `select!` around it) does not stop the guest: the
    /// request runs to its end, and the next `send` (or the end of the test) waits for it
    /// first and fails, naming it, if it trapped, timed out or broke a rule.
    ///
    /// # Panics
    ///
    /// When the request could not run at all: the edge stopped after an earlier time-out, or
    /// the worker process running the guest died. And when an earlier request the test
    /// stopped awaiting failed: it is judged first, named as such.
    pub async fn try_send(self) -> Result<Response, GuestFailure> {
        let edge = self.edge.clone();
        let _turn = edge.inner.turn.lock().await;
        edge.settle_abandoned().await;
        let (invocation, request) = edge.next_invocation(&self);
        // Dropped before it is disarmed, the future was cancelled mid-request.
        let mut watch = AbandonWatch {
            edge: &edge,
            request: Some((invocation, self.summary())),
        };
        let report = edge.ready_session().run(request).await;
        watch.request = None;
        self.conclude(invocation, report)
    }

    /// [`send`](Self::send) for plain `fn` tests. Do not call it from async code.
    pub fn send_blocking(self) -> Response {
        self.try_send_blocking()
            .unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// [`try_send`](Self::try_send) for plain `fn` tests. Do not call it from async code.
    pub fn try_send_blocking(self) -> Result<Response, GuestFailure> {
        let edge = self.edge.clone();
        let _turn = edge.inner.turn.blocking_lock();
        edge.settle_abandoned_blocking();
        let (invocation, request) = edge.next_invocation(&self);
        let report = edge.ready_session().run_blocking(request);
        self.conclude(invocation, report)
    }

    /// Judges the report of this request, sent as invocation `invocation`.
    fn conclude(
        &self,
        invocation: usize,
        report: InvocationReport,
    ) -> Result<Response, GuestFailure> {
        let summary = self.summary();
        self.edge.conclude(
            invocation,
            &format!("{summary} (invocation {invocation})"),
            summary,
            report,
        )
    }

    fn with_default_content_type(mut self, content_type: &'static str) -> Self {
        self.headers
            .entry(http::header::CONTENT_TYPE)
            .or_insert(HeaderValue::from_static(content_type));
        self
    }

    fn summary(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The authority the request is addressed to: its `host` header, or the edge's default.
    fn host(&self, default_host: &str) -> String {
        self.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or(default_host)
            .to_owned()
    }

    fn to_invocation(
        &self,
        guest_timeout: Duration,
        max_log_bytes: usize,
        default_host: &str,
    ) -> InvocationRequest {
        let host = self.host(default_host);
        let path = if self.path.starts_with('/') {
            self.path.clone()
        } else {
            format!("/{}", self.path)
        };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        InvocationRequest {
            method: self.method.as_str().to_owned(),
            uri: format!("{scheme}://{host}{path}"),
            headers: crate::wire::raw_headers(&self.headers),
            body: self.body.to_vec(),
            client_ip: self.client_ip,
            guest_timeout,
            max_log_bytes,
            ..Default::default()
        }
    }
}

/// Notes a request as abandoned when the future sending it is dropped before its report
/// arrived; disarmed (`request = None`) once it has.
struct AbandonWatch<'a> {
    edge: &'a Edge,
    request: Option<(usize, String)>,
}

impl Drop for AbandonWatch<'_> {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            *crate::sync::lock(&self.edge.inner.abandoned) = Some(request);
        }
    }
}
