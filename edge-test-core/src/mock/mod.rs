//! Mock backends: every backend a service declares is served by the test, on loopback.
//!
//! Modelled on wiremock: `Mock::given(matcher).and(..).respond_with(..).expect(..)`,
//! mounted on a backend; expectations are checked when the test ends.
//!
//! ```no_run
//! use edge_test_core::mock::{Mock, Reply, matchers::{method, path}};
//! # fn f(edge: edge_test_core::Edge) {
//! Mock::given(method("GET"))
//!     .and(path("/todos/1"))
//!     .respond_with(Reply::json(200, &serde_json::json!({ "id": 1, "title": "write tests" })))
//!     .expect(1)
//!     .mount(&edge.backend("origin"));
//! # }
//! ```

pub mod matchers;
mod mounted;
mod reply;
pub(crate) mod server;
pub(crate) mod verification;

use std::fmt;
use std::ops::{Range, RangeFrom, RangeInclusive, RangeToInclusive};
use std::sync::Arc;

pub use matchers::Match;
pub use reply::Reply;
pub use server::MockBackend;

use crate::backend_request::BackendRequest;

/// A mock: conditions, an answer, and optionally how many calls the test expects.
#[must_use = "a mock does nothing until it is mounted on a backend with `.mount(&backend)`"]
pub struct Mock {
    pub(crate) matchers: Vec<Box<dyn Match>>,
    pub(crate) responder: Responder,
    pub(crate) expected: Option<Times>,
    pub(crate) max_uses: Option<u64>,
    pub(crate) name: Option<String>,
}

/// A mock still missing its answer; finish it with `respond_with` or `respond_with_fn`.
#[must_use = "a mock needs `.respond_with(..)` and `.mount(..)`"]
pub struct MockBuilder {
    matchers: Vec<Box<dyn Match>>,
}

#[derive(Clone)]
pub(crate) enum Responder {
    Canned(Reply),
    Computed(Arc<dyn Fn(&BackendRequest) -> Reply + Send + Sync>),
}

impl Mock {
    /// Starts a mock that matches requests meeting `matcher`.
    pub fn given(matcher: impl Match) -> MockBuilder {
        MockBuilder {
            matchers: vec![Box::new(matcher)],
        }
    }

    /// Fails the test unless this mock matches a number of requests in `times`: a count
    /// (`expect(1)`), at least (`expect(1..)`), at most (`expect(..=3)`) or a range.
    pub fn expect(mut self, times: impl Into<Times>) -> Self {
        self.expected = Some(times.into());
        self
    }

    /// Stops matching after `n` requests, so that a later mock answers the rest
    /// (a backend that fails once, then recovers).
    pub fn up_to_n_times(mut self, n: u64) -> Self {
        self.max_uses = Some(n);
        self
    }

    /// A name for reports, instead of the list of matchers.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Serves this mock from `backend` for the rest of the test. Mocks are tried in the
    /// order they were mounted; the first that matches (and is not used up) answers.
    pub fn mount(self, backend: &MockBackend) {
        backend.mount(self);
    }

    pub(crate) fn describe(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => self
                .matchers
                .iter()
                .map(|m| m.describe())
                .collect::<Vec<_>>()
                .join(" and "),
        }
    }
}

impl MockBuilder {
    /// Adds a condition; all of them must hold.
    pub fn and(mut self, matcher: impl Match) -> Self {
        self.matchers.push(Box::new(matcher));
        self
    }

    /// Answers every matching request with `reply`.
    pub fn respond_with(self, reply: Reply) -> Mock {
        self.finish(Responder::Canned(reply))
    }

    /// Computes each answer from the request. A panic in `respond` fails the test with its
    /// message (the guest sees a 500).
    pub fn respond_with_fn(
        self,
        respond: impl Fn(&BackendRequest) -> Reply + Send + Sync + 'static,
    ) -> Mock {
        self.finish(Responder::Computed(Arc::new(respond)))
    }

    fn finish(self, responder: Responder) -> Mock {
        Mock {
            matchers: self.matchers,
            responder,
            expected: None,
            max_uses: None,
            name: None,
        }
    }
}

/// How many calls a mock expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    min: u64,
    max: Option<u64>,
}

impl Times {
    pub(crate) fn contains(&self, n: u64) -> bool {
        n >= self.min && self.max.is_none_or(|max| n <= max)
    }
}

impl fmt::Display for Times {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (min, Some(max)) if min == max => write!(f, "exactly {min}"),
            (0, Some(max)) => write!(f, "at most {max}"),
            (min, None) => write!(f, "at least {min}"),
            (min, Some(max)) => write!(f, "between {min} and {max}"),
        }
    }
}

impl From<u64> for Times {
    fn from(n: u64) -> Self {
        Times {
            min: n,
            max: Some(n),
        }
    }
}

impl From<RangeFrom<u64>> for Times {
    fn from(r: RangeFrom<u64>) -> Self {
        Times {
            min: r.start,
            max: None,
        }
    }
}

impl From<RangeToInclusive<u64>> for Times {
    fn from(r: RangeToInclusive<u64>) -> Self {
        Times {
            min: 0,
            max: Some(r.end),
        }
    }
}

impl From<RangeInclusive<u64>> for Times {
    fn from(r: RangeInclusive<u64>) -> Self {
        Times {
            min: *r.start(),
            max: Some(*r.end()),
        }
    }
}

impl From<Range<u64>> for Times {
    fn from(r: Range<u64>) -> Self {
        Times {
            min: r.start,
            max: Some(r.end.saturating_sub(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_they_are_written() {
        assert_eq!(Times::from(2).to_string(), "exactly 2");
        assert_eq!(Times::from(1..).to_string(), "at least 1");
        assert_eq!(Times::from(..=3).to_string(), "at most 3");
        assert_eq!(Times::from(2..=4).to_string(), "between 2 and 4");
        assert!(Times::from(1..).contains(5) && !Times::from(1..).contains(0));
        assert!(Times::from(..=3).contains(0) && !Times::from(..=3).contains(4));
        assert!(Times::from(2..4).contains(3) && !Times::from(2..4).contains(4));
    }
}
