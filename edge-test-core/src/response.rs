//! What the client received from one invocation, with everything the guest did for it.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::backend_request::BackendRequest;
use crate::executor::{InvocationReport, Outcome, ReceivedResponse};
use crate::logs::Logs;
use crate::wire::WireError;

/// The response of one invocation, read after the guest fully finished: status, headers,
/// body, the invocation's log lines and the calls it made to backends.
#[derive(Debug, Clone)]
pub struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) logs: Logs,
    pub(crate) backend_calls: Vec<BackendRequest>,
    pub(crate) invocation: usize,
    /// e2e mode: the deployment that answered; its logs and backend calls are not seen here.
    pub(crate) deployed: Option<String>,
}

impl Response {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A header's value, when present and valid UTF-8 (the first, when it is repeated).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header, in order: for headers sent more than once, such as
    /// `set-cookie`. Values that are not valid UTF-8 are left out.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text; panics, showing the bytes, when it is not.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body)
            .unwrap_or_else(|e| panic!("the response body is not UTF-8 ({e}): {:?}", self.body))
    }

    /// The body parsed as JSON; panics, showing the body, when it does not parse.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the response body is not the expected JSON: {e}\nstatus: {}\nbody: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The invocation's log lines (written before and after the response was sent).
    pub fn logs(&self) -> &Logs {
        self.local_only("reads the invocation's log lines");
        &self.logs
    }

    /// The requests the guest sent to backends during this invocation, in order.
    pub fn backend_calls(&self) -> &[BackendRequest] {
        self.local_only("reads the guest's backend calls");
        &self.backend_calls
    }

    fn local_only(&self, what: &str) {
        if let Some(url) = &self.deployed {
            crate::e2e::skip_local_only(what, url);
        }
    }

    /// Which invocation of the test this was, counting from 1.
    pub fn invocation(&self) -> usize {
        self.invocation
    }
}

/// An invocation whose guest did not end cleanly. Returned by `try_send`; `send` panics
/// with it.
#[derive(Debug, Clone)]
pub struct GuestFailure {
    pub(crate) kind: GuestFailureKind,
    pub(crate) service: String,
    pub(crate) request: String,
    pub(crate) response: Option<Response>,
    pub(crate) phase: FailurePhase,
    pub(crate) logs: Logs,
    /// "during GET / (invocation 2)", for the messages of rules the invocation broke.
    pub(crate) during: String,
    /// What viceroy warned about during the invocation (a hostcall that answered with an
    /// error, say): often the reason the guest failed.
    pub(crate) runtime_warnings: Vec<String>,
}

/// How far the guest got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePhase {
    /// Nothing was sent to the client (a trap here gets the runtime's 500).
    BeforeResponse,
    /// The response was sent in full (`send_to_client`), then the guest failed.
    AfterResponse,
    /// The guest failed while streaming its body (`stream_to_client`).
    MidStream,
}

/// How the guest failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestFailureKind {
    /// The guest trapped: a Rust panic (it aborts), `unreachable`, running out of memory, or
    /// a non-zero exit. `message` is the runtime's report.
    Trapped { message: String },
    /// The guest was still running after its time limit and was stopped.
    TimedOut { limit: Duration },
    /// A backend request no mock matched, or a mock closure that panicked: `reports` says
    /// which, with the mounted mocks.
    MockFailed { reports: Vec<String> },
    /// The guest tried to connect to something other than its mocks ("TCP 203.0.113.9:80")
    /// and was refused: a test never reaches the network.
    ReachedPastMocks { destinations: Vec<String> },
    /// The guest sent a request to a backend `fastly.toml` does not declare.
    UndeclaredBackend {
        backends: Vec<String>,
        declared: Vec<String>,
    },
    /// The guest wrote more log output than an invocation may (`cap` bytes); `dropped`
    /// bytes past it were dropped.
    OutputOverCap { cap: usize, dropped: u64 },
}

