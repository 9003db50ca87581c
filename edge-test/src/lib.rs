//! # edge-test
//!
//! Tests for Fastly Compute services that run the real compiled guest on Fastly's local
//! runtime, in process: as easy to write as unit tests, as faithful as a deploy.
//!
//! ```no_run
//! use edge_test::{Edge, Service, edge_test};
//! use edge_test::mock::{Mock, Reply, matchers::{method, path}};
//!
//! // Once per test binary: the guest crate is built for wasm32-wasip1 when first needed.
//! edge_test::register_service!("todo", || Service::guest_crate("guest"));
//!
//! #[edge_test(service = "todo")]
//! async fn second_request_is_served_from_cache(edge: Edge) {
//!     Mock::given(method("GET"))
//!         .and(path("/todos/1"))
//!         .respond_with(Reply::json(200, &serde_json::json!({ "id": 1 })))
//!         .expect(1)
//!         .mount(&edge.backend("origin"));
//!
//!     let first = edge.get("/todos/1").send().await;
//!     assert_eq!(first.header("x-cache"), Some("MISS"));
//!     let second = edge.get("/todos/1").send().await;
//!     assert_eq!(second.header("x-cache"), Some("HIT"));
//!     edge_test::assert_snapshot!(second);
//! }
//! # fn main() {}
//! ```
//!
//! - Every test gets a pristine edge: an empty cache, the stores as `fastly.toml` declares
//!   them, a mock server for each backend, its own logs.
//! - `send` waits until the guest has fully finished: a panic after `send_to_client` or in
//!   the middle of `stream_to_client` fails the test; `try_send` lets a test assert on it.
//! - A backend request no mock matches fails the test; nothing reaches the network: a
//!   connection the guest opens to anything but its mocks (a dynamic backend) is refused
//!   and fails the test too (on Linux).
//! - A guest past its time limit (5 s by default) is stopped and reported.
//! - The guest's `Request::send` goes through Fastly's HTTP cache, as in production
//!   (`Service::http_cache(false)` turns it off).
//! - A backend can be served from a [`cassette`] (a real origin's traffic, recorded once and
//!   replayed offline), or by another registered service running beside it
//!   ([`Edge::other_service`], [`Edge::route`]).
//!
//! `#[edge_test]` accepts `async fn` and plain `fn` (use `send_blocking` there), returning
//! `()` or `Result<(), E>`, and keeps `#[ignore]`, `#[should_panic]` and doc comments.

pub use edge_test_core::{
    BackendRequest, CacheControl, CacheSeed, CachedObject, ConfigStore, DEFAULT_GUEST_TIMEOUT,
    DEFAULT_MAX_LOG_BYTES, Device, DynamicBackend, Edge, EdgeError, FailurePhase, Geo,
    GuestFailure, GuestFailureKind, KvEntry, KvStore, LogLine, Logs, Process, ProcessHandle,
    RequestBuilder, Response, SecretStore, Service, Tls,
};
pub use edge_test_core::{cassette, guest_tests, mock, snapshot};

/// The monitor (`edge-test-monitor`, with the `monitor` feature): e2e suites on demand and
/// on schedules, with a results page, Prometheus metrics and a webhook.
#[cfg(feature = "monitor")]
pub mod monitor;
pub use edge_test_macros::edge_test;
/// The `http` crate whose types requests and responses use (`Method`, `StatusCode`,
/// `HeaderMap`), so that tests need not depend on a matching version of it.
pub use http;
pub use http::{Method, StatusCode};

/// Declares a service that tests in this binary can name in `#[edge_test(service = ..)]`.
///
/// Relative paths in the [`Service`] resolve against the registering crate's directory.
///
/// ```
/// use edge_test::Service;
///
/// edge_test::register_service!("todo", || Service::guest_crate("../examples/todo/guest"));
/// edge_test::register_service!("legacy", || Service::wasm("fixtures/legacy.wasm").fastly_toml("fixtures/fastly.toml"));
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! register_service {
    ($name:literal, $define:expr $(,)?) => {
        $crate::__private::inventory::submit! {
            $crate::__private::ServiceRegistration::new($name, ::core::env!("CARGO_MANIFEST_DIR"), $define)
        }
    };
}

/// Snapshot-tests a [`Response`] or [`Logs`] with insta: the stable text form from
/// [`snapshot::render`], stored next to the calling test (review with `cargo insta review`),
/// or inline (`@".."`, filled in by `cargo insta review` too).
///
/// Values that change between runs are replaced by insta filters
/// ([`snapshot::DEFAULT_FILTERS`]), added to the insta settings in force: add your own
/// with `insta::Settings` around the assertion, or leave the defaults out with
/// [`snapshot::without_default_filters`].
///
/// ```no_run
/// # async fn example(edge: edge_test::Edge) {
/// let resp = edge.get("/todos/1").send().await;
/// edge_test::assert_snapshot!(resp); // named after the test
/// edge_test::assert_snapshot!("first_logs", resp.logs()); // named explicitly
/// edge_test::assert_snapshot!(resp.logs(), @"audit :: cache MISS todo:1"); // inline
///
/// let mut settings = insta::Settings::clone_current();
/// settings.add_filter(r"todo:\d+", "todo:[id]"); // one of your own, with the defaults
/// settings.bind(|| edge_test::assert_snapshot!(resp));
/// # }
/// ```
#[macro_export]
macro_rules! assert_snapshot {
    ($value:expr, @$snapshot:literal $(,)?) => {
        $crate::__private::with_filters(|| {
            $crate::__private::insta::assert_snapshot!(
                $crate::snapshot::render(&$value),
                @$snapshot
            )
        })
    };
    ($value:expr $(,)?) => {
        // No name: insta names the snapshot after the test function.
        $crate::__private::with_filters(|| {
            $crate::__private::insta::assert_snapshot!(
                ::core::option::Option::None::<::std::string::String>,
                $crate::snapshot::render(&$value),
                ::core::stringify!($value)
            )
        })
    };
    ($name:expr, $value:expr $(,)?) => {
        $crate::__private::with_filters(|| {
            $crate::__private::insta::assert_snapshot!(
                $name,
                $crate::snapshot::render(&$value),
                ::core::stringify!($value)
            )
        })
    };
}

/// What the macros expand to. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use edge_test_core::__private::*;
    pub use insta;

    /// Only an `Edge` can be injected into an `#[edge_test]` function.
    #[diagnostic::on_unimplemented(
        message = "an #[edge_test] function takes an `edge_test::Edge`, not `{Self}`",
        label = "change this type to `Edge`"
    )]
    pub trait IsEdge {}

    impl IsEdge for crate::Edge {}

    pub const fn assert_is_edge<T: IsEdge>() {}

    /// Runs a snapshot assertion with edge-test's filters added to the insta settings in
    /// force (the caller's own filters apply first).
    pub fn with_filters<R>(assertion: impl FnOnce() -> R) -> R {
        let mut settings = insta::Settings::clone_current();
        for (pattern, replacement) in crate::snapshot::filters() {
            settings.add_filter(pattern, *replacement);
        }
        settings.bind(assertion)
    }

    /// Checked where the user wrote the return type, so that a wrong one is reported there.
    pub const fn assert_test_output<T: TestOutput>() {}
}
