//! The one boundary between a test and the runtime that executes its guest.
//!
//! The runner hands an executor plain data (which service, its settings, the loopback
//! addresses of the test's mocks, one request at a time) and gets plain data back (the
//! response, the log lines, how the guest ended). Nothing on this side of the boundary
//! touches viceroy-lib, so execution can move (to a pooled, forked worker process) without
//! the public API noticing.

mod in_process;
mod log_sink;
mod trap_capture;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::EdgeError;

pub(crate) use in_process::InProcessSession as Session;

/// Everything an executor needs to run one test's guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionSpec {
    pub service: String,
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
    pub body: Vec<u8>,
    pub client_ip: IpAddr,
    /// How long the guest may run, response and all, before it is stopped.
    pub guest_timeout: Duration,
}

/// What the client received and how the guest ended, once the guest has fully finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InvocationReport {
    /// `None` when the guest never produced a response (for example it timed out first).
    pub response: Option<ReceivedResponse>,
    pub log_lines: Vec<LogLine>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ReceivedResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Why the body ended early, when the guest stopped mid-stream.
    pub body_error: Option<String>,
    /// The guest failed before answering; this is the runtime's 500 in its place.
    pub from_runtime: bool,
}

/// One entry a guest wrote to a log endpoint (`stdout` and `stderr` included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub endpoint: String,
    pub message: String,
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

/// Why an invocation cannot run once its session has ended.
pub(crate) const SESSION_ENDED: &str =
    "this edge stopped after an earlier guest ran past its time limit";

/// Starts the executor for one test. The in-process executor compiles the service for this
/// test alone; isolation comes from every test owning its own context.
pub(crate) fn start_session(spec: SessionSpec) -> Result<Session, EdgeError> {
    Session::start(spec)
}
