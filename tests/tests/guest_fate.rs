//! How each invocation ended: the runner waits for the guest to finish, so failures after
//! the response (or in the middle of it) are not lost, and a stuck guest is stopped.

mod support;

use edge_test::mock::matchers::{any, path};
use edge_test::mock::{Mock, Reply};
use edge_test::{Edge, FailurePhase, GuestFailureKind, edge_test};

#[edge_test(service = "misbehave")]
async fn a_panic_before_responding_is_a_failure_with_the_runtime_500(edge: Edge) {
    let failure = edge
        .get("/panic-before")
        .try_send()
        .await
        .expect_err("the guest panicked");

    assert_eq!(failure.phase(), FailurePhase::BeforeResponse);
    assert_eq!(
        failure.panic_message().as_deref(),
        Some("boom before the response")
    );
    assert!(
        matches!(failure.kind(), GuestFailureKind::Trapped { message } if message.contains("unreachable")),
        "{failure}"
    );
    assert_eq!(failure.response().map(|r| r.status().as_u16()), Some(500));
    assert!(
        failure
            .to_string()
            .contains("failed before it sent a response"),
        "{failure}"
    );
}

#[edge_test(service = "misbehave")]
async fn a_panic_after_send_to_client_is_seen(edge: Edge) {
    let failure = edge
        .get("/panic-after-send")
        .try_send()
        .await
        .expect_err("the guest panicked after responding");

    assert_eq!(failure.phase(), FailurePhase::AfterResponse);
    let response = failure
        .response()
        .expect("the client got its response first");
    assert_eq!((response.status().as_u16(), response.text()), (200, "sent"));
    assert_eq!(
        failure.panic_message().as_deref(),
        Some("boom after send_to_client")
    );
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "failed after it sent a 200 response to GET /panic-after-send\n  panic: boom after send_to_client"
)]
async fn send_fails_the_test_on_a_panic_after_the_response(edge: Edge) {
    edge.get("/panic-after-send").send().await;
}

#[edge_test(service = "misbehave")]
async fn a_panic_mid_stream_keeps_what_was_streamed(edge: Edge) {
    let failure = edge
        .get("/panic-mid-stream")
        .try_send()
        .await
        .expect_err("the guest panicked mid-stream");

    assert_eq!(failure.phase(), FailurePhase::MidStream);
    assert_eq!(
        failure.response().map(|r| r.text().to_owned()).as_deref(),
        Some("first chunk\n")
    );
    assert_eq!(failure.panic_message().as_deref(), Some("boom mid stream"));
}

#[edge_test(service = "misbehave", guest_timeout_ms = 300)]
async fn a_looping_guest_is_stopped_at_its_time_limit(edge: Edge) {
    let failure = edge
        .get("/loop")
        .try_send()
        .await
        .expect_err("the guest never ends");

    assert!(failure.is_timeout());
    assert_eq!(
        failure.kind(),
        &GuestFailureKind::TimedOut {
            limit: std::time::Duration::from_millis(300)
        }
    );
    assert!(
        failure
            .to_string()
            .contains("was still running 300ms after GET /loop and was stopped"),
        "{failure}"
    );
}

#[edge_test(service = "misbehave")]
async fn a_looping_guest_after_its_response_still_times_out(edge: Edge) {
    edge.set_guest_timeout(std::time::Duration::from_millis(300));
    let failure = edge
        .get("/loop-after-send")
        .try_send()
        .await
        .expect_err("the guest never ends");

    assert!(failure.is_timeout());
    assert_eq!(
        failure.response().map(|r| r.text().to_owned()).as_deref(),
        Some("sent")
    );
}

#[edge_test(service = "misbehave", guest_timeout_ms = 300)]
#[should_panic(expected = "stopped after an earlier guest ran past its time limit")]
async fn an_edge_whose_guest_timed_out_refuses_further_requests(edge: Edge) {
    let _ = edge.get("/loop").try_send().await;
    edge.get("/ok").send().await;
}

