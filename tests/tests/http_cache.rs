//! A guest's HTTP cache behaves as Fastly documents it for production: edge-test merges its
//! own implementation of `fastly_http_cache` into the guest (viceroy has none). Hits and
//! misses are read from the origin mock: a hit never reaches it. Time passes with
//! `edge.cache().advance`, never with sleeps. Runs under both executors (`.ci/run` runs it
//! again with `EDGE_TEST_HOST=off`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use edge_test::mock::matchers::{any, path};
use edge_test::mock::{Mock, Reply};
use edge_test::{Edge, edge_test};

/// Mounts an origin that answers `path` with `reply`, and returns how to count its calls.
fn origin(edge: &Edge, at: &str, reply: Reply) -> impl Fn() -> usize + use<> {
    Mock::given(path(at))
        .respond_with(reply)
        .mount(&edge.backend("origin"));
    let backend = edge.backend("origin");
    let at = at.to_owned();
    move || backend.received().iter().filter(|r| r.path() == at).count()
}

/// An origin whose body says how many times it was asked (`v1`, `v2`, ...).
fn counting_origin(edge: &Edge, at: &str, headers: &[(&str, &str)]) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    Mock::given(path(at))
        .respond_with_fn(move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            headers
                .iter()
                .fold(Reply::text(200, format!("v{n}")), |reply, (name, value)| {
                    reply.header(name.clone(), value.clone())
                })
        })
        .mount(&edge.backend("origin"));
    calls
}

#[edge_test(service = "http-cache")]
async fn a_cacheable_response_is_served_from_cache_the_second_time(edge: Edge) {
    Mock::given(path("/doc"))
        .respond_with(Reply::text(200, "from origin").header("cache-control", "max-age=60"))
        .expect(1)
        .mount(&edge.backend("origin"));
    let first = edge.get("/get/doc").send().await;
    assert_eq!(first.text(), "from origin");
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(first.header("x-cache-hits"), Some("0"));
    let second = edge.get("/get/doc").send().await;
    assert_eq!(second.text(), "from origin");
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.header("x-cache-hits"), Some("1"));
    assert_eq!(second.header("age"), Some("0"));
    let ttl: u64 = second.header("x-guest-ttl").unwrap().parse().unwrap();
    assert!(ttl <= 60 && ttl > 0, "the remaining TTL, {ttl}");
    let third = edge.get("/get/doc").send().await;
    assert_eq!(third.header("x-cache-hits"), Some("2"));
}

#[edge_test(service = "http-cache")]
async fn age_grows_as_time_passes_and_the_entry_expires_at_its_ttl(edge: Edge) {
    let calls = origin(
        &edge,
        "/aging",
        Reply::text(200, "aging").header("cache-control", "max-age=60"),
    );
    edge.get("/get/aging").send().await;
    edge.cache().advance(Duration::from_secs(59));
    let hit = edge.get("/get/aging").send().await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("age"), Some("59"));
    assert_eq!(calls(), 1);
    edge.cache().advance(Duration::from_secs(2));
    let expired = edge.get("/get/aging").send().await;
    assert_eq!(expired.header("x-cache"), Some("MISS"));
    assert_eq!(calls(), 2, "past its TTL the entry is fetched again");
}

/// The TTL a response's headers give, found by letting time pass: still a hit one second
/// before it, a miss one second after.
async fn assert_ttl(edge: &Edge, name: &str, headers: &[(&str, &str)], ttl: u64) {
    let at = format!("/{name}");
    let calls = counting_origin(edge, &at, headers);
    let route = format!("/get/{name}");
    edge.get(&route).send().await;
    edge.cache().advance(Duration::from_secs(ttl - 1));
    edge.get(&route).send().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "{name}: still fresh at {}s",
        ttl - 1
    );
    edge.cache().advance(Duration::from_secs(2));
    edge.get(&route).send().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "{name}: expired at {}s",
        ttl + 1
    );
}

