//! The request and response API beyond the basics: methods by name, repeated headers,
//! JSON log lines, partial JSON matching, the default host.

mod support;

use edge_test::mock::matchers::{body_partial_json, method, path};
use edge_test::mock::{Mock, Reply};
use edge_test::{Edge, edge_test};
use serde_json::json;

#[edge_test(service = "misbehave")]
async fn a_method_can_be_named(edge: Edge) {
    Mock::given(method("PURGE"))
        .and(path("/cached"))
        .respond_with(Reply::new(200))
        .expect(1)
        .mount(&edge.backend("api"));
    assert_eq!(
        edge.request("PURGE", "/backend/cached")
            .send()
            .await
            .status(),
        200
    );
    assert_eq!(
        edge.request(edge_test::Method::GET, "/ok")
            .send()
            .await
            .text(),
        "ok",
        "and given as http's Method, re-exported"
    );
}

#[edge_test(service = "misbehave")]
#[should_panic(expected = "edge-test: \"NOT A METHOD\" is not a valid HTTP method")]
async fn an_invalid_method_is_named(edge: Edge) {
    let _ = edge.request("NOT A METHOD", "/ok");
}

#[edge_test(service = "misbehave")]
async fn every_value_of_a_repeated_header(edge: Edge) {
    let resp = edge.get("/cookies").send().await;
    assert_eq!(resp.header_all("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(resp.header("set-cookie"), Some("a=1"));
    assert!(resp.header_all("x-missing").is_empty());
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Event {
    status: u16,
    cache: String,
}

#[edge_test(service = "misbehave")]
async fn log_lines_read_as_json(edge: Edge) {
    let resp = edge.get("/json-log").send().await;
    let events: Vec<Event> = resp.logs().endpoint_json("events");
    assert_eq!(
        events,
        [
            Event {
                status: 200,
                cache: "MISS".into()
            },
            Event {
                status: 304,
                cache: "HIT".into()
            }
        ]
    );
}

#[edge_test(service = "misbehave")]
#[should_panic(expected = "edge-test: a line of log endpoint `stdout` is not the expected JSON")]
async fn a_log_line_that_is_not_the_json_expected_is_named(edge: Edge) {
    let resp = edge.get("/stdout").send().await;
    let _: Vec<Event> = resp.logs().endpoint_json("stdout");
}

#[edge_test(service = "misbehave")]
async fn a_json_body_matches_on_the_fields_named(edge: Edge) {
    Mock::given(body_partial_json(&json!({ "operationName": "Todos" })))
        .respond_with(Reply::text(200, "todos"))
        .mount(&edge.backend("api"));
    Mock::given(body_partial_json(&json!({ "operationName": "Users" })))
        .respond_with(Reply::text(200, "users"))
        .mount(&edge.backend("api"));
    let query = |name: &str, id: u32| json!({ "operationName": name, "query": "{ .. }", "variables": { "id": id } });
    let todos = edge
        .post("/backend/graphql")
        .json(&query("Todos", 1))
        .send()
        .await;
    let users = edge
        .post("/backend/graphql")
        .json(&query("Users", 2))
        .send()
        .await;
    assert_eq!(todos.text(), "todos");
    assert_eq!(users.text(), "users");
}

#[edge_test(service = "misbehave")]
async fn the_default_host_is_edge_test_and_can_be_set(edge: Edge) {
    assert_eq!(edge.get("/url").send().await.text(), "http://edge.test/url");
    edge.set_default_host("www.example.com");
    assert_eq!(
        edge.get("/url").send().await.text(),
        "http://www.example.com/url"
    );
    assert_eq!(
        edge.get("/url")
            .header("host", "api.example.com")
            .send()
            .await
            .text(),
        "http://api.example.com/url",
        "a request's own host header wins"
    );
}

#[edge_test(service = "misbehave")]
#[should_panic(expected = "edge-test: \"not a host/\" is not a valid host for requests")]
async fn an_invalid_default_host_is_named(edge: Edge) {
    edge.set_default_host("not a host/");
}
