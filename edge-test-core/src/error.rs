//! Everything that can stop an edge from starting, each with the fix in its message.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Why an [`Edge`](crate::Edge) could not be set up for a test.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum EdgeError {
    /// The test names a service that no `register_service!` in this test binary declares.
    UnknownService {
        name: String,
        registered: Vec<String>,
    },
    /// A prebuilt `.wasm` is missing or unreadable.
    WasmUnreadable {
        service: String,
        path: PathBuf,
        reason: String,
    },
    /// The runtime could not load the module: not wasm, or imports it does not provide.
    GuestLoad {
        service: String,
        wasm: PathBuf,
        reason: String,
    },
    /// `cargo build` of the guest crate failed; `output` is what cargo printed.
    GuestBuild {
        service: String,
        crate_dir: PathBuf,
        output: String,
    },
    /// The Rust target guests are built for is not installed.
    WasmTargetMissing { target: String },
    /// The service's `fastly.toml` is missing or invalid.
    Manifest {
        service: String,
        path: PathBuf,
        reason: String,
    },
    /// `register_service!` declares the same name twice in this test binary.
    DuplicateService { name: String },
    /// An operating-system resource the edge needs could not be had: a thread, a socket,
    /// a file, a process. `what` says which, and what for; `source` is the system's error.
    Io {
        what: String,
        source: Arc<std::io::Error>,
    },
    /// The edge-test host could not give this test a worker (a template that did not
    /// compile in time, a fork that failed). Running the test again may well succeed.
    Host { reason: String },
}

impl EdgeError {
    /// An [`EdgeError::Io`]: `what` failed with `source`.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        EdgeError::Io {
            what: what.into(),
            source: Arc::new(source),
        }
    }
}

impl fmt::Display for EdgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgeError::UnknownService { name, registered } if registered.is_empty() => write!(
                f,
                "edge-test: unknown service `{name}`: this test binary registers no services. \
                 Add `edge_test::register_service!(\"{name}\", ...)` to the test crate."
            ),
            EdgeError::UnknownService { name, registered } => write!(
                f,
                "edge-test: unknown service `{name}`. Registered services: {}. \
                 Fix the name in #[edge_test(service = ...)] or register `{name}` with \
                 `edge_test::register_service!`.",
                registered
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            EdgeError::WasmUnreadable {
                service,
                path,
                reason,
            } => write!(
                f,
                "edge-test: service `{service}`: cannot read its wasm module at {}: {reason}. \
                 Build the guest first, or fix the path given to `Service::wasm`.",
                path.display()
            ),
            EdgeError::GuestLoad {
                service,
                wasm,
                reason,
            } => write!(
                f,
                "edge-test: service `{service}`: the runtime cannot load {}: {reason}. \
                 The module must be a Fastly Compute program built for wasm32-wasip1 \
                 (for Rust: the `fastly` crate).",
                wasm.display()
            ),
            EdgeError::GuestBuild {
                service,
                crate_dir,
                output,
            } => write!(
                f,
                "edge-test: service `{service}`: building the guest crate at {} for \
                 wasm32-wasip1 failed. Fix the errors below and run the test again.\n\
                 --- cargo output ---\n{output}",
                crate_dir.display()
            ),
            EdgeError::WasmTargetMissing { target } => write!(
                f,
                "edge-test: the Rust target `{target}` is not installed, so guests cannot be \
                 built. Run `rustup target add {target}` (or list it under `targets` in \
                 rust-toolchain.toml)."
            ),
            EdgeError::Manifest {
                service,
                path,
                reason,
            } => write!(
                f,
                "edge-test: service `{service}`: invalid fastly.toml at {}: {reason}",
                path.display()
            ),
            EdgeError::DuplicateService { name } => write!(
                f,
                "edge-test: service `{name}` is registered more than once in this test binary; \
                 keep one `register_service!(\"{name}\", ...)`"
            ),
            EdgeError::Io { what, source } => write!(f, "edge-test: {what}: {source}"),
            EdgeError::Host { reason } => write!(f, "edge-test: {reason}"),
        }
    }
}

impl std::error::Error for EdgeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EdgeError::Io { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_keeps_its_source() {
        let error = EdgeError::io(
            "cannot start the guest thread",
            std::io::Error::from(std::io::ErrorKind::OutOfMemory),
        );
        assert_eq!(
            error.to_string(),
            "edge-test: cannot start the guest thread: out of memory"
        );
        let source = std::error::Error::source(&error).expect("the io error");
        assert_eq!(source.to_string(), "out of memory");
    }
}