#[edge_test(service = "http-cache")]
async fn the_ttl_comes_from_surrogate_control_then_s_maxage_then_max_age_then_expires(edge: Edge) {
    let surrogate = [
        ("surrogate-control", "max-age=30"),
        ("cache-control", "s-maxage=900, max-age=300"),
    ];
    assert_ttl(&edge, "surrogate", &surrogate, 30).await;
    let s_maxage = [("cache-control", "max-age=300, s-maxage=40")];
    assert_ttl(&edge, "s-maxage", &s_maxage, 40).await;
    assert_ttl(&edge, "max-age", &[("cache-control", "max-age=50")], 50).await;
    let expires = [
        ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("expires", "Sun, 06 Nov 1994 08:50:47 GMT"),
    ];
    assert_ttl(&edge, "expires", &expires, 70).await;
}

#[edge_test(service = "http-cache")]
async fn without_freshness_headers_a_response_is_kept_for_the_default_two_minutes(edge: Edge) {
    assert_ttl(&edge, "plain", &[], 120).await;
}

#[edge_test(service = "http-cache")]
async fn only_the_statuses_fastly_caches_are_stored(edge: Edge) {
    let not_found = origin(&edge, "/missing", Reply::text(404, "gone?"));
    let error = origin(&edge, "/broken", Reply::text(500, "oops"));
    let created = origin(&edge, "/created", Reply::text(201, "made"));
    for route in ["/get/missing", "/get/broken", "/get/created"] {
        edge.get(route).send().await;
        edge.get(route).send().await;
    }
    assert_eq!(not_found(), 1, "404 is cached");
    assert_eq!(error(), 2, "500 is not");
    assert_eq!(created(), 2, "201 is not");
}

#[edge_test(service = "http-cache")]
async fn private_no_store_set_cookie_and_vary_star_are_not_stored(edge: Edge) {
    let cases = [
        (
            "private",
            Reply::text(200, "p").header("cache-control", "private, max-age=60"),
        ),
        (
            "no-store",
            Reply::text(200, "n").header("cache-control", "no-store"),
        ),
        (
            "cookie",
            Reply::text(200, "c").header("set-cookie", "session=1"),
        ),
        ("vary-star", Reply::text(200, "v").header("vary", "*")),
    ];
    for (name, reply) in cases {
        let calls = origin(&edge, &format!("/{name}"), reply);
        edge.get(&format!("/get/{name}")).send().await;
        let second = edge.get(&format!("/get/{name}")).send().await;
        assert_eq!(calls(), 2, "{name} goes to the origin every time");
        assert_eq!(second.header("x-cache"), Some("MISS"), "{name}");
    }
    let kept = origin(
        &edge,
        "/surrogate-no-store",
        Reply::text(200, "kept")
            .header("cache-control", "no-store")
            .header("surrogate-control", "max-age=60"),
    );
    edge.get("/get/surrogate-no-store").send().await;
    edge.get("/get/surrogate-no-store").send().await;
    assert_eq!(kept(), 1, "Surrogate-Control overrides no-store for Fastly");
}

#[edge_test(service = "http-cache")]
async fn vary_keeps_one_variant_per_value_of_the_named_headers(edge: Edge) {
    Mock::given(path("/greeting"))
        .respond_with_fn(|request| {
            let language = request
                .header("accept-language")
                .unwrap_or("none")
                .to_owned();
            Reply::text(200, format!("hello in {language}"))
                .header("cache-control", "max-age=60")
                .header("vary", "Accept-Language")
        })
        .mount(&edge.backend("origin"));
    let ask = |language: &'static str| {
        edge.get("/get/greeting")
            .header("accept-language", language)
            .send()
    };
    assert_eq!(ask("en").await.text(), "hello in en");
    assert_eq!(ask("fr").await.text(), "hello in fr");
    let again = ask("en").await;
    assert_eq!(again.text(), "hello in en");
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_eq!(ask("fr").await.header("x-cache"), Some("HIT"));
    assert_eq!(edge.backend("origin").received().len(), 2);
}

#[edge_test(service = "http-cache")]
async fn post_and_pass_requests_are_never_cached(edge: Edge) {
    let calls = origin(
        &edge,
        "/always",
        Reply::text(200, "fresh").header("cache-control", "max-age=60"),
    );
    for route in [
        "/post/always",
        "/post/always",
        "/pass/always",
        "/pass/always",
    ] {
        let response = edge.get(route).send().await;
        assert_eq!(response.text(), "fresh", "{route}");
    }
    assert_eq!(calls(), 4);
    edge.get("/get/always").send().await;
    assert_eq!(calls(), 5, "the passes stored nothing");
}

