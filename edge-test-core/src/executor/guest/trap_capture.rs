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

use super::viceroy_compat;

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
        std::mem::take(&mut *crate::sync::lock(&self.errors))
    }

    /// What viceroy warned about since the last drain, each message once.
    pub(crate) fn drain_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *crate::sync::lock(&self.warnings))
    }
}

impl Subscriber for TrapCollector {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.is_event()
            && (*metadata.level() <= Level::WARN
                || (*metadata.level() == Level::DEBUG
                    && metadata.target() == viceroy_compat::HOSTCALL_TARGET))
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
        if level == Level::ERROR && viceroy_compat::is_guest_failure(&visitor.0) {
            crate::sync::lock(&self.errors)
                .push(viceroy_compat::without_host_backtrace(&visitor.0));
        } else if level == Level::WARN || viceroy_compat::is_failed_hostcall(&visitor.0) {
            let mut warnings = crate::sync::lock(&self.warnings);
            if warnings.len() < MAX_WARNINGS && !warnings.contains(&visitor.0) {
                warnings.push(visitor.0);
            }
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
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
