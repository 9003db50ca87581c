//! Faults a test or its guest can cause, each failing the test where it happens, naming
//! it; and outputs too large to cross the worker's socket slowly. Runs in forked workers
//! and again in process (`EDGE_TEST_HOST=off`, in CI).

mod support;

use std::time::Duration;

use edge_test::mock::matchers::path;
use edge_test::mock::{Mock, Reply};
use edge_test::{Edge, GuestFailureKind, edge_test};

fn slow_backend(edge: &Edge, delay: Duration) {
    Mock::given(path("/slow"))
        .respond_with(Reply::text(200, "slow").delay(delay))
        .mount(&edge.backend("api"));
}

/// Starts a request that waits on a slow backend, and stops awaiting it.
async fn abandon(edge: &Edge, path: &str) {
    let abandoned = tokio::time::timeout(Duration::from_millis(30), edge.get(path).send()).await;
    assert!(
        abandoned.is_err(),
        "the guest was still waiting on its backend"
    );
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "failed before it sent a response to GET /after-backend/panic (invocation 1, which the test stopped awaiting)"
)]
async fn a_trap_in_an_abandoned_request_fails_the_next_send_naming_it(edge: Edge) {
    slow_backend(&edge, Duration::from_millis(300));
    abandon(&edge, "/after-backend/panic").await;
    edge.get("/ok").send().await;
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "GET /after-backend/panic (invocation 1, which the test stopped awaiting)"
)]
async fn a_trap_in_an_abandoned_request_fails_the_test_at_its_end(edge: Edge) {
    slow_backend(&edge, Duration::from_millis(300));
    abandon(&edge, "/after-backend/panic").await;
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "during GET /after-backend/dynamic/203.0.113.9:80 (invocation 1, which the test stopped awaiting):\nedge-test: the guest sent GET / (invocation 1) to dynamic backend `late` at 203.0.113.9:80, which has no mocks"
)]
async fn an_unmocked_dynamic_backend_in_an_abandoned_request_fails_the_test(edge: Edge) {
    slow_backend(&edge, Duration::from_millis(300));
    abandon(&edge, "/after-backend/dynamic/203.0.113.9:80").await;
    edge.get("/ok").send().await;
}

#[edge_test(service = "misbehave")]
async fn an_abandoned_requests_logs_and_backend_calls_stay_its_own(edge: Edge) {
    slow_backend(&edge, Duration::from_millis(200));
    // Called after the test stopped awaiting: while the next request is being sent.
    Mock::given(path("/after"))
        .respond_with(Reply::new(204))
        .mount(&edge.backend("api"));
    abandon(&edge, "/after-backend/done").await;

    let next = edge.get("/ok").send().await;
    assert_eq!(next.invocation(), 2);
    assert!(
        next.logs().is_empty(),
        "the abandoned request's log line is not the next one's: {:?}",
        next.logs()
    );
    assert!(
        next.backend_calls().is_empty(),
        "{:?}",
        next.backend_calls()
    );
    let calls: Vec<(String, usize)> = edge
        .backend("api")
        .received()
        .iter()
        .map(|call| (call.path().to_owned(), call.invocation()))
        .collect();
    assert_eq!(calls, [("/slow".to_owned(), 1), ("/after".to_owned(), 1)]);
}

/// Within the worker's deadline (its guest limit and 5 s of grace): reading a report used to
/// take time quadratic in its size, and a 10 MB response was killed as a time-out.
#[edge_test(service = "misbehave")]
fn a_20_mib_response_arrives_within_the_workers_deadline(edge: Edge) {
    edge.set_guest_timeout(Duration::from_secs(1));
    let big = edge.get("/big/20").send_blocking();
    assert_eq!(big.bytes().len(), 20 << 20);
}

#[edge_test(service = "misbehave")]
async fn a_20_mib_response_and_60_mib_of_logs_arrive_whole(edge: Edge) {
    let big = edge.get("/big/20").send().await;
    assert_eq!(big.bytes().len(), 20 << 20);
    assert!(big.bytes().iter().all(|&b| b == b'x'));

    edge.set_max_log_bytes(64 << 20);
    let flood = edge.get("/flood/61440").send().await;
    let lines = flood.logs().endpoint("stdout");
    assert_eq!(lines.len(), 61440);
    assert!(lines.iter().all(|l| l.len() == 1023));
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "during GET /flood/2048 (invocation 1) the guest of service `misbehave` wrote more log output (endpoints, stdout and stderr) than the 1048576 bytes an invocation may write; 1069156 bytes past that were dropped"
)]
async fn output_past_the_cap_fails_the_test_saying_how_much_was_dropped(edge: Edge) {
    edge.set_max_log_bytes(1 << 20);
    edge.get("/flood/2048").send().await;
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "during GET /undeclared (invocation 1) the guest of service `misbehave` sent a request to backend `nowhere`, which its fastly.toml does not declare (declared: api, pinned, third)"
)]
async fn a_backend_fastly_toml_does_not_declare_fails_the_test(edge: Edge) {
    edge.get("/undeclared").send().await;
}