#[edge_test(service = "http-cache")]
async fn head_requests_are_cached_like_gets(edge: Edge) {
    let calls = origin(
        &edge,
        "/headed",
        Reply::text(200, "").header("cache-control", "max-age=60"),
    );
    edge.get("/head/headed").send().await;
    let second = edge.get("/head/headed").send().await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(calls(), 1);
}

#[edge_test(service = "http-cache")]
async fn a_cache_override_ttl_beats_the_headers(edge: Edge) {
    let calls = origin(
        &edge,
        "/short",
        Reply::text(200, "short").header("cache-control", "max-age=3600"),
    );
    edge.get("/ttl/5/short").send().await;
    edge.cache().advance(Duration::from_secs(4));
    edge.get("/ttl/5/short").send().await;
    assert_eq!(calls(), 1);
    edge.cache().advance(Duration::from_secs(2));
    edge.get("/ttl/5/short").send().await;
    assert_eq!(
        calls(),
        2,
        "expired at the override's 5 s, not the header's hour"
    );
}

#[edge_test(service = "http-cache")]
async fn within_stale_while_revalidate_the_stale_copy_is_served_and_refreshed(edge: Edge) {
    let calls = counting_origin(
        &edge,
        "/swr",
        &[("cache-control", "max-age=10, stale-while-revalidate=60")],
    );
    assert_eq!(edge.get("/get/swr").send().await.text(), "v1");
    edge.cache().advance(Duration::from_secs(15));
    let stale = edge.get("/get/swr").send().await;
    assert_eq!(stale.text(), "v1", "the stale copy, at once");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "and the origin was asked again in the background"
    );
    let fresh = edge.get("/get/swr").send().await;
    assert_eq!(fresh.text(), "v2");
    assert_eq!(fresh.header("x-cache"), Some("HIT"));
}

#[edge_test(service = "http-cache")]
async fn a_stale_entry_is_revalidated_with_its_validators_and_a_304_freshens_it(edge: Edge) {
    Mock::given(path("/etagged"))
        .respond_with_fn(|request| match request.header("if-none-match") {
            Some("\"v1\"") => Reply::new(304).header("cache-control", "max-age=100"),
            _ => Reply::text(200, "tagged body")
                .header("etag", "\"v1\"")
                .header("cache-control", "max-age=10, stale-while-revalidate=60"),
        })
        .mount(&edge.backend("origin"));
    edge.get("/get/etagged").send().await;
    edge.cache().advance(Duration::from_secs(15));
    assert_eq!(edge.get("/get/etagged").send().await.text(), "tagged body");
    let received = edge.backend("origin").received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].header("if-none-match"), Some("\"v1\""));
    edge.cache().advance(Duration::from_secs(50));
    let after = edge.get("/get/etagged").send().await;
    assert_eq!(after.text(), "tagged body", "the body kept through the 304");
    assert_eq!(
        edge.backend("origin").received().len(),
        2,
        "the 304's max-age=100 made it fresh again"
    );
}

#[edge_test(service = "http-cache")]
async fn stale_if_error_serves_the_stale_copy_when_the_origin_fails(edge: Edge) {
    let origin = edge.backend("origin");
    Mock::given(path("/fragile"))
        .respond_with(
            Reply::text(200, "last good copy")
                .header("cache-control", "max-age=10, stale-if-error=300"),
        )
        .up_to_n_times(1)
        .mount(&origin);
    Mock::given(path("/fragile"))
        .respond_with(Reply::drop_connection())
        .mount(&origin);
    edge.get("/get/fragile").send().await;
    edge.cache().advance(Duration::from_secs(20));
    let rescued = edge.get("/get/fragile").send().await;
    assert_eq!(rescued.status(), 200);
    assert_eq!(rescued.text(), "last good copy");
    assert_eq!(origin.received().len(), 2, "the origin was tried first");
}

