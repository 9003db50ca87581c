//! What one invocation wrote to its log endpoints, stdout and stderr included.

pub use crate::executor::LogLine;

/// The log lines of one invocation, in the order the guest wrote them. Each write to a
/// `fastly::log::Endpoint` is one line; guest stdout and stderr appear as the endpoints
/// `stdout` and `stderr`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Logs {
    lines: Vec<LogLine>,
}

impl Logs {
    pub(crate) fn new(lines: Vec<LogLine>) -> Self {
        Self { lines }
    }

    /// The messages written to `endpoint`, in order.
    pub fn endpoint(&self, endpoint: &str) -> Vec<&str> {
        self.lines.iter().filter(|l| l.endpoint == endpoint).map(|l| l.message.as_str()).collect()
    }

    /// What the guest printed to stdout.
    pub fn stdout(&self) -> Vec<&str> {
        self.endpoint("stdout")
    }

    /// What the guest printed to stderr (a Rust panic's message lands here).
    pub fn stderr(&self) -> Vec<&str> {
        self.endpoint("stderr")
    }

    /// Every line, all endpoints interleaved as written.
    pub fn lines(&self) -> &[LogLine] {
        &self.lines
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The message of a Rust panic, as the guest printed it to stderr.
    pub fn panic_message(&self) -> Option<String> {
        let stderr = self.stderr().join("\n");
        let at = stderr.find("panicked at ")?;
        let after = &stderr[at..];
        // "panicked at src/main.rs:5:9:\n<message>" (the location line ends with ':').
        let message = after.split_once(":\n").map(|(_, m)| m).unwrap_or(after);
        let message = message.split("\nnote: ").next().unwrap_or(message);
        Some(message.trim().to_owned())
    }
}
