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
pub(super) struct TrapCollector {
    errors: Arc<Mutex<Vec<String>>>,
}

impl TrapCollector {
    /// The guest failures reported since the last drain: traps and non-zero exits.
    pub(super) fn drain_guest_failures(&self) -> Vec<String> {
        std::mem::take(&mut *self.errors.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The messages viceroy uses for a guest that did not end cleanly.
fn is_guest_failure(message: &str) -> bool {
    message.starts_with("WebAssembly trapped") || message.starts_with("WebAssembly exited with")
}

impl Subscriber for TrapCollector {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() == Level::ERROR
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        if is_guest_failure(&visitor.0) {
            self.errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(without_host_backtrace(&visitor.0));
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// With RUST_BACKTRACE set, wasmtime appends the host's stack (the runtime's frames, never
/// the guest's) to a trap; the guest's wasm backtrace and the cause come before it.
pub(super) fn without_host_backtrace(message: &str) -> String {
    message
        .split("\nStack backtrace:")
        .next()
        .unwrap_or(message)
        .trim_end()
        .to_owned()
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
}
