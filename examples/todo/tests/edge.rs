//! Edge tests of the todo service: the real guest (`guest/`) on Fastly's local runtime,
//! with its origin mocked. Each test starts from an empty cache and the stores of
//! `guest/fastly.toml`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use edge_test::mock::matchers::{body_json, header, method, path};
use edge_test::mock::{Mock, Reply};
use edge_test::{CacheSeed, Edge, Geo, Service, edge_test};
use serde_json::{Value, json};

edge_test::register_service!("todo", || Service::guest_crate("guest"));

fn todo(id: u64, title: &str) -> Value {
    json!({ "id": id, "title": title, "done": false })
}

/// Serves todo `id` from the origin, expecting `calls` fetches.
fn origin_serves(edge: &Edge, id: u64, calls: u64) {
    Mock::given(method("GET"))
        .and(path(&format!("/todos/{id}")))
        .respond_with(Reply::json(200, &todo(id, "write edge tests")))
        .expect(calls)
        .mount(&edge.backend("origin"));
}

#[edge_test(service = "todo")]
async fn first_request_fetches_from_origin_with_the_secret_token(edge: Edge) {
    origin_serves(&edge, 1, 1);

    let resp = edge.get("/todos/1").send().await;

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("x-cache"), Some("MISS"));
    assert_eq!(resp.json::<Value>(), todo(1, "write edge tests"));
    let [call] = resp.backend_calls() else {
        panic!("expected one origin call, got {:?}", resp.backend_calls())
    };
    assert_eq!(call.backend(), "origin");
    assert_eq!(
        call.header("authorization"),
        Some("Bearer s3cr3t-token"),
        "token comes from the secret store"
    );
    assert_eq!(
        call.header("host"),
        Some("api.todo.example"),
        "the production Host header is kept"
    );
}

#[edge_test(service = "todo")]
async fn second_request_is_served_from_the_core_cache(edge: Edge) {
    origin_serves(&edge, 1, 1);

    let miss = edge.get("/todos/1").send().await;
    let hit = edge.get("/todos/1").send().await;

    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.json::<Value>(), miss.json::<Value>());
    assert!(
        hit.backend_calls().is_empty(),
        "a hit never reaches the origin"
    );
    assert_eq!(hit.logs().endpoint("audit"), ["cache HIT todo:1"]);
}

#[edge_test(service = "todo")]
async fn every_test_starts_with_an_empty_cache(edge: Edge) {
    // The test above cached todo 1 in its own edge; this one must not see it.
    origin_serves(&edge, 1, 1);
    let resp = edge.get("/todos/1").send().await;
    assert_eq!(resp.header("x-cache"), Some("MISS"));
}

#[edge_test(service = "todo")]
async fn cache_ttl_comes_from_the_config_store(edge: Edge) {
    origin_serves(&edge, 7, 1);
    let resp = edge.get("/todos/7").send().await;
    assert_eq!(
        resp.logs().endpoint("audit"),
        ["cache MISS todo:7 stored for 60s"]
    );
}

#[edge_test(service = "todo")]
async fn origin_errors_become_bad_gateway_and_are_not_cached(edge: Edge) {
    Mock::given(path("/todos/2"))
        .respond_with(Reply::new(503))
        .expect(2)
        .mount(&edge.backend("origin"));

    for _ in 0..2 {
        let resp = edge.get("/todos/2").send().await;
        assert_eq!(resp.status(), 502);
        assert_eq!(
            resp.json::<Value>(),
            json!({ "error": "origin answered 503" })
        );
    }
}

#[edge_test(service = "todo")]
async fn a_failed_fetch_is_retried_on_the_next_request(edge: Edge) {
    let origin = edge.backend("origin");
    Mock::given(path("/todos/3"))
        .respond_with(Reply::new(500))
        .up_to_n_times(1)
        .expect(1)
        .mount(&origin);
    Mock::given(path("/todos/3"))
        .respond_with(Reply::json(200, &todo(3, "retry")))
        .expect(1)
        .mount(&origin);

    assert_eq!(edge.get("/todos/3").send().await.status(), 502);
    let recovered = edge.get("/todos/3").send().await;
    assert_eq!(recovered.status(), 200);
    assert_eq!(recovered.header("x-cache"), Some("MISS"));
    assert_eq!(origin.received().len(), 2);
}

