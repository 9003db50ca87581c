//! Snapshot assertions: inline, with edge-test's default filters, with a test's own, and
//! without the defaults.

mod support;

use edge_test::mock::matchers::path;
use edge_test::mock::{Mock, Reply};
use edge_test::{Edge, edge_test};

const CHANGING: &str = "id 123e4567-e89b-12d3-a456-426614174000 from 127.0.0.1:41234";

fn changing_body(edge: &Edge) {
    Mock::given(path("/changing"))
        .respond_with(Reply::text(200, CHANGING))
        .mount(&edge.backend("api"));
}

#[edge_test(service = "misbehave")]
async fn an_inline_snapshot_with_the_default_filters(edge: Edge) {
    changing_body(&edge);
    let resp = edge.get("/backend/changing").send().await;
    edge_test::assert_snapshot!(resp, @r"
    status: 200 OK
    headers:
    body (text):
    id [uuid] from 127.0.0.1:[port]
    ");
}

#[edge_test(service = "misbehave")]
async fn a_tests_own_filters_apply_with_the_defaults(edge: Edge) {
    changing_body(&edge);
    let resp = edge.get("/backend/changing").send().await;
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\bfrom\b", "via");
    settings.bind(|| {
        edge_test::assert_snapshot!(resp, @r"
        status: 200 OK
        headers:
        body (text):
        id [uuid] via 127.0.0.1:[port]
        ");
    });
}

#[edge_test(service = "misbehave")]
async fn the_default_filters_can_be_left_out(edge: Edge) {
    changing_body(&edge);
    let resp = edge.get("/backend/changing").send().await;
    edge_test::snapshot::without_default_filters(|| {
        edge_test::assert_snapshot!(resp, @r"
        status: 200 OK
        headers:
        body (text):
        id 123e4567-e89b-12d3-a456-426614174000 from 127.0.0.1:41234
        ");
    });
}
