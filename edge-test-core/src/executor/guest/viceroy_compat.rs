//! Everything edge-test assumes about viceroy-lib 0.22.0 that its types do not promise:
//! the formats of its messages and logs, how a guest's end can be observed, the address it
//! gives the edge. Each assumption is here, with a unit test of its format and, named in
//! its docs, the integration test that fails against the real runtime if it breaks: so
//! upgrading viceroy-lib is a review of this one file.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use viceroy_lib::ExecuteCtx;

use crate::executor::Outcome;
use crate::logs::LogLine;

/// The address the guest sees as the edge's own (`local`): what Viceroy's CLI listens on.
pub(crate) const EDGE_ADDR: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7676));

/// How often a forked worker advances wasmtime's epoch. viceroy's own epoch thread (every
/// 50 µs, started by `ExecuteCtx::build`) does not survive a fork, and without ticks a guest
/// never yields, so it could never be stopped. Pinned by `guest_fate`'s time-limit tests.
pub(crate) const WORKER_EPOCH_TICK: Duration = Duration::from_millis(10);

/// The messages viceroy uses for a guest that did not end cleanly: tracing ERROR events
/// from the task that runs it (the only sign of a trap after `send_to_client`). Pinned by
/// `guest_fate`.
pub(crate) fn is_guest_failure(message: &str) -> bool {
    message.starts_with("WebAssembly trapped") || message.starts_with("WebAssembly exited with")
}

/// Where viceroy reports a hostcall that answered the guest with an error (at DEBUG: most
/// are routine, but one the guest then unwraps is the cause of its trap).
pub(crate) const HOSTCALL_TARGET: &str = "viceroy_lib::wiggle_abi";

/// viceroy's DEBUG event for a hostcall that answered the guest with an error. Pinned by
/// `faults::a_failing_hostcall_shows_in_the_guests_failure`.
pub(crate) fn is_failed_hostcall(message: &str) -> bool {
    message.starts_with("Hostcall yielded an error")
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

/// How a guest run as a command ended, from what `ExecuteCtx::run_main` returned: a
/// `proc_exit` is an `I32Exit` error (status 0 is a success, as libtest's passing run
/// ends), anything else is a trap. Pinned by `guest_tests`.
pub(crate) fn command_outcome(ended: Result<(), anyhow::Error>) -> Outcome {
    match ended {
        Ok(()) => Outcome::Completed,
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(wasmtime_wasi::I32Exit(0)) => Outcome::Completed,
            Some(wasmtime_wasi::I32Exit(code)) => Outcome::Exited { code: *code },
            None => Outcome::Trapped {
                message: without_host_backtrace(&format!("WebAssembly trapped: {e:?}")),
            },
        },
    }
}

/// The backend named by viceroy's warning that a guest sent to a backend it does not know
/// (pinned by `faults::a_backend_fastly_toml_does_not_declare_fails_the_test`):
/// "Backend 'x' does not exist. ..." or "Attempted to access backend 'x', but ...".
pub(crate) fn undeclared_backend(warning: &str) -> Option<&str> {
    let rest = warning
        .strip_prefix("Backend '")
        .or_else(|| warning.strip_prefix("Attempted to access backend '"))?;
    let (name, after) = rest.split_once('\'')?;
    (after.starts_with(" does not exist") || after.starts_with(", but")).then_some(name)
}

/// A guest that fails before answering gets a 500 from viceroy whose body is the error,
/// formatted exactly as in the failure event. Pinned by `guest_fate`'s failures before the
/// response.
pub(crate) fn is_runtime_error_response(status: u16, body: &[u8], failure: &str) -> bool {
    let error = failure.split_once(": ").map_or(failure, |(_, error)| error);
    status == 500 && without_host_backtrace(&String::from_utf8_lossy(body)) == error
}

