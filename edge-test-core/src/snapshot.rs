//! The text form of responses and logs that snapshot assertions store.
//!
//! Stable and readable: status, headers sorted by name, JSON bodies pretty-printed, text as
//! text, binary summarised. Headers that identify a request (`date`, request ids) are
//! replaced here; values that change from run to run anywhere in the text (dates,
//! timestamps, UUIDs, loopback ports) are replaced by insta filters, [`DEFAULT_FILTERS`],
//! which `edge_test::assert_snapshot!` adds to the insta settings in force: add your own
//! with `insta::Settings` around the assertion, or leave the defaults out with
//! [`without_default_filters`].

use std::cell::Cell;

use crate::logs::Logs;
use crate::response::Response;

/// Headers whose values identify a single request rather than describe the response.
const PER_REQUEST_HEADERS: &[&str] = &[
    "x-request-id",
    "x-trace-id",
    "fastly-trace-id",
    "x-served-by",
    "x-timer",
];

/// Headers the delivery path adds to a deployed service's response (e2e mode) and a local run
/// has not: left out of its snapshot, so that one snapshot serves both runs.
const DELIVERY_HEADERS: &[&str] = &[
    "date",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "via",
    "alt-svc",
    "age",
    "x-served-by",
    "x-timer",
    "x-cache-hits",
];

/// Values that can be snapshotted with `edge_test::assert_snapshot!`.
pub trait Snapshot {
    /// The snapshot text, redactions applied.
    fn to_snapshot(&self) -> String;
}

/// The snapshot text of `value`. Called by `edge_test::assert_snapshot!`.
pub fn render(value: &impl Snapshot) -> String {
    value.to_snapshot()
}

impl Snapshot for Response {
    fn to_snapshot(&self) -> String {
        let mut out = format!("status: {}\n", self.status());
        let mut headers: Vec<(String, String)> = self
            .headers()
            .iter()
            .filter(|(name, _)| {
                self.deployed.is_none() || !DELIVERY_HEADERS.contains(&name.as_str())
            })
            .map(|(name, value)| {
                let value = if name == http::header::DATE {
                    "[date]".to_owned()
                } else if PER_REQUEST_HEADERS.contains(&name.as_str()) {
                    "[request-id]".to_owned()
                } else {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                };
                (name.as_str().to_owned(), value)
            })
            .collect();
        headers.sort();
        out.push_str("headers:\n");
        for (name, value) in headers {
            out.push_str(&format!("  {name}: {value}\n"));
        }
        out.push_str(&render_body(self.bytes()));
        out
    }
}

impl Snapshot for Logs {
    fn to_snapshot(&self) -> String {
        if self.is_empty() {
            return "(no log lines)\n".to_owned();
        }
        self.lines()
            .iter()
            .map(|l| format!("{} :: {}\n", l.endpoint, l.message))
            .collect()
    }
}

impl<T: Snapshot> Snapshot for &T {
    fn to_snapshot(&self) -> String {
        (*self).to_snapshot()
    }
}

fn render_body(body: &[u8]) -> String {
    if body.is_empty() {
        return "body: (empty)\n".to_owned();
    }
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let pretty = serde_json::to_string_pretty(&json).expect("a JSON value serializes");
        return format!("body (json):\n{pretty}\n");
    }
    match std::str::from_utf8(body) {
        Ok(text) if !text.contains('\0') => {
            let mut text = text.to_owned();
            if !text.ends_with('\n') {
                text.push('\n');
            }
            format!("body (text):\n{text}")
        }
        _ => {
            let head: String = body.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("body (binary): {} bytes, starting {head}\n", body.len())
        }
    }
}

/// What differs between runs, as insta filters (a regex and its replacement, which names
/// what was there): HTTP dates, RFC 3339 timestamps, UUIDs, loopback ports.
pub const DEFAULT_FILTERS: &[(&str, &str)] = &[
    (
        r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT",
        "[date]",
    ),
    (
        r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?",
        "[timestamp]",
    ),
    (
        r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
        "[uuid]",
    ),
    (r"(127\.0\.0\.1|localhost|\[::1\]):\d{1,5}\b", "$1:[port]"),
];

thread_local! {
    static DEFAULTS_ON: Cell<bool> = const { Cell::new(true) };
}

/// Runs `assertions` without [`DEFAULT_FILTERS`]: only the filters of the insta settings in
/// force apply (to replace the defaults rather than add to them).
///
/// ```no_run
/// # fn f(resp: edge_test_core::Response) {
/// edge_test_core::snapshot::without_default_filters(|| {
///     // edge_test::assert_snapshot!(resp);  // only your own filters apply here
/// });
/// # }
/// ```
pub fn without_default_filters<R>(assertions: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEFAULTS_ON.with(|on| on.set(self.0));
        }
    }
    let _restore = Restore(DEFAULTS_ON.with(|on| on.replace(false)));
    assertions()
}

/// The filters `edge_test::assert_snapshot!` adds to the insta settings in force: the
/// defaults, unless inside [`without_default_filters`]. Not a public API.
#[doc(hidden)]
pub fn filters() -> &'static [(&'static str, &'static str)] {
    if DEFAULTS_ON.with(Cell::get) {
        DEFAULT_FILTERS
    } else {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(text: &str) -> String {
        DEFAULT_FILTERS
            .iter()
            .fold(text.to_owned(), |text, (pattern, replacement)| {
                regex::Regex::new(pattern)
                    .unwrap()
                    .replace_all(&text, *replacement)
                    .into_owned()
            })
    }

    #[test]
    fn the_default_filters_hide_what_changes_between_runs() {
        assert_eq!(
            redact(
                "at Sun, 22 Nov 2026 10:01:02 GMT from 127.0.0.1:43127 id 123e4567-e89b-12d3-a456-426614174000"
            ),
            "at [date] from 127.0.0.1:[port] id [uuid]"
        );
        assert_eq!(
            redact("created 2026-11-22T10:01:02.123Z"),
            "created [timestamp]"
        );
        assert_eq!(
            redact("port 8080 stays, todo 1 stays"),
            "port 8080 stays, todo 1 stays"
        );
    }

    #[test]
    fn the_defaults_can_be_left_out_in_a_scope() {
        assert_eq!(filters().len(), DEFAULT_FILTERS.len());
        without_default_filters(|| assert!(filters().is_empty()));
        assert_eq!(
            filters().len(),
            DEFAULT_FILTERS.len(),
            "restored after the scope"
        );
    }

    #[test]
    fn bodies_render_by_kind() {
        assert_eq!(render_body(b""), "body: (empty)\n");
        assert_eq!(
            render_body(br#"{"b":1,"a":[true]}"#),
            "body (json):\n{\n  \"a\": [\n    true\n  ],\n  \"b\": 1\n}\n"
        );
        assert_eq!(render_body(b"hello"), "body (text):\nhello\n");
        assert_eq!(
            render_body(&[0, 159, 146, 150]),
            "body (binary): 4 bytes, starting 009f9296\n"
        );
    }
}
