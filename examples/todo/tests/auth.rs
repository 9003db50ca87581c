//! Two services of the example in one test: the auth gateway (`auth-guest/`) in front of the
//! todo service (`guest/`), each in its own pristine instance. The gateway's backend `todo` is
//! the todo service itself, whose origin is mocked.

use edge_test::mock::matchers::{method, path};
use edge_test::mock::{Mock, Reply};
use edge_test::{Edge, Service, edge_test};
use serde_json::{Value, json};

edge_test::register_service!("todo", || Service::guest_crate("guest"));
edge_test::register_service!("auth", || Service::guest_crate("auth-guest"));

#[edge_test(service = "auth")]
async fn a_signed_in_user_reaches_the_todo_service(edge: Edge) {
    let todo = edge.other_service("todo");
    edge.route("todo", &todo);
    Mock::given(method("GET"))
        .and(path("/todos/1"))
        .respond_with(Reply::json(200, &json!({ "id": 1, "title": "ship it" })))
        .expect(1)
        .mount(&todo.backend("origin"));

    let resp = edge
        .get("/todos/1")
        .header("authorization", "Bearer t-alice")
        .send()
        .await;

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>()["title"], "ship it");
    let [call] = resp.backend_calls() else {
        panic!("one call to the todo service: {:?}", resp.backend_calls())
    };
    assert_eq!(call.header("x-user"), Some("alice"));
    assert_eq!(
        call.header("authorization"),
        None,
        "the token stops at the gateway"
    );
    let served = todo.served();
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].header("x-cache"), Some("MISS"));
    assert_eq!(
        served[0].logs().endpoint("access"),
        ["GET /todos/1 200 MISS"]
    );
}

#[edge_test(service = "auth")]
async fn without_a_known_token_the_todo_service_is_never_asked(edge: Edge) {
    let todo = edge.other_service("todo");
    edge.route("todo", &todo);
    for token in [None, Some("Bearer t-mallory")] {
        let mut request = edge.get("/todos/1");
        if let Some(token) = token {
            request = request.header("authorization", token);
        }
        let resp = request.send().await;
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.header("www-authenticate"), Some("Bearer"));
    }
    assert!(todo.served().is_empty());
}
