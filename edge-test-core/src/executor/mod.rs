//! The one boundary between a test and the runtime that executes its guest.
//!
//! The runner hands an executor plain data (which service, its settings, the loopback
//! addresses of the test's mocks, one request at a time) and gets plain data back (the
//! response, the log lines, how the guest ended): the types of `crate::wire`. Nothing on
//! this side of the boundary touches viceroy-lib, so execution can move (to a pooled,
//! forked worker process) without the public API noticing.

// The runtime proper. Compiled out of edge-test's compile-fail tests (trybuild builds
// them with `--cfg trybuild`), which check the attribute and the facade's types: they then
// need neither viceroy-lib nor wasmtime, and build in seconds rather than minutes.
#[cfg(trybuild)]
mod compiled_out;
#[cfg(all(target_os = "linux", not(trybuild)))]
mod forked;
#[cfg(not(trybuild))]
mod guest;
#[cfg(not(trybuild))]
mod in_process;

#[cfg(not(trybuild))]
use crate::error::EdgeError;

pub(crate) use crate::wire::{
    InvocationReport, InvocationRequest, Outcome, ReceivedResponse, SessionSpec,
};
#[cfg(trybuild)]
pub(crate) use compiled_out::{Refused, Session, parse_log, undeclared_backend};
#[cfg(not(trybuild))]
pub(crate) use guest::network_fence::Refused;
#[cfg(not(trybuild))]
pub(crate) use guest::viceroy_compat::{parse_log, undeclared_backend};
#[cfg(not(trybuild))]
use in_process::InProcessSession;

/// Says something to whoever runs the tests, past libtest's capture of the test's output:
/// a warning about the whole run belongs to no single test.
pub(crate) fn warn(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "edge-test: warning: {message}");
}

/// How long a template may take to compile (a large guest on a loaded machine takes
/// seconds; far beyond that the host is not compiling but stuck).
pub(crate) const TEMPLATE_COMPILE_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// How long the host (with no worker and no new test) and the runner server (with no new
/// call) wait before they exit: long enough for an edit-run loop to find its templates
/// compiled (`EDGE_TEST_HOST_IDLE_MS`, default five minutes).
pub(crate) fn idle_limit() -> std::time::Duration {
    std::env::var("EDGE_TEST_HOST_IDLE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(
            std::time::Duration::from_secs(5 * 60),
            std::time::Duration::from_millis,
        )
}

/// How much memory viceroy-lib 0.22 lets a guest have (its store limits, `linking.rs`):
/// named when a guest runs out of it.
pub(crate) const GUEST_MEMORY_MIB: usize = 128;

/// Why an invocation cannot run once its session has ended.
pub(crate) const SESSION_ENDED: &str =
    "this edge stopped after an earlier guest ran past its time limit";

/// One test's executor: a worker forked from a compiled template (Linux, by default), or
/// a context compiled for this test alone, in process. Either way the test owns a pristine
/// context of its own.
#[cfg(not(trybuild))]
pub(crate) enum Session {
    #[cfg(target_os = "linux")]
    Forked(forked::ForkedSession),
    InProcess(InProcessSession),
    /// e2e mode: no guest here, each request sent to the deployed service.
    Deployed(crate::e2e::DeployedSession),
}

#[cfg(not(trybuild))]
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
            Session::Deployed(session) => session.run(request).await,
        }
    }

    /// [`run`](Self::run) for blocking callers (not from async code).
    pub(crate) fn run_blocking(&self, request: InvocationRequest) -> InvocationReport {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => session.run_blocking(request),
            Session::InProcess(session) => session.run_blocking(request),
            Session::Deployed(session) => session.run_blocking(request),
        }
    }

    /// The report of a request whose test stopped awaiting it, once its guest finished;
    /// `None` when there is none.
    pub(crate) async fn settle(&self) -> Option<InvocationReport> {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => session.settle().await,
            Session::InProcess(session) => session.settle().await,
            // A request the test stopped awaiting was dropped with its connection.
            Session::Deployed(_) => None,
        }
    }

    /// [`settle`](Self::settle) for blocking callers.
    pub(crate) fn settle_blocking(&self) -> Option<InvocationReport> {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => session.settle_blocking(),
            Session::InProcess(session) => session.settle_blocking(),
            Session::Deployed(_) => None,
        }
    }

    /// The exchanges with a deployment (e2e mode), as text; none for a local session.
    pub(crate) fn deployed_exchanges(&self) -> Vec<String> {
        match self {
            Session::Deployed(session) => session.exchanges(),
            _ => Vec::new(),
        }
    }

    /// The worker process running the guest, when there is one.
    pub(crate) fn worker_pid(&self) -> Option<u32> {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => Some(session.worker_pid()),
            Session::InProcess(_) | Session::Deployed(_) => None,
        }
    }

    /// The compiled template the worker was forked from, when there is one.
    pub(crate) fn template_id(&self) -> Option<u64> {
        match self {
            #[cfg(target_os = "linux")]
            Session::Forked(session) => Some(session.template_id()),
            Session::InProcess(_) | Session::Deployed(_) => None,
        }
    }
}
