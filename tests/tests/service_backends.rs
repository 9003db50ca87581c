//! Another service as a backend: a backend of the service under test answered by a second
//! registered service running beside it in the same test, with mocks, logs and failures of
//! its own. `misbehave`'s `/backend/..` route forwards to its backend `api`; the
//! `http-cache` guest's `/get/..` route fetches from its backend `origin`.

mod support;

use edge_test::Edge;
use edge_test::edge_test;
use edge_test::mock::matchers::path;
use edge_test::mock::{Mock, Reply};

#[edge_test(service = "misbehave-uncached")]
async fn a_backend_is_answered_by_another_service_with_its_own_mocks(edge: Edge) {
    let b = edge.other_service("http-cache-off");
    Mock::given(path("/doc"))
        .respond_with(Reply::text(200, "from b's origin"))
        .expect(1)
        .mount(&b.backend("origin"));
    edge.route("api", &b);

    let response = edge.get("/backend/get/doc").send().await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text(), "from b's origin");
    let [call] = response.backend_calls() else {
        panic!("one backend call: {:?}", response.backend_calls())
    };
    assert_eq!((call.backend(), call.path()), ("api", "/get/doc"));
    let served = b.served();
    assert_eq!(
        served.len(),
        1,
        "b's invocation, with its own logs and calls"
    );
    assert_eq!(served[0].backend_calls()[0].path(), "/doc");
    assert_eq!(
        edge.other_service("http-cache-off").served().len(),
        1,
        "the same edge every time the test asks"
    );
}

#[edge_test(service = "misbehave-uncached")]
async fn a_mock_on_a_routed_backend_answers_first(edge: Edge) {
    let b = edge.other_service("http-cache-off");
    edge.route("api", &b);
    Mock::given(path("/mocked"))
        .respond_with(Reply::text(200, "mock"))
        .mount(&edge.backend("api"));
    assert_eq!(edge.get("/backend/mocked").send().await.text(), "mock");
    assert!(b.served().is_empty());
}

#[edge_test(service = "misbehave-uncached")]
async fn a_chain_of_three_services(edge: Edge) {
    let b = edge.other_service("misbehave-chain-b");
    let c = b.other_service("http-cache-off");
    Mock::given(path("/deep"))
        .respond_with(Reply::text(200, "c's origin"))
        .expect(1)
        .mount(&c.backend("origin"));
    edge.route("api", &b);
    b.route("api", &c);

    let response = edge.get("/backend/backend/get/deep").send().await;
    assert_eq!(response.text(), "c's origin");
    assert_eq!(b.served().len(), 1);
    assert_eq!(c.served().len(), 1);
    assert_eq!(c.served()[0].backend_calls()[0].path(), "/deep");
}

#[edge_test(service = "misbehave-uncached")]
async fn the_other_service_failing_after_its_response_fails_the_request_naming_it(edge: Edge) {
    let b = edge.other_service("misbehave-chain-b");
    edge.route("api", &b);
    let failure = edge
        .get("/backend/panic-after-send")
        .try_send()
        .await
        .expect_err("b failed");
    let text = failure.to_string();
    assert!(
        text.contains("backend `api` received GET /panic-after-send (invocation 1), and the service `misbehave-chain-b`, which answers it, failed"),
        "{text}"
    );
    assert!(text.contains("boom after send_to_client"), "{text}");
}

#[edge_test(service = "misbehave-uncached")]
async fn a_route_that_closes_a_cycle_is_refused_naming_it(edge: Edge) {
    let b = edge.other_service("misbehave-chain-b");
    edge.route("api", &b);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.route("api", &edge)))
        .expect_err("a cycle");
    let message = support::panic_text(&panic);
    assert!(
        message.contains(
            "routing backend `api` of service `misbehave-chain-b` to service \
             `misbehave-uncached` would close a cycle: misbehave-chain-b -> misbehave-uncached \
             -> misbehave-chain-b"
        ),
        "{message}"
    );
}

#[edge_test(service = "misbehave-uncached")]
async fn the_other_services_unmet_expectations_fail_the_test(edge: Edge) {
    let b = edge.other_service("http-cache-off");
    Mock::given(path("/never"))
        .respond_with(Reply::new(200))
        .expect(1)
        .mount(&b.backend("origin"));
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| edge.verify()))
        .expect_err("b's mock was never called");
    let message = support::panic_text(&panic);
    assert!(
        message.contains("[path == /never] expected exactly 1 call(s), received 0"),
        "{message}"
    );
    // Met now, so that the test's own verification passes.
    let _ = b.get("/get/never").send().await;
}
