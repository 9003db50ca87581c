//! What the edge needs of the executor, with no runtime behind it: compiled into
//! edge-test's compile-fail tests only (`--cfg trybuild`), where no test runs.

use crate::error::EdgeError;
use crate::logs::LogLine;
use crate::wire::{InvocationReport, InvocationRequest, SessionSpec};

pub(crate) type Refused = String;

pub(crate) enum Session {
    Deployed(crate::e2e::DeployedSession),
}

impl Session {
    pub(crate) fn start(_spec: SessionSpec) -> Result<Self, EdgeError> {
        Err(EdgeError::Host {
            reason: "this build of edge-test has no runtime (--cfg trybuild)".to_owned(),
        })
    }

    pub(crate) async fn run(&self, request: InvocationRequest) -> InvocationReport {
        let Session::Deployed(session) = self;
        session.run(request).await
    }

    pub(crate) fn run_blocking(&self, request: InvocationRequest) -> InvocationReport {
        let Session::Deployed(session) = self;
        session.run_blocking(request)
    }

    pub(crate) async fn settle(&self) -> Option<InvocationReport> {
        None
    }

    pub(crate) fn settle_blocking(&self) -> Option<InvocationReport> {
        None
    }

    pub(crate) fn deployed_exchanges(&self) -> Vec<String> {
        let Session::Deployed(session) = self;
        session.exchanges()
    }

    pub(crate) fn worker_pid(&self) -> Option<u32> {
        None
    }

    pub(crate) fn template_id(&self) -> Option<u64> {
        None
    }
}

pub(crate) fn parse_log(_bytes: &[u8]) -> Vec<LogLine> {
    Vec::new()
}

pub(crate) fn undeclared_backend(_warning: &str) -> Option<&str> {
    None
}