#[edge_test(service = "misbehave")]
async fn a_backend_without_override_host_gets_the_requests_own_host(edge: Edge) {
    Mock::given(path("/where"))
        .respond_with(Reply::text(200, "here"))
        .mount(&edge.backend("api"));
    let resp = edge
        .get("/backend-as/accounts.example.org/where")
        .send()
        .await;
    assert_eq!(resp.text(), "here");
    assert_eq!(
        resp.backend_calls()[0].header("host"),
        Some("accounts.example.org"),
        "not the host of the backend's url in fastly.toml"
    );
}

#[edge_test(service = "misbehave")]
async fn a_backend_with_override_host_gets_that_host(edge: Edge) {
    Mock::given(path("/pinned"))
        .respond_with(Reply::text(200, "pinned"))
        .mount(&edge.backend("pinned"));
    let resp = edge.get("/pinned").send().await;
    assert_eq!(resp.text(), "pinned");
    assert_eq!(
        resp.backend_calls()[0].header("host"),
        Some("pinned.example.com")
    );
}

#[edge_test(service = "misbehave")]
async fn a_time_limit_too_far_to_reach_means_no_limit(edge: Edge) {
    edge.set_guest_timeout(Duration::MAX);
    assert_eq!(edge.get("/ok").send().await.text(), "ok");
}

#[edge_test(service = "misbehave")]
#[should_panic(expected = "edge-test: the request header name \"x bad\" is not valid")]
async fn an_invalid_request_header_is_named(edge: Edge) {
    let _ = edge.get("/ok").header("x bad", "value");
}

#[test]
#[should_panic(
    expected = "edge-test: the value \"line\\nbreak\" of mock reply header `x-note` is not valid"
)]
fn an_invalid_mock_reply_header_fails_where_it_is_written() {
    let _ = Reply::new(200).header("x-note", "line\nbreak");
}

#[edge_test(service = "misbehave")]
async fn a_failing_hostcall_shows_in_the_guests_failure(edge: Edge) {
    // The guest unwraps the opening of a config store that fastly.toml does not declare.
    let failure = edge
        .get("/config-store/no-such-store")
        .try_send()
        .await
        .expect_err("the guest panics on the hostcall's error");
    assert!(
        failure
            .runtime_warnings()
            .iter()
            .any(|w| w.starts_with("Hostcall yielded an error") && w.contains("no-such-store")),
        "{failure}"
    );
    assert!(
        failure
            .to_string()
            .contains("\n  runtime warnings:\n    Hostcall yielded an error"),
        "{failure}"
    );
}

#[edge_test(service = "dynamic-by-ip")]
async fn try_send_returns_a_connection_past_the_mocks(edge: Edge) {
    let failure = edge
        .get("/")
        .try_send()
        .await
        .expect_err("the connection was refused");
    assert_eq!(
        failure.kind(),
        &GuestFailureKind::ReachedPastMocks {
            destinations: vec!["TCP 203.0.113.9:80".into()]
        }
    );
    assert_eq!(failure.response().map(|r| r.status().as_u16()), Some(502));
}

#[edge_test(service = "misbehave")]
async fn try_send_returns_a_request_no_mock_matched(edge: Edge) {
    let failure = edge
        .get("/backend/nothing-mounted")
        .try_send()
        .await
        .expect_err("no mock matched");
    let GuestFailureKind::MockFailed { reports } = failure.kind() else {
        panic!("a mock failure, not {failure}")
    };
    assert!(
        reports[0].contains("received GET /nothing-mounted (invocation 1) but no mock matched it"),
        "{reports:?}"
    );
}

#[edge_test(service = "misbehave")]
async fn try_send_returns_an_undeclared_backend(edge: Edge) {
    let failure = edge
        .get("/undeclared")
        .try_send()
        .await
        .expect_err("the backend is not declared");
    assert_eq!(
        failure.kind(),
        &GuestFailureKind::UndeclaredBackend {
            backends: vec!["nowhere".into()],
            declared: vec!["api".into(), "pinned".into(), "third".into()],
        }
    );
}