#[edge_test(service = "todo")]
async fn a_dropped_origin_connection_is_a_bad_gateway(edge: Edge) {
    Mock::given(path("/todos/4"))
        .respond_with(Reply::drop_connection())
        .mount(&edge.backend("origin"));

    let resp = edge.get("/todos/4").send().await;

    assert_eq!(resp.status(), 502);
    assert!(
        resp.text().contains("origin unreachable"),
        "{}",
        resp.text()
    );
    assert_eq!(resp.logs().endpoint("audit"), ["origin error todo:4"]);
}

#[edge_test(service = "todo", guest_timeout_ms = 1500)]
async fn a_hanging_origin_runs_the_guest_into_its_time_limit(edge: Edge) {
    Mock::given(path("/todos/5"))
        .respond_with(Reply::hang())
        .mount(&edge.backend("origin"));

    let failure = edge
        .get("/todos/5")
        .try_send()
        .await
        .expect_err("the guest cannot finish");

    assert!(failure.is_timeout(), "{failure}");
    assert!(
        failure.response().is_none(),
        "nothing was sent before the origin hung"
    );
}

#[edge_test(service = "todo")]
async fn a_slow_origin_within_the_limit_is_fine(edge: Edge) {
    Mock::given(path("/todos/6"))
        .respond_with(Reply::json(200, &todo(6, "slow")).delay(Duration::from_millis(200)))
        .mount(&edge.backend("origin"));
    assert_eq!(edge.get("/todos/6").send().await.status(), 200);
}

#[edge_test(service = "todo")]
async fn unknown_todos_are_not_found(edge: Edge) {
    Mock::given(path("/todos/404"))
        .respond_with(Reply::new(404))
        .expect(1)
        .mount(&edge.backend("origin"));
    let resp = edge.get("/todos/404").send().await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>(), json!({ "error": "no such todo" }));
}

#[edge_test(service = "todo")]
async fn malformed_ids_are_rejected_at_the_edge(edge: Edge) {
    let resp = edge.get("/todos/abc").send().await;
    assert_eq!(resp.status(), 400);
    assert!(resp.backend_calls().is_empty());
    assert!(edge.backend("origin").received().is_empty());
}

#[edge_test(service = "todo")]
async fn creating_a_todo_forwards_clean_json_to_the_origin(edge: Edge) {
    Mock::given(method("POST"))
        .and(path("/todos"))
        .and(header("authorization", "Bearer s3cr3t-token"))
        .and(body_json(&json!({ "title": "buy milk", "done": false })))
        .respond_with_fn(|req| {
            let mut created: Value = req.body_json();
            created["id"] = json!(42);
            Reply::json(201, &created)
        })
        .expect(1)
        .mount(&edge.backend("origin"));

    let resp = edge
        .post("/todos")
        .json(&json!({ "title": "  buy milk  " }))
        .send()
        .await;

    assert_eq!(resp.status(), 201);
    assert_eq!(
        resp.json::<Value>(),
        json!({ "id": 42, "title": "buy milk", "done": false })
    );
}

#[edge_test(service = "todo")]
async fn a_todo_without_a_title_never_reaches_the_origin(edge: Edge) {
    Mock::given(method("POST"))
        .respond_with(Reply::new(201))
        .expect(0)
        .mount(&edge.backend("origin"));

    let resp = edge
        .post("/todos")
        .json(&json!({ "done": true }))
        .send()
        .await;

    assert_eq!(resp.status(), 422);
    assert_eq!(
        resp.json::<Value>(),
        json!({ "error": "title is required" })
    );
}

#[edge_test(service = "todo")]
async fn purging_a_todo_sends_the_next_request_to_the_origin(edge: Edge) {
    origin_serves(&edge, 8, 2);

    assert_eq!(
        edge.get("/todos/8").send().await.header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        edge.get("/todos/8").send().await.header("x-cache"),
        Some("HIT")
    );
    let purge = edge.post("/todos/8/purge").send().await;
    assert_eq!(purge.status(), 202);
    assert_eq!(purge.logs().endpoint("audit"), ["purged todo-8"]);
    assert_eq!(
        edge.get("/todos/8").send().await.header("x-cache"),
        Some("MISS")
    );
}

