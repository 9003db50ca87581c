//! The todo service against its origin as recorded (`tests/cassettes/`), not as mocked: the
//! traffic of a real run, replayed with no network. Recorded from `todo-origin` (a stand-in
//! for `https://api.todo.example`, `src/bin/todo-origin.rs`); README, "Cassettes", says how
//! to record them again.

use edge_test::cassette::Cassette;
use edge_test::{Edge, Service, edge_test};
use serde_json::{Value, json};

edge_test::register_service!("todo", || Service::guest_crate("guest"));

#[edge_test(service = "todo")]
async fn a_todo_comes_from_the_origin_once_then_from_the_cache(edge: Edge) {
    edge.cassette("origin", Cassette::new().fail_on_unused());

    let first = edge.get("/todos/1").send().await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(
        first.json::<Value>(),
        json!({ "id": 1, "title": "write edge tests", "done": false })
    );
    let again = edge.get("/todos/1").send().await;
    assert_eq!(
        again.header("x-cache"),
        Some("HIT"),
        "the cassette holds one fetch"
    );
}

#[edge_test(service = "todo")]
async fn an_unknown_todo_is_the_origins_404(edge: Edge) {
    edge.cassette("origin", Cassette::new());
    let missing = edge.get("/todos/99").send().await;
    assert_eq!(missing.status(), 404);
}

#[edge_test(service = "todo")]
async fn a_new_todo_is_created_at_the_origin_with_its_title_trimmed(edge: Edge) {
    edge.cassette("origin", Cassette::new());
    let created = edge
        .post("/todos")
        .json(&json!({ "title": "  replay offline  " }))
        .send()
        .await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.json::<Value>()["title"], "replay offline");
}

#[edge_test(service = "todo")]
async fn the_feed_streams_the_origins_todos_one_line_each(edge: Edge) {
    edge.cassette("origin", Cassette::new());
    let feed = edge.get("/feed").send().await;
    assert_eq!(feed.status(), 200);
    let titles: Vec<String> = feed
        .text()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["title"].to_string())
        .collect();
    // The origin as it was when recorded: the todos it starts with first.
    assert_eq!(
        titles[..2],
        [r#""write edge tests""#, r#""record a cassette""#]
    );
}
