//! What a mock answers: a canned response, a delay, or a fault.

use std::time::Duration;

/// A mock backend's answer.
///
/// ```
/// use std::time::Duration;
/// use edge_test_core::mock::Reply;
///
/// let ok = Reply::json(200, &serde_json::json!({ "id": 1 })).header("cache-control", "max-age=60");
/// let slow = Reply::new(200).body("late").delay(Duration::from_millis(50));
/// let broken = Reply::drop_connection();
/// # let _ = (ok, slow, broken);
/// ```
///
/// A header that is not valid HTTP fails where it is written:
///
/// ```should_panic
/// # use edge_test_core::mock::Reply;
/// let _ = Reply::new(200).header("x-bad\nname", "value"); // panics, naming "x-bad\nname"
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Reply does nothing until a mock responds with it"]
pub struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) delay: Option<Duration>,
    pub(crate) fault: Option<Fault>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    DropConnection,
    Hang,
}

impl Reply {
    /// An empty response with this status; failures are just statuses (`Reply::new(503)`).
    pub fn new(status: u16) -> Self {
        assert!(
            (100..1000).contains(&status),
            "{status} is not an HTTP status code"
        );
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
            fault: None,
        }
    }

    /// A JSON body with `content-type: application/json`.
    pub fn json(status: u16, body: &impl serde::Serialize) -> Self {
        Self::new(status)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(body).expect("the reply body serializes to JSON"))
    }

    /// A text body with `content-type: text/plain; charset=utf-8`.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.into())
    }

    /// Closes the connection without answering: the guest's `send` fails.
    pub fn drop_connection() -> Self {
        Self {
            fault: Some(Fault::DropConnection),
            ..Self::new(500)
        }
    }

    /// Never answers: the guest waits until the backend's `first_byte_timeout` or its own
    /// time limit.
    pub fn hang() -> Self {
        Self {
            fault: Some(Fault::Hang),
            ..Self::new(500)
        }
    }

    /// Adds a header. Panics, naming it, when the name or the value is not valid in HTTP:
    /// the mistake fails the test where it is written, not as a 500 the guest receives.
    #[track_caller]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        if let Err(e) = http::HeaderName::from_bytes(name.as_bytes()) {
            panic!(
                "edge-test: the mock reply header name {name:?} is not valid ({e}); header names \
                 are tokens: letters, digits and !#$%&'*+-.^_`|~"
            );
        }
        if let Err(e) = http::HeaderValue::from_str(&value) {
            panic!(
                "edge-test: the value {value:?} of mock reply header `{name}` is not valid ({e}); \
                 header values may not hold control characters such as newlines"
            );
        }
        self.headers.push((name, value));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Waits this long before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}
