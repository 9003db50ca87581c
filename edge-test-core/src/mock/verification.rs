//! What the mocks report to the test: structured, so they can be checked without a guest,
//! and written out by `Display` in the words the test's failure shows.

use std::fmt;

use super::mounted::Unmet;

/// A request, as a report names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// "GET /todos/1"
    pub summary: String,
    pub invocation: usize,
}

/// Something that went wrong while a mock served, reported after the invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MockFailure {
    /// No mounted mock matched a request.
    Unmatched {
        backend: String,
        /// A dynamic backend's target rather than a declared backend.
        dynamic: bool,
        request: Seen,
        /// Each mounted mock, described, with how often it answered.
        mounted: Vec<(String, u64)>,
    },
    /// A `respond_with_fn` closure panicked.
    ResponderPanicked {
        backend: String,
        request: String,
        message: String,
    },
    /// A request edge-test's own types cannot hold (a bug of edge-test's).
    Unrepresentable { backend: String, reason: String },
    /// A request no mock matched, and the backend's cassette could not answer.
    Cassette {
        backend: String,
        request: Seen,
        report: String,
    },
    /// The process a backend is routed to did not answer.
    Process {
        backend: String,
        request: Seen,
        report: String,
    },
    /// The service a backend is routed to failed to answer.
    Service {
        backend: String,
        request: Seen,
        failure: String,
    },
    /// A dynamic backend to a target the test mounted no mocks for.
    UnmockedDynamic {
        name: String,
        target: String,
        request: Seen,
    },
}

impl fmt::Display for MockFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MockFailure::Process {
                backend,
                request,
                report,
            } => write!(
                f,
                "edge-test: backend `{backend}` received {} (invocation {}), and its {report}",
                request.summary, request.invocation
            ),
            MockFailure::Service {
                backend,
                request,
                failure,
            } => write!(
                f,
                "edge-test: backend `{backend}` received {} (invocation {}), and the {failure}",
                request.summary, request.invocation
            ),
            MockFailure::Cassette {
                backend,
                request,
                report,
            } => write!(
                f,
                "edge-test: backend `{backend}` received {} (invocation {}), which no mock \
                 matched and its {report}",
                request.summary, request.invocation
            ),
            MockFailure::Unmatched {
                backend,
                dynamic,
                request,
                mounted,
            } => {
                writeln!(
                    f,
                    "edge-test: backend `{backend}` received {} (invocation {}) but no mock \
                     matched it.",
                    request.summary, request.invocation
                )?;
                writeln!(f, "  mounted on `{backend}`:")?;
                if mounted.is_empty() {
                    writeln!(f, "    (no mocks mounted)")?;
                }
                for (mock, hits) in mounted {
                    writeln!(f, "    - [{mock}] used {hits} time(s)")?;
                }
                let method = if *dynamic {
                    "dynamic_backend"
                } else {
                    "backend"
                };
                write!(
                    f,
                    "  Mount one with `Mock::given(..).respond_with(..).mount(&edge.{method}(\"{backend}\"))`."
                )
            }
            MockFailure::ResponderPanicked {
                backend,
                request,
                message,
            } => write!(
                f,
                "edge-test: the mock closure on backend `{backend}` panicked while answering \
                 {request}: {message}"
            ),
            MockFailure::UnmockedDynamic {
                name,
                target,
                request,
            } => write!(
                f,
                "edge-test: the guest sent {} (invocation {}) to dynamic backend `{name}` at \
                 {target}, which has no mocks.\n  Mount one with \
                 `Mock::given(..).respond_with(..).mount(&edge.dynamic_backend(\"{target}\"))`.",
                request.summary, request.invocation
            ),
            MockFailure::Unrepresentable { backend, reason } => write!(
                f,
                "edge-test: backend `{backend}` received a request edge-test cannot represent \
                 (invalid {reason}); this is a bug in edge-test, please report it"
            ),
        }
    }
}

/// The backends whose mocks' expectations were not met, each with what it received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnmetExpectations {
    pub backends: Vec<UnmetOnBackend>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnmetOnBackend {
    pub backend: String,
    pub unmet: Vec<Unmet>,
    pub received: Vec<Seen>,
}

impl fmt::Display for UnmetExpectations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "edge-test: mock expectations were not met:")?;
        for on in &self.backends {
            let backend = &on.backend;
            for unmet in &on.unmet {
                writeln!(
                    f,
                    "  - backend `{backend}`: mock [{}] expected {} call(s), received {}",
                    unmet.mock, unmet.expected, unmet.hits
                )?;
            }
            writeln!(f, "    requests backend `{backend}` received:")?;
            if on.received.is_empty() {
                writeln!(f, "      (none)")?;
            }
            for (i, seen) in on.received.iter().enumerate() {
                writeln!(
                    f,
                    "      {}. {} (invocation {})",
                    i + 1,
                    seen.summary,
                    seen.invocation
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::Times;

    #[test]
    fn an_unmatched_request_names_the_backend_the_request_and_the_mounted_mocks() {
        let failure = MockFailure::Unmatched {
            backend: "origin".into(),
            dynamic: false,
            request: Seen {
                summary: "GET /todos/2".into(),
                invocation: 3,
            },
            mounted: vec![("path == /todos/1".into(), 2)],
        };
        assert_eq!(
            failure.to_string(),
            "edge-test: backend `origin` received GET /todos/2 (invocation 3) but no mock \
             matched it.\n  mounted on `origin`:\n    - [path == /todos/1] used 2 time(s)\n  \
             Mount one with `Mock::given(..).respond_with(..).mount(&edge.backend(\"origin\"))`."
        );
    }

    #[test]
    fn unmet_expectations_list_what_each_backend_received() {
        let report = UnmetExpectations {
            backends: vec![UnmetOnBackend {
                backend: "origin".into(),
                unmet: vec![Unmet {
                    mock: "path == /a".into(),
                    expected: Times::from(1),
                    hits: 0,
                }],
                received: vec![Seen {
                    summary: "GET /b".into(),
                    invocation: 1,
                }],
            }],
        };
        assert_eq!(
            report.to_string(),
            "edge-test: mock expectations were not met:\n  - backend `origin`: mock \
             [path == /a] expected exactly 1 call(s), received 0\n    requests backend \
             `origin` received:\n      1. GET /b (invocation 1)\n"
        );
    }
}