#[edge_test(service = "http-cache")]
async fn before_send_changes_reach_the_origin_on_a_miss_only(edge: Edge) {
    let calls = origin(
        &edge,
        "/hooked",
        Reply::text(200, "hooked").header("cache-control", "max-age=60"),
    );
    edge.get("/before/hooked").send().await;
    edge.get("/before/hooked").send().await;
    assert_eq!(calls(), 1);
    let received = edge.backend("origin").received();
    assert_eq!(received[0].header("x-before"), Some("applied"));
}

#[edge_test(service = "http-cache")]
async fn after_send_sets_ttl_headers_surrogate_keys_and_transforms_the_body(edge: Edge) {
    let calls = origin(
        &edge,
        "/edited",
        Reply::text(200, "lower case").header("cache-control", "max-age=0"),
    );
    let miss = edge.get("/after/edited").send().await;
    assert_eq!(miss.text(), "LOWER CASE");
    assert_eq!(miss.header("x-after"), Some("applied"));
    edge.cache().advance(Duration::from_secs(299));
    let hit = edge.get("/after/edited").send().await;
    assert_eq!(
        hit.header("x-cache"),
        Some("HIT"),
        "after_send's 300 s beat max-age=0"
    );
    assert_eq!(hit.text(), "LOWER CASE", "the transformed body was stored");
    assert_eq!(hit.header("x-after"), Some("applied"));
    assert_eq!(calls(), 1);
    edge.cache().purge_surrogate_key("after-key");
    edge.get("/after/edited").send().await;
    assert_eq!(calls(), 2, "after_send's surrogate key purges it");
}

#[edge_test(service = "http-cache")]
async fn after_send_can_refuse_or_force_caching(edge: Edge) {
    let refused = origin(
        &edge,
        "/refused",
        Reply::text(200, "r").header("cache-control", "max-age=60"),
    );
    edge.get("/after-uncacheable/refused").send().await;
    edge.get("/after-uncacheable/refused").send().await;
    assert_eq!(refused(), 2);
    let forced = origin(
        &edge,
        "/forced",
        Reply::text(200, "f").header("cache-control", "private"),
    );
    edge.get("/after-cacheable/forced").send().await;
    edge.get("/after-cacheable/forced").send().await;
    assert_eq!(forced(), 1);
}

#[edge_test(service = "http-cache")]
async fn surrogate_keys_purge_from_the_guest_and_from_the_test(edge: Edge) {
    let tagged = origin(
        &edge,
        "/tagged",
        Reply::text(200, "t")
            .header("cache-control", "max-age=600")
            .header("surrogate-key", "products product-7"),
    );
    let overridden = origin(
        &edge,
        "/overridden",
        Reply::text(200, "o").header("cache-control", "max-age=600"),
    );
    edge.get("/get/tagged").send().await;
    edge.get("/surrogate/from-request/overridden").send().await;
    assert_eq!(edge.get("/purge/product-7").send().await.text(), "purged");
    edge.get("/get/tagged").send().await;
    assert_eq!(tagged(), 2, "the guest's purge of a response-header key");
    edge.cache().purge_surrogate_key("from-request");
    edge.get("/surrogate/from-request/overridden").send().await;
    assert_eq!(overridden(), 2, "the test's purge of a CacheOverride key");
}

