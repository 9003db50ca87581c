//! Every test starts from a pristine edge. These tests run concurrently (libtest threads,
//! or one process each under nextest): each writes the same cache key and KV key with its
//! own value, waits so that the others overlap it, and must only ever see its own.

mod support;

use std::time::Duration;

use edge_test::{Edge, edge_test};

async fn claim_shared_keys(edge: Edge, me: &str) {
    assert_eq!(
        edge.get("/cache/shared").send().await.status(),
        404,
        "the cache starts empty"
    );
    assert_eq!(
        edge.get("/kv/shared").send().await.status(),
        404,
        "KV holds only what fastly.toml seeds"
    );
    assert_eq!(edge.get("/kv/seed").send().await.text(), "from fastly.toml");

    assert_eq!(
        edge.put(&format!("/cache/shared/{me}"))
            .send()
            .await
            .status(),
        201
    );
    assert_eq!(
        edge.put(&format!("/kv/shared/{me}")).send().await.status(),
        201
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(
        edge.get("/cache/shared").send().await.text(),
        me,
        "another test's cache entry leaked in"
    );
    assert_eq!(
        edge.get("/kv/shared").send().await.text(),
        me,
        "another test's KV write leaked in"
    );
}

#[edge_test(service = "misbehave")]
async fn isolated_a(edge: Edge) {
    claim_shared_keys(edge, "a").await;
}

#[edge_test(service = "misbehave")]
async fn isolated_b(edge: Edge) {
    claim_shared_keys(edge, "b").await;
}

#[edge_test(service = "misbehave")]
async fn isolated_c(edge: Edge) {
    claim_shared_keys(edge, "c").await;
}

#[edge_test(service = "misbehave")]
async fn isolated_d(edge: Edge) {
    claim_shared_keys(edge, "d").await;
}

/// Workers are forked from one template, but its randomness is not what they share: two
/// edges' guests draw different random numbers, and so do two requests of one edge (as two
/// instances on Fastly do). A generator seeded in the host before its forks would give every
/// worker the same numbers.
#[test]
fn each_instance_draws_its_own_random_numbers() {
    let first = Edge::start("misbehave", "random-first").unwrap();
    let second = Edge::start("misbehave", "random-second").unwrap();
    let drawn = first.get("/random").send_blocking().text().to_owned();
    let again = first.get("/random").send_blocking().text().to_owned();
    let other = second.get("/random").send_blocking().text().to_owned();
    assert_eq!(drawn.len(), 16, "{drawn}");
    assert_ne!(drawn, other, "two edges' workers drew the same number");
    assert_ne!(
        drawn, again,
        "two requests of one edge drew the same number"
    );
}

#[test]
fn two_edges_in_one_test_do_not_share_state() {
    let first = Edge::start("misbehave", "first").unwrap();
    let second = Edge::start("misbehave", "second").unwrap();
    assert_eq!(first.put("/kv/k/one").send_blocking().status(), 201);
    assert_eq!(first.put("/cache/k/one").send_blocking().status(), 201);
    assert_eq!(second.get("/kv/k").send_blocking().status(), 404);
    assert_eq!(second.get("/cache/k").send_blocking().status(), 404);
    assert_eq!(first.get("/kv/k").send_blocking().text(), "one");
}
