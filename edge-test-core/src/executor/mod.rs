//! The one boundary between a test and the runtime that executes its guest.
//!
//! The runner hands an executor plain data (which service, its settings, the loopback
//! addresses of the test's mocks, one request at a time) and gets plain data back (the
//! response, the log lines, how the guest ended). Nothing on this side of the boundary
//! touches viceroy-lib, so execution can move (to a pooled, forked worker process) without
//! the public API noticing.

#[cfg(target_os = "linux")]
mod forked;
mod guest;
mod in_process;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EdgeError;

pub(crate) use guest::viceroy_compat::{parse_log, undeclared_backend};
use in_process::InProcessSession;

/// Everything an executor needs to run one test's guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionSpec {
    pub service: String,
    /// The test the session is for (`module::path::name`): named in the host's log and in
    /// the in-process guest thread's name, for whoever investigates.
    pub test: String,
    pub wasm: PathBuf,
    /// The text of the service's `fastly.toml`, already validated by the runner.
    pub fastly_toml: Option<String>,
    /// Where each backend named in `fastly.toml` is served by the test's mocks.
    pub backend_addrs: BTreeMap<String, SocketAddr>,
}

/// One downstream request, as the client sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InvocationRequest {
    pub method: String,
    /// Absolute URI (`http://host/path?query`).
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
    #[serde(with = "as_bytes")]
    pub body: Vec<u8>,
    pub client_ip: IpAddr,
    /// How long the guest may run, response and all, before it is stopped.
    pub guest_timeout: Duration,
    /// How many bytes of log output (endpoints, stdout and stderr) the invocation may
    /// write; past that, output is counted and dropped.
    pub max_log_bytes: usize,
}

/// What the client received and how the guest ended, once the guest has fully finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InvocationReport {
    /// `None` when the guest never produced a response (for example it timed out first).
    pub response: Option<ReceivedResponse>,
    /// The invocation's log output as viceroy wrote it (`<endpoint> :: <message>` lines);
    /// see [`parse_log`]. Travels beside the report, not in it (`report_wire`).
    #[serde(skip)]
    pub log: Vec<u8>,
    pub outcome: Outcome,
    /// Connections the guest tried to open to anything but its mocks, refused by the fence.
    pub refused_connections: Vec<guest::network_fence::Refused>,
    /// Log output past the invocation's `max_log_bytes`, dropped unread.
    pub dropped_log_bytes: u64,
    /// What viceroy warned about while the guest ran (an undeclared backend, a hostcall
    /// that answered with an error): the explanation of many a puzzling failure.
    pub runtime_warnings: Vec<String>,
    /// Why the guest ran without the network fence, when it did.
    pub unfenced: Option<String>,
}

impl InvocationReport {
    /// The report of a request that never reached the guest, and why.
    pub(crate) fn not_run(reason: &str) -> Self {
        Self {
            response: None,
            log: Vec::new(),
            outcome: Outcome::NotRun {
                reason: reason.to_owned(),
            },
            refused_connections: Vec::new(),
            dropped_log_bytes: 0,
            runtime_warnings: Vec::new(),
            unfenced: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReceivedResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Travels beside the report, not in it (`report_wire`).
    #[serde(skip)]
    pub body: Vec<u8>,
    /// Why the body ended early, when the guest stopped mid-stream.
    pub body_error: Option<String>,
    /// The guest failed before answering; this is the runtime's 500 in its place.
    pub from_runtime: bool,
}

/// How a guest invocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Completed,
    /// The guest trapped (a Rust panic aborts into a trap) or exited with an error.
    Trapped {
        message: String,
    },
    /// The guest was still running when its time limit ran out, and was stopped.
    TimedOut {
        limit: Duration,
    },
    /// The invocation could not run at all (the session ended earlier, or the runtime
    /// refused the request).
    NotRun {
        reason: String,
    },
}

/// Says something to whoever runs the tests, past libtest's capture of the test's output:
/// a warning about the whole run belongs to no single test.
pub(crate) fn warn(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "edge-test: warning: {message}");
}

/// Bodies as one run of bytes on the wire (serde writes a `Vec<u8>` as a sequence of
/// numbers, one call per byte).
mod as_bytes {
    use serde::{Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }
        }
        deserializer.deserialize_byte_buf(Bytes)
    }
}

/// Why an invocation cannot run once its session has ended.
pub(crate) const SESSION_ENDED: &str =
    "this edge stopped after an earlier guest ran past its time limit";

/// One test's executor: a worker forked from a compiled template (Linux, by default), or
/// a context compiled for this test alone, in process. Either way the test owns a pristine
/// context of its own.
pub(crate) enum Session {
    #[cfg(target_os = "linux")]
    Forked(forked::ForkedSession),
    InProcess(InProcessSession),
}

impl Session {
    pub(crate) fn start(spec: SessionSpec) -> Result<Self, EdgeError> {
        #[cfg(target_os = "linux")]
        if forked::enabled() {
            // Once the host is known not to be available to this process for good, every
            // later test goes straight to running in process: no retries, no sleeps, and the
            // reason said once.
            static HOST_UNAVAILABLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            if HOST_UNAVAILABLE.get().is_none() {
                match forked::ForkedSession::start(spec.clone()) {
                    Ok(session) => return Ok(Session::Forked(session)),
                    Err(forked::StartError::Service(error)) => return Err(error),
                    Err(forked::StartError::Host { reason, permanent }) => {
                        let said_before =
                            permanent && HOST_UNAVAILABLE.set(reason.clone()).is_err();
                        if !said_before {
                            // Slower, never wrong: the same test runs in process.
                            warn(&format!(
                                "{reason}; running {} in process (a compile per test)",
                                if permanent {
                                    "this process's tests"
                                } else {
                                    "this test"
                                }
                            ));
                        }
                    }
                }
            }
        }
        InProcessSession::start(spec).map(Session::InProcess)
    }

    /// Runs one request and waits, without blocking the caller's runtime, until the guest
    /// has fully finished or was stopped. Cancelled (the test stopped awaiting), the request
    /// stays outstanding until [`settle`](Self::settle) collects its report.
    pub(crate) async fn run(&self, request: InvocationRequest) -> InvocationReport {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => session.run(request).await,
            Session::InProcess(session) => session.run(request).await,
        }
    }

    /// [`run`](Self::run) for blocking callers (not from async code).
    pub(crate) fn run_blocking(&self, request: InvocationRequest) -> InvocationReport {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => session.run_blocking(request),
            Session::InProcess(session) => session.run_blocking(request),
        }
    }

    /// The report of a request whose test stopped awaiting it, once its guest finished;
    /// `None` when there is none.
    pub(crate) async fn settle(&self) -> Option<InvocationReport> {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => session.settle().await,
            Session::InProcess(session) => session.settle().await,
        }
    }

    /// [`settle`](Self::settle) for blocking callers.
    pub(crate) fn settle_blocking(&self) -> Option<InvocationReport> {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => session.settle_blocking(),
            Session::InProcess(session) => session.settle_blocking(),
        }
    }

    /// The worker process running the guest, when there is one.
    pub(crate) fn worker_pid(&self) -> Option<u32> {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => Some(session.worker_pid()),
            Session::InProcess(_) => None,
        }
    }

    /// The compiled template the worker was forked from, when there is one.
    pub(crate) fn template_id(&self) -> Option<u64> {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => Some(session.template_id()),
            Session::InProcess(_) => None,
        }
    }
}