#[edge_test(service = "http-cache")]
async fn a_cache_key_override_shares_one_entry_between_urls(edge: Edge) {
    let calls = counting_origin(&edge, "/a", &[("cache-control", "max-age=60")]);
    Mock::given(path("/b"))
        .respond_with(Reply::text(200, "b"))
        .expect(0)
        .mount(&edge.backend("origin"));
    assert_eq!(edge.get("/keyed/shared/a").send().await.text(), "v1");
    assert_eq!(edge.get("/keyed/shared/b").send().await.text(), "v1");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[edge_test(service = "http-cache")]
async fn concurrent_identical_misses_are_collapsed_into_one_fetch(edge: Edge) {
    Mock::given(path("/slow"))
        .respond_with(
            Reply::text(200, "once")
                .header("cache-control", "max-age=60")
                .delay(Duration::from_millis(200)),
        )
        .expect(1)
        .mount(&edge.backend("origin"));
    let both = edge.get("/pair/slow").send().await;
    assert_eq!(both.text(), "once,once");
}

#[edge_test(service = "http-cache")]
async fn send_async_and_wait_use_the_cache(edge: Edge) {
    let calls = origin(
        &edge,
        "/later",
        Reply::text(200, "later").header("cache-control", "max-age=60"),
    );
    edge.get("/async/later").send().await;
    let second = edge.get("/async/later").send().await;
    assert_eq!(second.text(), "later");
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(calls(), 1);
}

#[edge_test(service = "http-cache")]
async fn a_service_shaped_like_crates_io_static_tags_and_keeps_objects(edge: Edge) {
    let calls = origin(
        &edge,
        "/crates/serde/serde-1.0.0.crate",
        Reply::text(200, "crate bytes")
            .header("x-amz-request-id", "abc")
            .header("x-amz-id-2", "def"),
    );
    let first = edge
        .get("/crates/crates/serde/serde-1.0.0.crate")
        .send()
        .await;
    assert_eq!(
        first.header("x-amz-request-id"),
        None,
        "after_send dropped S3's headers"
    );
    edge.cache().advance(Duration::from_secs(30 * 24 * 3600));
    let later = edge
        .get("/crates/crates/serde/serde-1.0.0.crate")
        .send()
        .await;
    assert_eq!(later.header("x-cache"), Some("HIT"), "a year's TTL");
    assert_eq!(later.header("x-amz-id-2"), None);
    assert_eq!(calls(), 1);
    edge.cache().purge_surrogate_key("crate-serde");
    edge.get("/crates/crates/serde/serde-1.0.0.crate")
        .send()
        .await;
    assert_eq!(calls(), 2, "a publish purges the crate's key");
}

#[edge_test(service = "http-cache")]
async fn a_service_shaped_like_the_advanced_caching_kit_normalises_and_chooses_ttls(edge: Edge) {
    let image = origin(
        &edge,
        "/logo.png",
        Reply::new(200)
            .header("content-type", "image/png")
            .body("png"),
    );
    let page = origin(
        &edge,
        "/page",
        Reply::new(200)
            .body("html")
            .header("content-type", "text/html")
            .header("set-cookie", "tracking=1"),
    );
    let failing = origin(&edge, "/failing", Reply::text(503, "down"));
    edge.get("/kit/logo.png")
        .header("cookie", "session=secret")
        .send()
        .await;
    let received = edge.backend("origin").received();
    assert_eq!(
        received[0].header("cookie"),
        None,
        "before_send removed the cookie"
    );
    assert_eq!(received[0].header("x-origin-auth"), Some("kit-secret"));
    let first_page = edge.get("/kit/page").send().await;
    assert_eq!(first_page.header("set-cookie"), None);
    edge.cache().advance(Duration::from_secs(61));
    edge.get("/kit/logo.png").send().await;
    edge.get("/kit/page").send().await;
    assert_eq!(image(), 1, "images live an hour");
    assert_eq!(
        page(),
        2,
        "a response that set a cookie stays uncacheable though after_send dropped the \
         cookie: the SDK decides before the hook runs, as in production"
    );
    edge.get("/kit/failing").send().await;
    edge.get("/kit/failing").send().await;
    assert_eq!(failing(), 2, "a 503 is never kept");
}

#[edge_test(service = "http-cache")]
async fn every_test_starts_with_an_empty_http_cache_a(edge: Edge) {
    starts_empty(edge).await;
}

#[edge_test(service = "http-cache")]
async fn every_test_starts_with_an_empty_http_cache_b(edge: Edge) {
    starts_empty(edge).await;
}

async fn starts_empty(edge: Edge) {
    let calls = origin(
        &edge,
        "/shared-name",
        Reply::text(200, "mine").header("cache-control", "max-age=600"),
    );
    let first = edge.get("/get/shared-name").send().await;
    assert_eq!(
        first.header("x-cache"),
        Some("MISS"),
        "another test's entry is not here"
    );
    assert_eq!(calls(), 1);
}

#[edge_test(service = "http-cache")]
async fn http_cache_entries_are_listed_with_the_core_cache(edge: Edge) {
    let calls = origin(
        &edge,
        "/listed",
        Reply::text(200, "listed body")
            .header("cache-control", "max-age=60")
            .header("surrogate-key", "list-me"),
    );
    edge.get("/get/listed").send().await;
    edge.get("/get/listed").send().await;
    assert_eq!(calls(), 1);
    let entries = edge.cache().entries().await;
    let keys: Vec<String> = entries
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(keys, ["http:https://origin.example.com/listed"]);
    let entry = entries.values().next().unwrap();
    assert_eq!(entry.text(), "listed body");
    assert_eq!(entry.max_age, Duration::from_secs(60));
    assert_eq!(
        entry.surrogate_keys.as_deref(),
        Some(&["list-me".to_owned()][..])
    );
}

#[edge_test(service = "http-cache-off")]
async fn a_service_that_opts_out_reaches_the_origin_every_time(edge: Edge) {
    Mock::given(any())
        .respond_with(Reply::text(200, "from origin").header("cache-control", "max-age=60"))
        .expect(2)
        .mount(&edge.backend("origin"));
    edge.get("/get/doc").send().await;
    edge.get("/get/doc").send().await;
}

#[edge_test(service = "http-cache-off")]
async fn without_the_http_cache_a_hook_fails_as_viceroy_fails_it(edge: Edge) {
    Mock::given(any())
        .respond_with(Reply::text(200, "unreached"))
        .expect(0)
        .mount(&edge.backend("origin"));
    let response = edge.get("/before/hooked").send().await;
    assert_eq!(response.status(), 500);
    assert!(
        response.text().contains("HTTP caching API is not enabled"),
        "{}",
        response.text()
    );
}

#[edge_test(service = "http-cache")]
async fn a_difference_from_production_is_named_in_the_logs_when_it_happens(edge: Edge) {
    let calls = counting_origin(
        &edge,
        "/resilient",
        &[("cache-control", "max-age=10, stale-if-error=300")],
    );
    edge.get("/get/resilient").send().await;
    edge.cache().advance(Duration::from_secs(20));
    // Two identical sends while the object is only usable if the origin fails: the first
    // refetches; the second, in production, would wait for it.
    let pair = edge.get("/pair/resilient").send().await;
    let mut bodies: Vec<&str> = pair.text().split(',').collect();
    bodies.sort();
    assert_eq!(
        bodies,
        ["v1", "v2"],
        "one refetched, one served the stale copy"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let named = pair.logs().endpoint("edge-test:http-cache");
    assert_eq!(named.len(), 1, "{named:?}");
    assert!(named[0].starts_with("stale-if-error: "), "{}", named[0]);
}

#[edge_test(service = "http-cache")]
async fn a_guest_whose_stack_reaches_the_http_cache_is_stopped_saying_so(edge: Edge) {
    let calls = origin(&edge, "/deep", Reply::text(200, "deep"));
    let shallow = edge.get("/deep/600/deep").send().await;
    assert_eq!(shallow.text(), "deep");
    assert_eq!(calls(), 1);
    let failure = edge
        .get("/deep/110/deep")
        .try_send()
        .await
        .expect_err("stopped");
    let text = failure.to_string();
    assert!(
        text.contains("edge-test:http-cache :: stack: the guest's stack grew into the memory"),
        "{text}"
    );
}

#[test]
fn a_guest_the_http_cache_cannot_be_merged_into_is_refused_saying_how_to_opt_out() {
    let failure =
        Edge::start("http-cache-low-stack", "http_cache::refused").expect_err("refused at load");
    let text = failure.to_string();
    assert!(
        text.contains("edge-test cannot give it Fastly's HTTP cache"),
        "{text}"
    );
    assert!(
        text.contains("its shadow stack starts at 0x10000: too low"),
        "{text}"
    );
    assert!(
        text.contains("`Service::http_cache(false)` runs it without one"),
        "{text}"
    );

    let edge = Edge::start("http-cache-low-stack-off", "http_cache::opted_out").unwrap();
    assert_eq!(edge.get("/").send_blocking().status(), 200);
}