#[edge_test(service = "todo")]
async fn the_feed_streams_one_json_line_per_todo(edge: Edge) {
    let todos = json!([todo(1, "a"), todo(2, "b"), todo(3, "c")]);
    Mock::given(method("GET"))
        .and(path("/todos"))
        .respond_with(Reply::json(200, &todos))
        .mount(&edge.backend("origin"));

    let resp = edge.get("/feed").send().await;

    assert_eq!(resp.status(), 200);
    assert_eq!(resp.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = resp
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(Value::Array(lines), todos);
    // Written after the stream finished, after the client had its response.
    assert_eq!(resp.logs().endpoint("audit"), ["feed streamed 3 items"]);
}

#[edge_test(service = "todo")]
async fn notes_start_as_fastly_toml_declares_them(edge: Edge) {
    let resp = edge.get("/notes/welcome").send().await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text(), "first note");
}

#[edge_test(service = "todo")]
async fn a_note_written_is_read_back_in_the_same_test(edge: Edge) {
    let put = edge
        .put("/notes/draft")
        .text("remember the milk")
        .send()
        .await;
    assert_eq!(put.status(), 204);
    assert_eq!(put.logs().endpoint("audit"), ["note draft written"]);

    let get = edge.get("/notes/draft").send().await;
    assert_eq!(get.text(), "remember the milk");
}

#[edge_test(service = "todo")]
async fn notes_written_by_other_tests_are_invisible(edge: Edge) {
    // `a_note_written_is_read_back_in_the_same_test` writes `draft` in its own KV store.
    assert_eq!(edge.get("/notes/draft").send().await.status(), 404);
}

#[edge_test(service = "todo")]
async fn the_greeting_uses_the_config_store_and_the_client_ip(edge: Edge) {
    let resp = edge
        .get("/greeting")
        .client_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)))
        .send()
        .await;
    assert_eq!(resp.text(), "hello from the edge, 203.0.113.7");
}

#[edge_test(service = "todo")]
async fn each_invocation_has_its_own_log_lines(edge: Edge) {
    origin_serves(&edge, 9, 1);

    let first = edge.get("/todos/9").send().await;
    let second = edge.get("/nowhere").send().await;

    assert_eq!(first.logs().endpoint("access"), ["GET /todos/9 200 MISS"]);
    assert_eq!(
        first.logs().endpoint("audit"),
        ["cache MISS todo:9 stored for 60s"]
    );
    assert_eq!(second.logs().endpoint("access"), ["GET /nowhere 404 -"]);
    assert!(second.logs().endpoint("audit").is_empty());
}

#[edge_test(service = "todo")]
async fn a_cache_hit_snapshot(edge: Edge) {
    Mock::given(path("/todos/10"))
        .respond_with(
            Reply::json(200, &todo(10, "snapshot me"))
                .header("date", "Sun, 22 Nov 2026 10:00:00 GMT"),
        )
        .mount(&edge.backend("origin"));

    edge.get("/todos/10").send().await;
    let hit = edge.get("/todos/10").send().await;

    edge_test::assert_snapshot!(hit);
    edge_test::assert_snapshot!("a_cache_hit_snapshot_logs", hit.logs());
}

#[edge_test(service = "todo")]
async fn an_origin_error_snapshot(edge: Edge) {
    Mock::given(path("/todos/11"))
        .respond_with(Reply::new(502))
        .mount(&edge.backend("origin"));
    let resp = edge.get("/todos/11").send().await;
    edge_test::assert_snapshot!(resp);
}

/// Plain `fn` tests work too, with the blocking variants of `send`.
#[edge_test(service = "todo")]
fn plain_fn_tests_use_send_blocking(edge: Edge) {
    origin_serves(&edge, 12, 1);
    let resp = edge.get("/todos/12").send_blocking();
    assert_eq!(resp.status(), 200);
}

#[edge_test(service = "todo")]
async fn localized_greetings_are_behind_a_flag(edge: Edge) {
    let berlin: IpAddr = "203.0.113.7".parse().unwrap();
    let greet = || {
        edge.get("/greeting")
            .client_ip(berlin)
            .geo(Geo::new().country_code("DE").city("Berlin"))
    };
    assert_eq!(
        greet().send().await.text(),
        "hello from the edge, 203.0.113.7"
    );

    edge.config_store("settings")
        .set("localized_greetings", "on");
    assert_eq!(greet().send().await.text(), "hallo, 203.0.113.7");
}

#[edge_test(service = "todo")]
async fn a_client_of_no_known_country_gets_the_default_greeting(edge: Edge) {
    edge.config_store("settings")
        .set("localized_greetings", "on");
    let response = edge
        .get("/greeting")
        .client_ip("198.51.100.1".parse().unwrap())
        .geo(Geo::new())
        .send()
        .await;
    assert_eq!(response.text(), "hello from the edge, 198.51.100.1");
}

