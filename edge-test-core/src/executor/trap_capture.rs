//! Sees how a guest ended even after it already sent its response.
//!
//! viceroy's `handle_request` returns at the guest's first response; a later trap is only
//! reported as a tracing ERROR event ("WebAssembly trapped: ...") from the task that runs the
//! guest. Each session runs its guests on a thread of its own, and this collector is that
//! thread's default tracing dispatcher, so it sees exactly that session's events.

use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

#[derive(Clone, Default)]
pub(crate) struct TrapCollector {
    errors: Arc<Mutex<Vec<String>>>,
    warnings: Arc<Mutex<Vec<String>>>,
}

/// Warnings kept per invocation: enough to explain a failure, bounded for a guest that
/// makes a failing hostcall in a loop.
const MAX_WARNINGS: usize = 20;

impl TrapCollector {
    /// The guest failures reported since the last drain: traps and non-zero exits.
    pub(crate) fn drain_guest_failures(&self) -> Vec<String> {
        std::mem::take(&mut *self.errors.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// What viceroy warned about since the last drain, each message once.
    pub(crate) fn drain_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The messages viceroy uses for a guest that did not end cleanly.
fn is_guest_failure(message: &str) -> bool {
    message.starts_with("WebAssembly trapped") || message.starts_with("WebAssembly exited with")
}

/// Where viceroy reports a hostcall that answered the guest with an error (at DEBUG: most
/// are routine, but one the guest then unwraps is the cause of its trap).
const HOSTCALL_TARGET: &str = "viceroy_lib::wiggle_abi";

impl Subscriber for TrapCollector {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event()
            && (*metadata.level() <= Level::WARN
                || (*metadata.level() == Level::DEBUG && metadata.target() == HOSTCALL_TARGET))
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        let level = *event.metadata().level();
        if level == Level::ERROR && is_guest_failure(&visitor.0) {
            self.errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(without_host_backtrace(&visitor.0));
        } else if level == Level::WARN || visitor.0.starts_with("Hostcall yielded an error") {
            let mut warnings = self.warnings.lock().unwrap_or_else(|p| p.into_inner());
            if warnings.len() < MAX_WARNINGS && !warnings.contains(&visitor.0) {
                warnings.push(visitor.0);
            }
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// With RUST_BACKTRACE set, wasmtime appends the host's stack (the runtime's frames, never
/// the guest's) to a trap; the guest's wasm backtrace and the cause come before it.
pub(crate) fn without_host_backtrace(message: &str) -> String {
    message
        .split("\nStack backtrace:")
        .next()
        .unwrap_or(message)
        .trim_end()
        .to_owned()
}

/// The backend named by viceroy's warning that a guest sent to a backend it does not know:
/// "Backend 'x' does not exist. ..." or "Attempted to access backend 'x', but ...".
pub(crate) fn undeclared_backend(warning: &str) -> Option<&str> {
    let rest = warning
        .strip_prefix("Backend '")
        .or_else(|| warning.strip_prefix("Attempted to access backend '"))?;
    let (name, after) = rest.split_once('\'')?;
    (after.starts_with(" does not exist") || after.starts_with(", but")).then_some(name)
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_only_guest_failures_on_its_own_thread() {
        let collector = TrapCollector::default();
        let dispatch = tracing::Dispatch::new(collector.clone());
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::error!(
                "WebAssembly trapped: {}",
                "wasm `unreachable` instruction executed"
            );
            tracing::error!("some other error");
            tracing::info!("WebAssembly trapped: info events are not failures");
        });
        // Events on another thread belong to another session.
        std::thread::spawn(|| tracing::error!("WebAssembly trapped: elsewhere"))
            .join()
            .unwrap();

        assert_eq!(
            collector.drain_guest_failures(),
            vec!["WebAssembly trapped: wasm `unreachable` instruction executed".to_owned()]
        );
        assert!(collector.drain_guest_failures().is_empty());
    }

    #[test]
    fn names_the_backend_of_viceroys_unknown_backend_warnings() {
        assert_eq!(
            undeclared_backend(
                "Backend 'nowhere' does not exist. Currently defined backends are: api. To \
                 define additional backends, add them to your fastly.toml file."
            ),
            Some("nowhere")
        );
        assert_eq!(
            undeclared_backend(
                "Attempted to access backend 'nowhere', but no manifest file was provided to \
                 define backends. Specify a file with -C <TOML_FILE>."
            ),
            Some("nowhere")
        );
        assert_eq!(undeclared_backend("Backend 'x' is healthy"), None);
        assert_eq!(
            undeclared_backend("Hostcall yielded an error: Unsupported"),
            None
        );
    }

    #[test]
    fn keeps_warnings_and_failed_hostcalls_once_each() {
        let collector = TrapCollector::default();
        let dispatch = tracing::Dispatch::new(collector.clone());
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::warn!("Backend 'nowhere' does not exist.");
            tracing::warn!("Backend 'nowhere' does not exist.");
            tracing::debug!(target: "viceroy_lib::wiggle_abi", "Hostcall yielded an error: Unsupported");
            tracing::debug!("Hostcall yielded an error: from elsewhere, not kept");
        });
        assert_eq!(
            collector.drain_warnings(),
            [
                "Backend 'nowhere' does not exist.",
                "Hostcall yielded an error: Unsupported"
            ]
        );
        assert!(collector.drain_guest_failures().is_empty());
    }
}
