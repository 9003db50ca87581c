//! Runs a test's guest on viceroy-lib inside the test process, on a thread of its own.
//!
//! Why a thread per session: viceroy keeps running a guest in a spawned task after its first
//! response, and offers no way to stop one. Owning the tokio runtime that runs it means a
//! guest past its time limit is stopped by dropping that runtime (wasmtime's epoch callback
//! yields, so the guest's task is dropped at its next yield). The thread also scopes the
//! tracing dispatcher that observes traps to this session's guests alone.

use std::sync::mpsc;

use super::guest::{CompiledGuest, GuestRunner};
use super::{InvocationReport, InvocationRequest, Outcome, SESSION_ENDED, SessionSpec};
use crate::error::EdgeError;

type Reply = tokio::sync::oneshot::Sender<InvocationReport>;

pub(crate) struct InProcessSession {
    commands: Option<mpsc::Sender<(InvocationRequest, Reply)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The report of the request in flight: kept here, not in the caller's future, so that
    /// a request whose test stopped awaiting it can still be settled.
    outstanding: tokio::sync::Mutex<Option<Report>>,
}

impl InProcessSession {
    pub(crate) fn start(mut spec: SessionSpec) -> Result<Self, EdgeError> {
        // The process's stdout and stderr are the test's and its other sessions': the
        // guest's go to the log sink.
        spec.capture_stdio = false;
        let guest = CompiledGuest::compile(&spec)?;
        Self::serve(&spec.test, guest)
    }

    /// Runs invocations of `guest` on a thread of its own until the session is dropped.
    pub(crate) fn serve(test: &str, guest: CompiledGuest) -> Result<Self, EdgeError> {
        let (commands, inbox) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("edge-test guest [{test}]"))
            .spawn(move || guest_thread(guest, inbox))
            .map_err(|e| EdgeError::io("cannot start the guest thread", e))?;
        Ok(Self {
            commands: Some(commands),
            thread: Some(thread),
            outstanding: tokio::sync::Mutex::new(None),
        })
    }

    /// Starts one request; its report is ready once the guest has fully finished (or was
    /// stopped).
    fn invoke(&self, request: InvocationRequest) -> Report {
        let (reply, report) = tokio::sync::oneshot::channel();
        if let Some(commands) = &self.commands {
            // A session that ended drops the request, and with it `reply`: `wait` sees that.
            let _ = commands.send((request, reply));
        }
        report
    }

    pub(crate) async fn run(&self, request: InvocationRequest) -> InvocationReport {
        let mut outstanding = self.outstanding.lock().await;
        if let Some(abandoned) = outstanding.as_mut() {
            // The edge settles an abandoned request first; even if not, never shift by one.
            let _ = abandoned.await;
        }
        let report = outstanding.insert(self.invoke(request));
        let report = report.await;
        *outstanding = None;
        report.unwrap_or_else(|_| InvocationReport::not_run(SESSION_ENDED))
    }

    pub(crate) fn run_blocking(&self, request: InvocationRequest) -> InvocationReport {
        let mut outstanding = self.outstanding.blocking_lock();
        if let Some(abandoned) = outstanding.take() {
            let _ = abandoned.blocking_recv();
        }
        self.invoke(request)
            .blocking_recv()
            .unwrap_or_else(|_| InvocationReport::not_run(SESSION_ENDED))
    }

    pub(crate) async fn settle(&self) -> Option<InvocationReport> {
        let mut outstanding = self.outstanding.lock().await;
        let report = outstanding.as_mut()?.await;
        *outstanding = None;
        Some(report.unwrap_or_else(|_| InvocationReport::not_run(SESSION_ENDED)))
    }

    pub(crate) fn settle_blocking(&self) -> Option<InvocationReport> {
        let report = self.outstanding.blocking_lock().take()?.blocking_recv();
        Some(report.unwrap_or_else(|_| InvocationReport::not_run(SESSION_ENDED)))
    }
}

/// Where the report of one request arrives.
type Report = tokio::sync::oneshot::Receiver<InvocationReport>;

impl Drop for InProcessSession {
    fn drop(&mut self) {
        // Closing the channel ends the guest thread, which drops the runtime and the context.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn guest_thread(guest: CompiledGuest, inbox: mpsc::Receiver<(InvocationRequest, Reply)>) {
    let mut runner = match GuestRunner::new(guest) {
        Ok(runner) => runner,
        Err(reason) => {
            // Every request of this session is refused with the reason.
            while let Ok((_, reply)) = inbox.recv() {
                let _ = reply.send(InvocationReport::not_run(&reason));
            }
            return;
        }
    };
    while let Ok((request, reply)) = inbox.recv() {
        let report = runner.run(request);
        let timed_out = matches!(report.outcome, Outcome::TimedOut { .. });
        let _ = reply.send(report);
        if timed_out {
            // The guest may still be running: only dropping its runtime stops it, and the
            // context it ran in can no longer be trusted, so this session ends. Later
            // requests are refused as soon as the inbox is gone.
            break;
        }
    }
}