#[edge_test(service = "misbehave")]
async fn a_guest_that_exhausts_its_memory_traps(edge: Edge) {
    let failure = edge
        .get("/oom")
        .try_send()
        .await
        .expect_err("the guest runs out of memory");

    assert!(
        matches!(failure.kind(), GuestFailureKind::Trapped { .. }),
        "{failure}"
    );
    assert!(
        failure
            .logs()
            .stderr()
            .join("\n")
            .contains("memory allocation"),
        "{failure}"
    );
}

#[edge_test(service = "misbehave")]
async fn a_non_zero_exit_is_a_failure(edge: Edge) {
    let failure = edge
        .get("/exit-1")
        .try_send()
        .await
        .expect_err("the guest exited with 1");
    assert!(
        matches!(failure.kind(), GuestFailureKind::Trapped { message } if message.contains("exited with error")),
        "{failure}"
    );
}

#[edge_test(service = "misbehave")]
async fn logs_written_after_the_response_are_kept(edge: Edge) {
    let resp = edge.get("/log-after-send").send().await;
    assert_eq!(
        resp.logs().endpoint("events"),
        [
            "before response",
            "after response 1",
            "after response 2",
            "after response 3"
        ]
    );
}

#[edge_test(service = "misbehave")]
async fn guest_stdout_and_stderr_are_captured_per_invocation(edge: Edge) {
    let printed = edge.get("/stdout").send().await;
    let quiet = edge.get("/ok").send().await;

    assert_eq!(printed.logs().stdout(), ["to stdout"]);
    assert_eq!(printed.logs().stderr(), ["to stderr"]);
    assert!(quiet.logs().is_empty());
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "backend `api` received GET /thing (invocation 1) but no mock matched it.\n  mounted on `api`:\n    (no mocks mounted)"
)]
async fn a_backend_request_without_a_mock_fails_the_test(edge: Edge) {
    edge.get("/backend/thing").send().await;
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "mounted on `api`:\n    - [method == POST and path == /thing] used 0 time(s)"
)]
async fn an_unmatched_request_lists_the_mounted_mocks(edge: Edge) {
    Mock::given(edge_test::mock::matchers::method("POST"))
        .and(path("/thing"))
        .respond_with(Reply::new(200))
        .mount(&edge.backend("api"));
    edge.get("/backend/thing").send().await;
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "the mock closure on backend `api` panicked while answering GET /thing: a bug in the mock"
)]
async fn a_panicking_mock_closure_fails_the_test(edge: Edge) {
    Mock::given(any())
        .respond_with_fn(|_| panic!("a bug in the mock"))
        .mount(&edge.backend("api"));
    edge.get("/backend/thing").send().await;
}

#[test]
fn an_unmet_expectation_reports_what_was_expected_and_what_arrived() {
    let edge = Edge::start("misbehave", "unmet").unwrap();
    Mock::given(path("/thing"))
        .respond_with(Reply::new(200))
        .expect(2)
        .mount(&edge.backend("api"));
    Mock::given(path("/other"))
        .respond_with(Reply::new(200))
        .expect(1..)
        .named("the other one")
        .mount(&edge.backend("api"));
    edge.get("/backend/thing").send_blocking();

    let report = std::panic::catch_unwind(|| edge.verify()).expect_err("expectations are not met");
    let report = report.downcast_ref::<String>().expect("a formatted report");
    assert_eq!(
        report,
        "edge-test: mock expectations were not met:\n  \
         - backend `api`: mock [path == /thing] expected exactly 2 call(s), received 1\n  \
         - backend `api`: mock [the other one] expected at least 1 call(s), received 0\n    \
         requests backend `api` received:\n      \
         1. GET /thing (invocation 1)\n"
    );
}

#[edge_test(service = "misbehave")]
#[should_panic(expected = "mock [path == /never] expected exactly 1 call(s), received 0")]
async fn the_attribute_verifies_expectations_when_the_test_ends(edge: Edge) {
    Mock::given(path("/never"))
        .respond_with(Reply::new(200))
        .expect(1)
        .mount(&edge.backend("api"));
}

#[edge_test(service = "misbehave")]
#[should_panic(expected = "service `misbehave` declares no backend `nope`; declared backends: api")]
async fn an_undeclared_backend_is_named(edge: Edge) {
    edge.backend("nope");
}