/// The guest's task holds clones of the context until its store is dropped, so the count
/// returning to what it was before the request means the guest has fully finished. Pinned
/// by `guest_fate`'s logs-after-send tests.
pub(crate) async fn wait_for_guest_exit(ctx: &Arc<ExecuteCtx>, idle_refs: usize) {
    let mut spins = 0u32;
    while Arc::strong_count(ctx) > idle_refs {
        // A guest finishing right after its response is the common case: yield first, and
        // only fall back to the timer (1 ms resolution) for guests that keep working.
        if spins < 64 {
            spins += 1;
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The log sink's bytes as lines. viceroy writes each entry as `<endpoint> :: <message>`
/// and a newline, one write per entry, inner newlines of stdout and stderr escaped. One
/// line per entry for log endpoints (each `write` is one log message, as on Fastly).
/// stdout and stderr are byte streams, so their entries are split into lines instead: a
/// Rust panic arrives as one write, `"\nthread 'main' panicked at ...:\n<message>"`.
pub(crate) fn parse_log(bytes: &[u8]) -> Vec<LogLine> {
    let mut lines = Vec::new();
    for entry in String::from_utf8_lossy(bytes).lines() {
        let (endpoint, message) = entry.split_once(" :: ").unwrap_or(("", entry));
        let line = |message: &str| LogLine {
            endpoint: endpoint.to_owned(),
            message: message.to_owned(),
        };
        if endpoint == "stdout" || endpoint == "stderr" {
            // viceroy escapes a message's inner newlines as `\n`.
            lines.extend(message.split("\\n").filter(|l| !l.is_empty()).map(line));
        } else {
            lines.push(line(message));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_failures_are_traps_and_error_exits() {
        assert!(is_guest_failure(
            "WebAssembly trapped: wasm `unreachable` instruction executed"
        ));
        assert!(is_guest_failure("WebAssembly exited with error: Exit(1)"));
        assert!(!is_guest_failure("some other error"));
    }

    #[test]
    fn the_hosts_backtrace_is_cut_from_a_trap() {
        assert_eq!(
            without_host_backtrace(
                "WebAssembly trapped: boom\n0: main\nStack backtrace:\n 0: host"
            ),
            "WebAssembly trapped: boom\n0: main"
        );
    }

    #[test]
    fn the_runtimes_500_carries_the_error() {
        let failure = "WebAssembly trapped: error while executing";
        assert!(is_runtime_error_response(
            500,
            b"error while executing",
            failure
        ));
        assert!(!is_runtime_error_response(
            500,
            b"the guest's own 500",
            failure
        ));
        assert!(!is_runtime_error_response(
            200,
            b"error while executing",
            failure
        ));
    }

    #[test]
    fn failed_hostcalls_are_recognised() {
        assert!(is_failed_hostcall(
            "Hostcall yielded an error: Unknown dictionary"
        ));
        assert!(!is_failed_hostcall("Backend 'x' does not exist."));
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
    fn drain_splits_entries_by_endpoint_and_empties_the_sink() {
        let sink = super::super::log_sink::LogSink::default();
        sink.begin(usize::MAX);
        let writer = sink.as_writer();
        writer
            .lock()
            .unwrap()
            .write_all(b"access :: GET / 200\n")
            .unwrap();
        writer
            .lock()
            .unwrap()
            .write_all(b"stderr :: a :: b\n")
            .unwrap();
        writer
            .lock()
            .unwrap()
            .write_all(b"stderr :: \\nthread 'main' panicked at src/main.rs:1:1:\\nboom\n")
            .unwrap();
        writer
            .lock()
            .unwrap()
            .write_all(b"audit :: kept \\n as written\n")
            .unwrap();

        let lines = parse_log(&sink.drain().bytes);
        assert_eq!(
            lines,
            vec![
                LogLine {
                    endpoint: "access".into(),
                    message: "GET / 200".into()
                },
                LogLine {
                    endpoint: "stderr".into(),
                    message: "a :: b".into()
                },
                LogLine {
                    endpoint: "stderr".into(),
                    message: "thread 'main' panicked at src/main.rs:1:1:".into()
                },
                LogLine {
                    endpoint: "stderr".into(),
                    message: "boom".into()
                },
                LogLine {
                    endpoint: "audit".into(),
                    message: "kept \\n as written".into()
                },
            ]
        );
        assert!(
            sink.drain().bytes.is_empty(),
            "a drained sink starts the next invocation empty"
        );
    }
}