impl GuestFailure {
    pub fn kind(&self) -> &GuestFailureKind {
        &self.kind
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, GuestFailureKind::TimedOut { .. })
    }

    /// What the client received before the failure, if anything: a guest that fails after
    /// `send_to_client` has already answered, and one that fails mid-stream has sent part
    /// of its body. A guest that traps before answering gets the runtime's 500.
    pub fn response(&self) -> Option<&Response> {
        self.response.as_ref()
    }

    /// How far the guest got before it failed.
    pub fn phase(&self) -> FailurePhase {
        self.phase
    }

    /// The invocation's log lines, up to the failure.
    pub fn logs(&self) -> &Logs {
        &self.logs
    }

    /// What the runtime warned about during the invocation, such as a hostcall that
    /// answered the guest with an error: often why it failed.
    pub fn runtime_warnings(&self) -> &[String] {
        &self.runtime_warnings
    }

    /// The Rust panic message the guest printed, if it panicked.
    pub fn panic_message(&self) -> Option<String> {
        self.logs.panic_message()
    }
}

impl std::fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            service, request, ..
        } = self;
        match &self.kind {
            GuestFailureKind::Trapped { message } => {
                let status = self.response.as_ref().map_or(0, |r| r.status.as_u16());
                let when = match self.phase {
                    FailurePhase::BeforeResponse => "before it sent a response".to_owned(),
                    FailurePhase::AfterResponse => format!("after it sent a {status} response"),
                    FailurePhase::MidStream => format!("while streaming a {status} response"),
                };
                write!(
                    f,
                    "edge-test: the guest of service `{service}` failed {when} to {request}"
                )?;
                if let Some(panic) = self.panic_message() {
                    write!(f, "\n  panic: {panic}")?;
                }
                write!(f, "\n  runtime: {}", trap_reason(message))?;
            }
            GuestFailureKind::TimedOut { limit } => write!(
                f,
                "edge-test: the guest of service `{service}` was still running {limit:?} after {request} \
                 and was stopped. Raise the limit with `Service::guest_timeout`, \
                 `#[edge_test(guest_timeout_ms = ..)]` or `Edge::set_guest_timeout` if it is legitimately slow."
            )?,
            GuestFailureKind::MockFailed { reports } => f.write_str(&reports.join("\n"))?,
            GuestFailureKind::ReachedPastMocks { destinations } => write!(
                f,
                "edge-test: {during} the guest of service `{service}` tried to connect to {}, \
                 which is none of its mocked backends, and was refused: tests never reach the \
                 network. Declare the backend in fastly.toml under [local_server.backends] and \
                 mount a mock on it with `edge.backend(\"name\")`, or mount one for a dynamic \
                 backend's target with `edge.dynamic_backend(\"host:port\")` (see the runtime \
                 warnings for why this one was not redirected).",
                destinations.join(", "),
                during = self.during
            )?,
            GuestFailureKind::UndeclaredBackend { backends, declared } => write!(
                f,
                "edge-test: {during} the guest of service `{service}` sent a request to backend \
                 {}, which its fastly.toml does not declare (declared: {}); the guest got an \
                 error where production would have one too. Declare it under \
                 [local_server.backends] in fastly.toml, or fix the name the guest uses.",
                backends
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.join(", ")
                },
                during = self.during
            )?,
            GuestFailureKind::OutputOverCap { cap, dropped } => write!(
                f,
                "edge-test: {during} the guest of service `{service}` wrote more log output \
                 (endpoints, stdout and stderr) than the {cap} bytes an invocation may write; \
                 {dropped} bytes past that were dropped. Log less, or raise the limit with \
                 `Service::max_log_bytes` or `edge.set_max_log_bytes`.",
                during = self.during
            )?,
        }
        if !self.runtime_warnings.is_empty() {
            write!(f, "\n  runtime warnings:")?;
            for warning in &self.runtime_warnings {
                write!(f, "\n    {warning}")?;
            }
        }
        if !self.logs.is_empty() {
            write!(f, "\n  logs:")?;
            for line in self.logs.lines() {
                write!(f, "\n    {} :: {}", line.endpoint, line.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for GuestFailure {}

/// The cause of a trap without wasmtime's backtrace: `wasm trap: wasm `unreachable`
/// instruction executed` rather than a dozen frames of std's abort path.
fn trap_reason(message: &str) -> String {
    match message.split_once("Caused by:") {
        Some((_, cause)) => cause.split_whitespace().collect::<Vec<_>>().join(" "),
        None => message.lines().next().unwrap_or(message).to_owned(),
    }
}

/// What the edge knows of an invocation besides its report.
pub(crate) struct Invocation<'a> {
    pub number: usize,
    pub service: &'a str,
    /// "GET /todos/1"
    pub request: &'a str,
    /// "during GET /todos/1 (invocation 2)"
    pub during: &'a str,
    pub logs: Logs,
    pub backend_calls: Vec<BackendRequest>,
}

/// What an invocation's report says, for the edge to return or panic with.
#[derive(Debug)]
pub(crate) enum Judged {
    Answered(Response),
    Failed(GuestFailure),
    /// The request never reached the guest.
    NotRun {
        reason: String,
    },
    /// The runtime's answer cannot be held in `http` types (a bug of edge-test's own).
    Invalid(WireError),
}

/// Builds the response, or the guest's failure with how far it got, from a report. A rule
/// the invocation broke (`broken`) is its failure whatever the guest did.
pub(crate) fn judge(
    report: InvocationReport,
    invocation: Invocation<'_>,
    broken: Option<GuestFailureKind>,
) -> Judged {
    let Invocation {
        number,
        service,
        request,
        during,
        logs,
        backend_calls,
    } = invocation;
    let (response, phase) = match report.response {
        Some(received) => {
            let phase = phase_of(&received);
            let response = match response_of(received, logs.clone(), backend_calls, number) {
                Ok(response) => response,
                Err(e) => return Judged::Invalid(e),
            };
            (Some(response), phase)
        }
        None => (None, FailurePhase::BeforeResponse),
    };
    let failure = |kind| GuestFailure {
        kind,
        service: service.to_owned(),
        request: request.to_owned(),
        response: response.clone(),
        phase,
        logs: logs.clone(),
        during: during.to_owned(),
        runtime_warnings: report.runtime_warnings.clone(),
    };
    if let Some(kind) = broken {
        return Judged::Failed(failure(kind));
    }
    match report.outcome {
        Outcome::Completed => match response.clone() {
            Some(response) => Judged::Answered(response),
            None => Judged::NotRun {
                reason: "the guest completed without answering".to_owned(),
            },
        },
        Outcome::Trapped { message } => {
            Judged::Failed(failure(GuestFailureKind::Trapped { message }))
        }
        Outcome::Exited { code } => Judged::Failed(failure(GuestFailureKind::Trapped {
            message: format!("the guest exited with status {code}"),
        })),
        Outcome::TimedOut { limit } => {
            Judged::Failed(failure(GuestFailureKind::TimedOut { limit }))
        }
        Outcome::NotRun { reason } => Judged::NotRun { reason },
    }
}

/// How far a guest that failed had got, from what the client received: the runtime's 500
/// (nothing was sent), a body cut short (mid-stream), or a whole response (after it).
fn phase_of(received: &ReceivedResponse) -> FailurePhase {
    if received.from_runtime {
        FailurePhase::BeforeResponse
    } else if received.body_error.is_some() {
        FailurePhase::MidStream
    } else {
        FailurePhase::AfterResponse
    }
}

fn response_of(
    received: ReceivedResponse,
    logs: Logs,
    backend_calls: Vec<BackendRequest>,
    invocation: usize,
) -> Result<Response, WireError> {
    Ok(Response {
        status: crate::wire::status(received.status)?,
        headers: crate::wire::headers_from_raw(received.headers)?,
        body: Bytes::from(received.body),
        logs,
        backend_calls,
        invocation,
        deployed: None,
    })
}

#[cfg(test)]
mod judging {
    use super::*;

    fn received(status: u16, from_runtime: bool, body_error: Option<&str>) -> ReceivedResponse {
        ReceivedResponse {
            status,
            headers: vec![("x-a".into(), b"1".to_vec())],
            body: b"body".to_vec(),
            body_error: body_error.map(str::to_owned),
            from_runtime,
        }
    }

    fn report(response: Option<ReceivedResponse>, outcome: Outcome) -> InvocationReport {
        InvocationReport {
            response,
            outcome,
            runtime_warnings: vec!["Hostcall yielded an error: x".into()],
            ..InvocationReport::not_run("")
        }
    }

    fn invocation() -> Invocation<'static> {
        Invocation {
            number: 2,
            service: "todo",
            request: "GET /",
            during: "during GET / (invocation 2)",
            logs: Logs::default(),
            backend_calls: Vec::new(),
        }
    }

    fn trapped() -> Outcome {
        Outcome::Trapped {
            message: "WebAssembly trapped: boom".into(),
        }
    }

    #[test]
    fn a_completed_invocation_is_its_response() {
        let Judged::Answered(response) = judge(
            report(Some(received(201, false, None)), Outcome::Completed),
            invocation(),
            None,
        ) else {
            panic!("answered")
        };
        assert_eq!(response.status(), 201);
        assert_eq!(response.header("x-a"), Some("1"));
        assert_eq!(response.invocation(), 2);
    }

    #[test]
    fn the_phase_of_a_failure_follows_what_the_client_received() {
        let phase = |response| match judge(report(response, trapped()), invocation(), None) {
            Judged::Failed(failure) => failure.phase(),
            other => panic!("a failure, not {other:?}"),
        };
        assert_eq!(phase(None), FailurePhase::BeforeResponse);
        assert_eq!(
            phase(Some(received(500, true, None))),
            FailurePhase::BeforeResponse,
            "the runtime's 500 is no response of the guest's"
        );
        assert_eq!(
            phase(Some(received(200, false, Some("cut short")))),
            FailurePhase::MidStream
        );
        assert_eq!(
            phase(Some(received(200, false, None))),
            FailurePhase::AfterResponse
        );
    }

    #[test]
    fn a_failure_carries_the_runtimes_warnings_and_a_time_out_its_limit() {
        let limit = std::time::Duration::from_secs(3);
        let Judged::Failed(failure) = judge(
            report(None, Outcome::TimedOut { limit }),
            invocation(),
            None,
        ) else {
            panic!("a failure")
        };
        assert!(failure.is_timeout());
        assert_eq!(failure.runtime_warnings(), ["Hostcall yielded an error: x"]);
        assert!(
            failure
                .to_string()
                .contains("was still running 3s after GET /")
        );
    }

    #[test]
    fn a_broken_rule_is_the_failure_whatever_the_guest_did() {
        let broken = GuestFailureKind::ReachedPastMocks {
            destinations: vec!["TCP 203.0.113.9:80".into()],
        };
        let Judged::Failed(failure) = judge(
            report(Some(received(200, false, None)), Outcome::Completed),
            invocation(),
            Some(broken.clone()),
        ) else {
            panic!("a failure")
        };
        assert_eq!(failure.kind(), &broken);
        assert!(
            failure.to_string().starts_with(
                "edge-test: during GET / (invocation 2) the guest of service `todo` tried to \
                 connect to TCP 203.0.113.9:80"
            ),
            "{failure}"
        );
        assert_eq!(
            failure.response().map(Response::status),
            Some(StatusCode::OK)
        );
    }

    #[test]
    fn a_status_http_cannot_hold_is_invalid_not_500() {
        let judged = judge(
            report(Some(received(1000, false, None)), Outcome::Completed),
            invocation(),
            None,
        );
        assert!(matches!(judged, Judged::Invalid(_)), "{judged:?}");
    }
}
