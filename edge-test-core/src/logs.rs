//! What one invocation wrote to its log endpoints, stdout and stderr included.

/// One entry a guest wrote to a log endpoint (`stdout` and `stderr` included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub endpoint: String,
    pub message: String,
}

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
        self.lines
            .iter()
            .filter(|l| l.endpoint == endpoint)
            .map(|l| l.message.as_str())
            .collect()
    }

    /// The messages written to `endpoint`, each parsed as JSON (structured logging, as
    /// Fastly's log endpoints usually carry). Panics, naming the line, when one does not
    /// parse as a `T`.
    ///
    /// ```no_run
    /// # fn f(resp: edge_test_core::Response) {
    /// #[derive(serde::Deserialize)]
    /// struct Access { status: u16, cache: String }
    /// let access: Vec<Access> = resp.logs().endpoint_json("access");
    /// assert_eq!(access[0].cache, "MISS");
    /// # }
    /// ```
    #[track_caller]
    pub fn endpoint_json<T: serde::de::DeserializeOwned>(&self, endpoint: &str) -> Vec<T> {
        self.endpoint(endpoint)
            .into_iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("edge-test: a line of log endpoint `{endpoint}` is not the expected JSON ({e}): {line}")
                })
            })
            .collect()
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

    /// The message of a Rust panic, as the guest printed it to stderr: the lines after
    /// `thread 'main' panicked at <location>:`, up to the `note: run with RUST_BACKTRACE`.
    pub fn panic_message(&self) -> Option<String> {
        panic_message_in(&self.stderr())
    }
}

/// The message of a Rust panic among what a guest printed to stderr.
pub(crate) fn panic_message_in(stderr: &[&str]) -> Option<String> {
    let start = stderr.iter().position(|l| l.contains("panicked at "))?;
    let message: Vec<&str> = stderr[start + 1..]
        .iter()
        .copied()
        .take_while(|l| !l.starts_with("note: "))
        .collect();
    Some(message.join("\n"))
}