#[edge_test(service = "todo")]
async fn a_tenant_plan_comes_from_its_kv_record(edge: Edge) {
    assert_eq!(edge.get("/tenants/acme/plan").send().await.text(), "pro");

    let tenants = edge.kv_store("tenants");
    tenants.insert("globex", r#"{"plan": "enterprise"}"#);
    tenants.remove("acme");
    assert_eq!(
        edge.get("/tenants/globex/plan").send().await.text(),
        "enterprise"
    );
    assert_eq!(edge.get("/tenants/acme/plan").send().await.status(), 404);
}

#[edge_test(service = "todo")]
async fn a_corrupt_tenant_record_is_a_server_error(edge: Edge) {
    edge.kv_store("tenants").insert("initech", "not json");
    let response = edge.get("/tenants/initech/plan").send().await;
    assert_eq!(response.status(), 500);
    assert_eq!(response.json::<Value>()["error"], "corrupt tenant record");
}

#[edge_test(service = "todo")]
async fn the_test_reads_the_note_the_guest_stored(edge: Edge) {
    let written = edge.put("/notes/groceries").text("milk").send().await;
    assert!(written.status().is_success(), "{}", written.text());
    let stored = edge.kv_store("notes").get("groceries").await;
    assert_eq!(stored.map(|note| note.text()).as_deref(), Some("milk"));
}

#[edge_test(service = "todo")]
async fn a_todo_already_in_the_cache_never_reaches_the_origin(edge: Edge) {
    origin_serves(&edge, 7, 0);
    let cached = todo(7, "seeded by the test").to_string();
    edge.cache().insert(
        CacheSeed::new("todo:7", cached.clone(), Duration::from_secs(60)).surrogate_key("todo-7"),
    );
    let response = edge.get("/todos/7").send().await;
    assert_eq!(response.header("x-cache"), Some("HIT"));
    assert_eq!(response.text(), cached);
}

#[edge_test(service = "todo")]
async fn what_the_guest_caches_carries_the_configured_ttl(edge: Edge) {
    origin_serves(&edge, 3, 1);
    edge.config_store("settings").set("cache_ttl_secs", "5");
    edge.get("/todos/3").send().await;
    let cached = edge
        .cache()
        .get("todo:3")
        .await
        .expect("a miss stores the todo");
    assert_eq!(cached.max_age, Duration::from_secs(5));
    assert_eq!(
        serde_json::from_slice::<Value>(&cached.body).unwrap(),
        todo(3, "write edge tests")
    );
}

#[edge_test(service = "todo")]
async fn a_rotated_origin_token_is_what_the_origin_sees(edge: Edge) {
    edge.secret_store("credentials")
        .set("origin_token", "rotated-token");
    Mock::given(method("GET"))
        .and(path("/todos/1"))
        .and(header("authorization", "Bearer rotated-token"))
        .respond_with(Reply::json(200, &todo(1, "write edge tests")))
        .expect(1)
        .mount(&edge.backend("origin"));
    assert_eq!(edge.get("/todos/1").send().await.status(), 200);
}

#[edge_test(service = "todo")]
async fn avatars_come_from_the_image_host_over_tls(edge: Edge) {
    Mock::given(method("GET"))
        .and(path("/u/ada.png"))
        .respond_with(
            Reply::new(200)
                .body(b"\x89PNG...".to_vec())
                .header("content-type", "image/png"),
        )
        .expect(1)
        .mount(&edge.dynamic_backend("avatars.example.net:443"));
    let response = edge.get("/avatars/ada").send().await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.header("content-type"), Some("image/png"));
    let [call] = response.backend_calls() else {
        panic!("one call to the image host: {:?}", response.backend_calls())
    };
    assert_eq!(call.header("host"), Some("avatars.example.net"));
    let registered = call.dynamic().expect("a dynamic backend");
    assert!(registered.use_tls, "the service asks for TLS");
    assert_eq!(registered.first_byte_timeout, Some(Duration::from_secs(2)));
}

#[edge_test(service = "todo")]
async fn a_missing_avatar_is_not_found(edge: Edge) {
    Mock::given(path("/u/nobody.png"))
        .respond_with(Reply::text(404, "no such image"))
        .mount(&edge.dynamic_backend("avatars.example.net:443"));
    let response = edge.get("/avatars/nobody").send().await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>()["error"],
        "no avatar (image host answered 404)"
    );
}
