//! The text form of responses and logs that snapshot assertions store.
//!
//! Stable and readable: status, headers sorted by name, JSON bodies pretty-printed, text as
//! text, binary summarised. Values that change from run to run (dates, request ids, loopback
//! ports, UUIDs) are redacted, so a snapshot only changes when behaviour does.

use std::sync::OnceLock;

use regex::Regex;

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
            .map(|(name, value)| {
                let value = if name == http::header::DATE {
                    "[date]".to_owned()
                } else if PER_REQUEST_HEADERS.contains(&name.as_str()) {
                    "[request-id]".to_owned()
                } else {
                    redact(&String::from_utf8_lossy(value.as_bytes()))
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
            .map(|l| format!("{} :: {}\n", l.endpoint, redact(&l.message)))
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
        return format!("body (json):\n{}\n", redact(&pretty));
    }
    match std::str::from_utf8(body) {
        Ok(text) if !text.contains('\0') => {
            let mut text = redact(text);
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

/// Replaces what differs between runs with a placeholder naming what it was.
pub fn redact(text: &str) -> String {
    static RULES: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        [
            (r"\b(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT", "[date]"),
            (r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?", "[timestamp]"),
            (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "[uuid]"),
            (r"(127\.0\.0\.1|localhost|\[::1\]):\d{1,5}\b", "$1:[port]"),
        ]
        .into_iter()
        .map(|(pattern, replacement)| (Regex::new(pattern).expect("a valid redaction pattern"), replacement))
        .collect()
    });
    rules
        .iter()
        .fold(text.to_owned(), |text, (pattern, replacement)| {
            pattern.replace_all(&text, *replacement).into_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactions_hide_what_changes_between_runs() {
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
