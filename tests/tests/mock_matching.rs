//! What mocks match on and how they answer, seen through a guest that forwards the request.

mod support;

use std::time::Duration;

use edge_test::mock::matchers::{
    any, body_contains, body_json, body_string, custom, header, header_exists, method, path,
    path_prefix, query_param,
};
use edge_test::mock::{Mock, Reply};
use edge_test::{Edge, GuestFailureKind, edge_test};

#[edge_test(service = "misbehave")]
async fn mocks_match_on_method_path_query_headers_and_body(edge: Edge) {
    let api = edge.backend("api");
    Mock::given(method("POST"))
        .and(path("/orders"))
        .and(query_param("expand", "lines items"))
        .and(header("x-forward", "yes"))
        .and(header_exists("x-forward"))
        .and(body_json(&serde_json::json!({ "qty": 2, "sku": "a" })))
        .and(body_contains("sku"))
        .respond_with(Reply::text(201, "created"))
        .expect(1)
        .mount(&api);
    Mock::given(any())
        .respond_with(Reply::text(418, "fallback"))
        .mount(&api);

    let matched = edge
        .post("/backend/orders?expand=lines+items")
        .header("x-forward", "yes")
        .json(&serde_json::json!({ "sku": "a", "qty": 2 }))
        .send()
        .await;
    let wrong_query = edge
        .post("/backend/orders?expand=none")
        .header("x-forward", "yes")
        .text("{}")
        .send()
        .await;

    assert_eq!(
        (matched.status().as_u16(), matched.text()),
        (201, "created")
    );
    assert_eq!(
        (wrong_query.status().as_u16(), wrong_query.text()),
        (418, "fallback")
    );
    let received = api.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].query_param("expand").as_deref(),
        Some("lines items")
    );
    assert_eq!(received[1].body_text(), "{}");
}

#[edge_test(service = "misbehave")]
async fn prefixes_exact_bodies_and_custom_conditions(edge: Edge) {
    let api = edge.backend("api");
    Mock::given(path_prefix("/v2/"))
        .and(body_string("exact"))
        .respond_with(Reply::new(200))
        .mount(&api);
    Mock::given(custom("path has three segments", |r| {
        r.path().split('/').count() == 4
    }))
    .respond_with(Reply::new(202))
    .mount(&api);

    assert_eq!(
        edge.put("/backend/v2/x")
            .text("exact")
            .send()
            .await
            .status(),
        200
    );
    assert_eq!(
        edge.put("/backend/a/b/c")
            .text("other")
            .send()
            .await
            .status(),
        202
    );
}

#[edge_test(service = "misbehave")]
async fn computed_replies_see_the_request(edge: Edge) {
    Mock::given(path_prefix("/echo/"))
        .respond_with_fn(|req| Reply::text(200, format!("{} {}", req.method(), req.path())))
        .mount(&edge.backend("api"));
    assert_eq!(
        edge.get("/backend/echo/me").send().await.text(),
        "GET /echo/me"
    );
}

#[edge_test(service = "misbehave")]
async fn a_delayed_reply_arrives_late(edge: Edge) {
    Mock::given(any())
        .respond_with(Reply::text(200, "late").delay(Duration::from_millis(150)))
        .mount(&edge.backend("api"));
    let started = std::time::Instant::now();
    assert_eq!(edge.get("/backend/slow").send().await.text(), "late");
    // A lower bound only: the delay must have happened; no upper bound on a shared machine.
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[edge_test(service = "misbehave")]
async fn a_dropped_connection_is_a_send_error_in_the_guest(edge: Edge) {
    Mock::given(any())
        .respond_with(Reply::drop_connection())
        .mount(&edge.backend("api"));
    let resp = edge.get("/backend/gone").send().await;
    assert_eq!(resp.status(), 502);
    assert!(resp.text().starts_with("send failed"), "{}", resp.text());
}

#[edge_test(service = "misbehave")]
async fn mocks_used_up_give_way_to_the_next(edge: Edge) {
    let api = edge.backend("api");
    Mock::given(any())
        .respond_with(Reply::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&api);
    Mock::given(any())
        .respond_with(Reply::new(200))
        .expect(1..)
        .mount(&api);
    let statuses: Vec<u16> = [
        edge.get("/backend/x").send().await.status().as_u16(),
        edge.get("/backend/x").send().await.status().as_u16(),
        edge.get("/backend/x").send().await.status().as_u16(),
    ]
    .into();
    assert_eq!(statuses, [503, 503, 200]);
}

#[edge_test(service = "misbehave-impatient")]
async fn the_service_sets_the_default_time_limit(edge: Edge) {
    let failure = edge
        .get("/loop")
        .try_send()
        .await
        .expect_err("the guest never ends");
    assert_eq!(
        failure.kind(),
        &GuestFailureKind::TimedOut {
            limit: Duration::from_millis(250)
        }
    );
}

#[edge_test(service = "misbehave-impatient", guest_timeout_ms = 5000)]
async fn the_test_overrides_the_service_time_limit(edge: Edge) {
    Mock::given(any())
        .respond_with(Reply::new(200).delay(Duration::from_millis(400)))
        .mount(&edge.backend("api"));
    assert_eq!(edge.get("/backend/slow").send().await.status(), 200);
}
