//! A test sets the platform its guest reads: config store entries and geolocation, each the
//! test's own, reaching the guest at its next invocation, with no compile. Runs under both
//! executors (`.ci/run` runs it again with `EDGE_TEST_HOST=off`).

mod support;

use std::net::IpAddr;
use std::time::Duration;

use edge_test::{Edge, Geo, edge_test};
use serde_json::{Value, json};
use support::Internals;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

async fn json_of(edge: &Edge, path: &str, client: IpAddr) -> Value {
    let response = edge.get(path).client_ip(client).send().await;
    assert_eq!(response.status(), 200, "{}", response.text());
    serde_json::from_str(response.text()).unwrap()
}

#[edge_test(service = "misbehave")]
async fn a_config_store_starts_as_fastly_toml_declares_it(edge: Edge) {
    let declared = edge.get("/config/flags/declared").send().await;
    assert_eq!(declared.text(), "from fastly.toml");
    let absent = edge.get("/config/flags/beta").send().await;
    assert_eq!((absent.status().as_u16(), absent.text()), (404, "absent"));
}

#[edge_test(service = "misbehave")]
async fn set_and_remove_reach_the_next_invocation(edge: Edge) {
    let flags = edge.config_store("flags");
    flags.set("beta", "on");
    assert_eq!(edge.get("/config/flags/beta").send().await.text(), "on");

    flags.set("beta", "off").set("declared", "replaced");
    assert_eq!(edge.get("/config/flags/beta").send().await.text(), "off");
    assert_eq!(
        edge.get("/config/flags/declared").send().await.text(),
        "replaced"
    );

    flags.remove("beta").remove("declared");
    assert_eq!(edge.get("/config/flags/beta").send().await.status(), 404);
    assert_eq!(
        edge.get("/config/flags/declared").send().await.status(),
        404,
        "an entry fastly.toml declares can be removed too"
    );
}

#[edge_test(service = "misbehave")]
fn a_blocking_test_sets_entries_too(edge: Edge) {
    edge.config_store("flags").set("mode", "blocking");
    assert_eq!(
        edge.get("/config/flags/mode").send_blocking().text(),
        "blocking"
    );
}

/// Concurrent tests (libtest threads, or processes under nextest) set the same key; each
/// must only see its own value, and none compiles a template of its own for it.
async fn claim_the_shared_flag(edge: Edge, me: &str) {
    assert_eq!(
        edge.get("/config/flags/shared").send().await.status(),
        404,
        "another test's entry leaked into a pristine edge"
    );
    let before = edge.template_id();
    edge.config_store("flags").set("shared", me);
    edge.set_geo(ip("198.51.100.1"), &Geo::new().city(me));
    assert_eq!(edge.get("/config/flags/shared").send().await.text(), me);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        edge.get("/config/flags/shared").send().await.text(),
        me,
        "another test's entry leaked in"
    );
    let geo = json_of(&edge, "/geo-of/198.51.100.1", ip("127.0.0.1")).await;
    assert_eq!(geo["city"], me, "another test's geolocation leaked in");
    assert_eq!(
        edge.template_id(),
        before,
        "a change compiled nothing: same worker, same template"
    );
    if let Some(template) = before {
        let other = Edge::start("misbehave", "platform::other").unwrap();
        assert_eq!(
            other.template_id(),
            Some(template),
            "an edge with no changes runs the same template"
        );
    }
}

#[edge_test(service = "misbehave")]
async fn shared_flag_a(edge: Edge) {
    claim_the_shared_flag(edge, "a").await;
}

#[edge_test(service = "misbehave")]
async fn shared_flag_b(edge: Edge) {
    claim_the_shared_flag(edge, "b").await;
}

#[edge_test(service = "misbehave")]
async fn shared_flag_c(edge: Edge) {
    claim_the_shared_flag(edge, "c").await;
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "service `misbehave` declares no config store `feature-flags`; declared config stores: flags"
)]
async fn an_unknown_config_store_is_named_with_the_declared_ones(edge: Edge) {
    let _ = edge.config_store("feature-flags");
}

#[edge_test(service = "misbehave-reseeded")]
#[should_panic(expected = "declares no config store `flags`; declared config stores: none")]
async fn a_service_without_config_stores_says_how_to_declare_one(edge: Edge) {
    let _ = edge.config_store("flags");
}

#[edge_test(service = "misbehave")]
#[should_panic(expected = "a config store value has at most 8000")]
async fn a_value_past_the_limit_fails_at_the_call(edge: Edge) {
    edge.config_store("flags").set("big", "x".repeat(8001));
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "\"\" cannot be a key of config store `flags`: it has 1 to 256 characters"
)]
async fn an_empty_key_fails_at_the_call(edge: Edge) {
    edge.config_store("flags").set("", "v");
}

#[edge_test(service = "misbehave")]
async fn the_client_geolocation_is_set_per_request(edge: Edge) {
    let client = ip("203.0.113.9");
    let response = edge
        .get("/geo")
        .client_ip(client)
        .geo(Geo::new().country_code("DE").city("Berlin").utc_offset(100))
        .send()
        .await;
    let geo: Value = serde_json::from_str(response.text()).unwrap();
    assert_eq!(
        geo,
        json!({
            "country_code": "DE", "city": "Berlin", "utc_offset": 1,
            // Unset: what production reads for an address it knows nothing about.
            "as_number": 0, "latitude": 999.0, "region": null, "continent": "Other(\"\")",
        })
    );
    let again = json_of(&edge, "/geo", client).await;
    assert_eq!(
        again["city"], "Berlin",
        "the record stays for later requests"
    );
}

#[edge_test(service = "misbehave")]
async fn geolocation_declared_in_fastly_toml_is_kept_until_the_test_replaces_it(edge: Edge) {
    let declared = ip("192.0.2.10");
    let geo = json_of(&edge, "/geo", declared).await;
    assert_eq!(
        (geo["country_code"].as_str(), geo["city"].as_str()),
        (Some("NO"), Some("Declared City"))
    );
    edge.set_geo(declared, &Geo::new().country_code("SE"));
    let geo = json_of(&edge, "/geo", declared).await;
    assert_eq!(geo["country_code"], "SE");
    assert_eq!(
        geo["city"], "",
        "a replaced record is the test's whole record"
    );
}

#[edge_test(service = "misbehave")]
async fn the_loopback_default_and_unknown_addresses_are_as_viceroy_has_them(edge: Edge) {
    let loopback = json_of(&edge, "/geo", ip("127.0.0.1")).await;
    assert_eq!(loopback["city"], "San Francisco");
    let unknown = edge.get("/geo").client_ip(ip("198.51.100.77")).send().await;
    assert_eq!(
        (unknown.status().as_u16(), unknown.text()),
        (404, "no geolocation")
    );
}

#[edge_test(service = "misbehave")]
async fn kv_entries_set_by_the_test_reach_the_guest(edge: Edge) {
    let data = edge.kv_store("data");
    data.insert("tenant", "acme")
        .insert_with_metadata("plan", "pro", "since=2026");
    assert_eq!(edge.get("/kv/tenant").send().await.text(), "acme");
    assert_eq!(edge.get("/kv-meta/plan").send().await.text(), "since=2026");
    assert_eq!(
        edge.get("/kv-meta/tenant").send().await.text(),
        "no metadata"
    );

    data.insert("tenant", "globex").remove("seed");
    assert_eq!(edge.get("/kv/tenant").send().await.text(), "globex");
    assert_eq!(
        edge.get("/kv/seed").send().await.status(),
        404,
        "an entry fastly.toml seeds can be removed"
    );
}

#[edge_test(service = "misbehave")]
async fn the_test_reads_what_the_guest_stored(edge: Edge) {
    let data = edge.kv_store("data");
    let before = data.entries().await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["seed"],
        "only what fastly.toml seeds"
    );
    assert_eq!(before["seed"].text(), "from fastly.toml");

    assert_eq!(edge.put("/kv/written/by-guest").send().await.status(), 201);
    let stored = data.get("written").await.expect("the guest stored it");
    assert_eq!(
        stored,
        edge_test::KvEntry {
            value: "by-guest".into(),
            metadata: None
        }
    );
    data.insert("pending", "applied before the read");
    assert_eq!(
        data.get("pending").await.map(|e| e.text()).as_deref(),
        Some("applied before the read")
    );
}

#[edge_test(service = "misbehave")]
fn a_blocking_test_reads_kv_too(edge: Edge) {
    edge.put("/kv/k/v").send_blocking();
    let entries = edge.kv_store("data").entries_blocking();
    assert_eq!(entries["k"].text(), "v");
}

/// Concurrent tests write the same KV key through the test API; each sees only its own.
async fn claim_the_shared_kv_key(edge: Edge, me: &str) {
    let data = edge.kv_store("data");
    assert_eq!(data.get("shared").await, None, "a pristine store");
    data.insert("shared", me.to_owned());
    assert_eq!(edge.get("/kv/shared").send().await.text(), me);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        data.get("shared").await.map(|e| e.text()).as_deref(),
        Some(me)
    );
}

#[edge_test(service = "misbehave")]
async fn shared_kv_a(edge: Edge) {
    claim_the_shared_kv_key(edge, "a").await;
}

#[edge_test(service = "misbehave")]
async fn shared_kv_b(edge: Edge) {
    claim_the_shared_kv_key(edge, "b").await;
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "service `misbehave` declares no KV store `sessions`; declared KV stores: data"
)]
async fn an_unknown_kv_store_is_named_with_the_declared_ones(edge: Edge) {
    let _ = edge.kv_store("sessions");
}

#[edge_test(service = "misbehave")]
#[should_panic(
    expected = "\"a/../b\" cannot be a key of KV store `data`: a key may not be or hold a `.` or `..` path segment"
)]
async fn a_key_the_kv_store_refuses_fails_at_the_call(edge: Edge) {
    edge.kv_store("data").insert("a/../b", "v");
}

mod cache {
    use std::time::Duration;

    use edge_test::{CacheSeed, Edge, edge_test};
    use serde_json::Value;

    const MINUTE: Duration = Duration::from_secs(60);

    async fn meta(edge: &Edge, key: &str) -> Value {
        let response = edge.get(&format!("/cache-meta/{key}")).send().await;
        assert_eq!(response.status(), 200, "{key} is not cached");
        serde_json::from_str(response.text()).unwrap()
    }

    #[edge_test(service = "misbehave")]
    async fn a_seeded_entry_is_the_guests_first_lookup(edge: Edge) {
        edge.cache()
            .insert(CacheSeed::new("greeting", "seeded", MINUTE).user_metadata("v1"));
        assert_eq!(edge.get("/cache/greeting").send().await.text(), "seeded");
        let meta = meta(&edge, "greeting").await;
        assert_eq!(meta["user_metadata"], "v1");
        assert_eq!(meta["max_age_secs"], 60);
        assert_eq!(meta["stale"], false);
    }

    #[edge_test(service = "misbehave")]
    async fn a_seeded_age_makes_an_entry_stale_without_waiting(edge: Edge) {
        edge.cache().insert(
            CacheSeed::new("old", "body", MINUTE)
                .age(Duration::from_secs(90))
                .stale_while_revalidate(MINUTE),
        );
        let meta = meta(&edge, "old").await;
        assert_eq!(meta["stale"], true, "{meta}");
        assert!(meta["age_secs"].as_u64().unwrap() >= 90, "{meta}");
    }

    #[edge_test(service = "misbehave")]
    async fn an_entry_aged_past_its_ttl_is_a_miss(edge: Edge) {
        edge.cache()
            .insert(CacheSeed::new("expired", "body", MINUTE).age(Duration::from_secs(61)));
        assert_eq!(edge.get("/cache/expired").send().await.status(), 404);
    }

    #[edge_test(service = "misbehave")]
    async fn the_test_reads_what_the_guest_cached(edge: Edge) {
        assert_eq!(
            edge.cache().get("fresh").await,
            None,
            "the cache starts empty"
        );
        assert_eq!(edge.put("/cache/fresh/stored").send().await.status(), 201);
        let cached = edge
            .cache()
            .get("fresh")
            .await
            .expect("the guest cached it");
        assert_eq!(cached.text(), "stored");
        assert_eq!(cached.max_age, Duration::from_secs(600));
        assert!(cached.ttl_left() <= Duration::from_secs(600));
        assert!(cached.ttl_left() > Duration::from_secs(500), "{cached:?}");
    }

    #[edge_test(service = "misbehave")]
    fn a_blocking_test_reads_the_cache_too(edge: Edge) {
        edge.put("/cache/k/v").send_blocking();
        assert_eq!(
            edge.cache().get_blocking("k").map(|c| c.text()).as_deref(),
            Some("v")
        );
    }

    #[edge_test(service = "misbehave")]
    async fn the_test_purges_by_surrogate_key_what_either_side_stored(edge: Edge) {
        edge.cache()
            .insert(CacheSeed::new("seeded", "a", MINUTE).surrogate_key("todos"))
            .insert(CacheSeed::new("other", "b", MINUTE).surrogate_key("users"));
        assert_eq!(
            edge.put("/cache-tagged/stored/c/todos")
                .send()
                .await
                .status(),
            201
        );
        edge.cache().purge_surrogate_key("todos");
        assert_eq!(edge.get("/cache/seeded").send().await.status(), 404);
        assert_eq!(edge.get("/cache/stored").send().await.status(), 404);
        assert_eq!(
            edge.get("/cache/other").send().await.text(),
            "b",
            "an entry without the key stays"
        );
    }

    #[edge_test(service = "misbehave")]
    async fn the_guests_purge_reaches_a_seeded_entry(edge: Edge) {
        edge.cache()
            .insert(CacheSeed::new("seeded", "a", MINUTE).surrogate_key("todos"));
        assert_eq!(edge.get("/purge/todos").send().await.text(), "purged");
        assert_eq!(edge.cache().get("seeded").await, None);
    }

    #[edge_test(service = "misbehave")]
    async fn the_test_purges_one_key(edge: Edge) {
        assert_eq!(edge.put("/cache/gone/v").send().await.status(), 201);
        assert_eq!(edge.put("/cache/kept/v").send().await.status(), 201);
        edge.cache().purge_key("gone");
        assert_eq!(edge.get("/cache/gone").send().await.status(), 404);
        assert_eq!(edge.get("/cache/kept").send().await.text(), "v");
    }

    #[edge_test(service = "misbehave")]
    async fn the_test_lists_what_the_guest_and_the_test_stored(edge: Edge) {
        edge.cache()
            .insert(CacheSeed::new("seeded", "a", MINUTE).surrogate_key("s1"));
        let stored = edge.put("/cache-tagged/stored/b/todos").send().await;
        assert_eq!(stored.status(), 201);
        assert!(
            stored
                .logs()
                .lines()
                .iter()
                .all(|line| !line.endpoint.starts_with("edge-test")),
            "edge-test's reports never reach the test's logs: {:?}",
            stored.logs()
        );
        assert_eq!(
            edge.put("/cache-tx/transacted/c/tx-key")
                .send()
                .await
                .status(),
            201
        );
        assert_eq!(
            edge.get("/cache/never-stored").send().await.status(),
            404,
            "a key only looked up"
        );
        let entries = edge.cache().entries().await;
        let listed: Vec<_> = entries
            .iter()
            .map(|(key, entry)| (&key[..], entry.text(), entry.surrogate_keys.clone()))
            .collect();
        assert_eq!(
            listed,
            [
                (&b"seeded"[..], "a".to_owned(), Some(vec!["s1".to_owned()])),
                (
                    &b"stored"[..],
                    "b".to_owned(),
                    Some(vec!["todos".to_owned()])
                ),
                (
                    &b"transacted"[..],
                    "c".to_owned(),
                    Some(vec!["tx-key".to_owned()])
                ),
            ]
        );
        let transacted = &entries[&b"transacted"[..]];
        assert_eq!(transacted.max_age, Duration::from_secs(300));
        assert_eq!(
            transacted.stale_while_revalidate,
            Some(Duration::from_secs(30))
        );
        assert_eq!(transacted.length, Some(1));
    }

    #[edge_test(service = "misbehave")]
    async fn time_passes_for_the_cache_without_sleeping(edge: Edge) {
        assert_eq!(edge.put("/cache/kept/v").send().await.status(), 201);
        edge.cache().insert(
            CacheSeed::new("revalidated", "r", MINUTE)
                .stale_while_revalidate(MINUTE)
                .surrogate_key("tagged"),
        );
        edge.cache().advance(Duration::from_secs(90));
        let revalidated = meta(&edge, "revalidated").await;
        assert_eq!(
            revalidated["stale"], true,
            "past its TTL, within stale-while-revalidate"
        );
        assert!(revalidated["age_secs"].as_u64().unwrap() >= 90);
        assert_eq!(meta(&edge, "kept").await["stale"], false, "600 s of TTL");

        edge.cache().advance(Duration::from_secs(31));
        assert_eq!(
            edge.get("/cache/revalidated").send().await.status(),
            404,
            "past its TTL and its stale-while-revalidate period"
        );
        edge.cache().advance(Duration::from_secs(480));
        assert_eq!(edge.get("/cache/kept").send().await.status(), 404);
    }

    #[edge_test(service = "misbehave")]
    async fn an_aged_entry_keeps_its_surrogate_keys(edge: Edge) {
        assert_eq!(edge.put("/cache-tagged/k/v/tag").send().await.status(), 201);
        edge.cache().advance(Duration::from_secs(10));
        let aged = edge.cache().get("k").await.expect("still fresh");
        assert!(aged.age >= Duration::from_secs(10), "{aged:?}");
        edge.cache().purge_surrogate_key("tag");
        assert_eq!(edge.get("/cache/k").send().await.status(), 404);
    }

    async fn claim_the_shared_cache_key(edge: Edge, me: &str) {
        assert_eq!(edge.cache().get("shared").await, None, "a pristine cache");
        edge.cache()
            .insert(CacheSeed::new("shared", me.to_owned(), MINUTE));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(edge.get("/cache/shared").send().await.text(), me);
    }

    #[edge_test(service = "misbehave")]
    async fn shared_cache_a(edge: Edge) {
        claim_the_shared_cache_key(edge, "a").await;
    }

    #[edge_test(service = "misbehave")]
    async fn shared_cache_b(edge: Edge) {
        claim_the_shared_cache_key(edge, "b").await;
    }

    #[edge_test(service = "misbehave")]
    #[should_panic(
        expected = "\"two words\" cannot be a surrogate key: a surrogate key has 1 to 1024 visible ASCII characters (no spaces)"
    )]
    async fn a_surrogate_key_with_a_space_fails_at_the_call(edge: Edge) {
        edge.cache().purge_surrogate_key("two words");
    }

    #[edge_test(service = "misbehave")]
    #[should_panic(
        expected = "a cache key of 4097 bytes is too long: a cache key has at most 4096 bytes"
    )]
    async fn a_cache_key_past_the_limit_fails_at_the_call(edge: Edge) {
        edge.cache()
            .insert(CacheSeed::new(vec![b'k'; 4097], "v", MINUTE));
    }
}

mod device {
    use edge_test::{Device, Edge, edge_test};
    use serde_json::{Value, json};

    async fn device_of(edge: &Edge, user_agent: &str) -> (u16, String) {
        let response = edge
            .get("/device")
            .header("user-agent", user_agent)
            .send()
            .await;
        (response.status().as_u16(), response.text().to_owned())
    }

    #[edge_test(service = "misbehave")]
    async fn the_device_of_a_user_agent_is_set_per_request(edge: Edge) {
        let response = edge
            .get("/device")
            .header("user-agent", "ExamplePhone/2.0")
            .device(
                Device::new()
                    .name("Example")
                    .brand("Acme")
                    .mobile(true)
                    .os("ExampleOS"),
            )
            .send()
            .await;
        let device: Value = serde_json::from_str(response.text()).unwrap();
        assert_eq!(
            device,
            json!({
                "name": "Example", "brand": "Acme", "mobile": true, "os": "ExampleOS",
                // Unset: no data, as production reads a field it knows nothing of.
                "tablet": null, "browser": null, "bot": null,
            })
        );
        let (_, again) = device_of(&edge, "ExamplePhone/2.0").await;
        assert_eq!(
            again,
            response.text(),
            "the record stays for later requests"
        );
    }

    #[edge_test(service = "misbehave")]
    async fn declared_devices_stay_and_unknown_agents_have_none(edge: Edge) {
        let (status, body) = device_of(&edge, "DeclaredPhone/1.0").await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["name"],
            "Declared Phone"
        );
        assert_eq!(
            device_of(&edge, "Unknown/1.0").await,
            (404, "no device".to_owned())
        );
        edge.set_device("Unknown/1.0", &Device::new().bot(true).bot_name("crawler"));
        let (_, body) = device_of(&edge, "Unknown/1.0").await;
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["bot"], true);
    }
}

mod manifest_edits {
    use edge_test::{Edge, edge_test};

    use super::support::Internals;

    #[edge_test(service = "misbehave")]
    async fn a_secret_store_the_test_declares_serves_its_secrets(edge: Edge) {
        edge.declare_secret_store("keys")
            .set("api", "s3cr3t")
            .set("gone", "x")
            .remove("gone");
        assert_eq!(edge.get("/secret/keys/api").send().await.text(), "s3cr3t");
        assert_eq!(edge.get("/secret/keys/gone").send().await.status(), 404);
    }

    #[edge_test(service = "misbehave")]
    async fn stores_the_test_declares_take_entries_like_declared_ones(edge: Edge) {
        edge.declare_config_store("features").set("beta", "on");
        edge.declare_kv_store("sessions").insert("s1", "alice");
        assert_eq!(edge.get("/config/features/beta").send().await.text(), "on");
        assert_eq!(edge.get("/kv-in/sessions/s1").send().await.text(), "alice");
        assert_eq!(
            edge.kv_store("sessions")
                .get("s1")
                .await
                .map(|e| e.text())
                .as_deref(),
            Some("alice")
        );
        edge.config_store("features").set("beta", "off");
        assert_eq!(
            edge.get("/config/features/beta").send().await.text(),
            "off",
            "entries still change after the first request"
        );
    }

    #[edge_test(service = "misbehave")]
    async fn without_edits_no_store_is_added(edge: Edge) {
        let response = edge.get("/secret/keys/api").send().await;
        assert_eq!(response.status(), 500, "{}", response.text());
    }

    #[edge_test(service = "misbehave")]
    async fn the_same_edits_share_one_compiled_template(edge: Edge) {
        edge.declare_secret_store("shared-template").set("k", "v");
        assert_eq!(
            edge.get("/secret/shared-template/k").send().await.text(),
            "v"
        );
        let Some(first) = edge.template_id() else {
            return; // in process: every edge compiles its own
        };
        let other = Edge::start("misbehave", "platform::other").unwrap();
        assert_ne!(
            other.template_id(),
            Some(first),
            "no edits: the manifest's template"
        );
        other.declare_secret_store("shared-template").set("k", "v");
        assert_eq!(
            other.get("/secret/shared-template/k").send().await.text(),
            "v"
        );
        assert_eq!(
            other.template_id(),
            Some(first),
            "the same edits: the same template"
        );
    }

    #[edge_test(service = "misbehave")]
    #[should_panic(
        expected = "setting secret `k` of secret store `keys` after the test's first request: it is compiled into the guest's context"
    )]
    async fn a_secret_set_after_the_first_request_fails_at_the_call(edge: Edge) {
        let keys = edge.declare_secret_store("keys");
        edge.get("/ok").send().await;
        keys.set("k", "v");
    }

    #[edge_test(service = "misbehave")]
    #[should_panic(expected = "declaring KV store `late` after the test's first request")]
    async fn a_store_declared_after_a_read_fails_at_the_call(edge: Edge) {
        let _ = edge.kv_store("data").entries().await;
        let _ = edge.declare_kv_store("late");
    }

    #[edge_test(service = "misbehave")]
    #[should_panic(
        expected = "declares no secret store `keys`; declared secret stores: none (declare one under [local_server.secret_stores] in fastly.toml, or with `edge.declare_secret_store(..)`)"
    )]
    async fn an_undeclared_secret_store_says_how_to_declare_one(edge: Edge) {
        let _ = edge.secret_store("keys");
    }

    #[edge_test(service = "misbehave")]
    #[should_panic(
        expected = "\"no spaces\" cannot name a config store: use 1 to 255 letters, digits, `-`, `_` or `.`"
    )]
    async fn a_store_name_viceroy_would_refuse_fails_at_the_call(edge: Edge) {
        let _ = edge.declare_config_store("no spaces");
    }
}

mod dynamic_backends {
    use std::time::Duration;

    use edge_test::mock::{Mock, Reply, matchers::path};
    use edge_test::{Edge, GuestFailureKind, edge_test};

    #[edge_test(service = "misbehave")]
    async fn everything_the_guest_set_on_a_dynamic_backend_is_visible(edge: Edge) {
        Mock::given(path("/secure"))
            .respond_with(Reply::text(200, "secured"))
            .mount(&edge.dynamic_backend("origin.example.com:443"));
        // The guest names no port: with TLS, that is 443.
        let response = edge.get("/dynamic-tls/origin.example.com").send().await;
        assert_eq!(response.text(), "secured");
        let [call] = response.backend_calls() else {
            panic!("one call: {:?}", response.backend_calls())
        };
        assert_eq!(call.backend(), "origin.example.com:443");
        assert_eq!(
            call.header("host"),
            Some("api.example.com"),
            "the host override"
        );
        let dynamic = call.dynamic().unwrap();
        assert_eq!(
            (dynamic.name.as_str(), dynamic.target.as_str()),
            ("secure", "origin.example.com")
        );
        assert_eq!(dynamic.host_override.as_deref(), Some("api.example.com"));
        assert!(dynamic.use_tls, "the guest asked for TLS");
        let ms = Duration::from_millis;
        assert_eq!(dynamic.connect_timeout, Some(ms(1500)));
        assert_eq!(dynamic.first_byte_timeout, Some(ms(2500)));
        assert_eq!(dynamic.between_bytes_timeout, Some(ms(3500)));
        assert_eq!(dynamic.cert_hostname.as_deref(), Some("cert.example.com"));
        assert_eq!(dynamic.sni_hostname.as_deref(), Some("sni.example.com"));
    }

    #[edge_test(service = "misbehave")]
    async fn two_dynamic_backends_in_one_request_reach_their_own_mocks(edge: Edge) {
        // Uncacheable: the second request must reach the mocks, not the HTTP cache.
        Mock::given(path("/one"))
            .respond_with(Reply::text(200, "one").header("cache-control", "private"))
            .expect(2)
            .mount(&edge.dynamic_backend("a.example.com:80"));
        Mock::given(path("/two"))
            .respond_with(Reply::text(200, "two").header("cache-control", "private"))
            .expect(2)
            .mount(&edge.dynamic_backend("b.example.com:80"));
        let response = edge
            .get("/dynamic-two/a.example.com:80/b.example.com:80")
            .send()
            .await;
        assert_eq!(response.text(), "one,two");
        let targets: Vec<_> = response
            .backend_calls()
            .iter()
            .map(|call| {
                (
                    call.backend().to_owned(),
                    call.dynamic().unwrap().name.clone(),
                )
            })
            .collect();
        assert_eq!(
            targets,
            [
                ("a.example.com:80".to_owned(), "first".to_owned()),
                ("b.example.com:80".to_owned(), "second".to_owned())
            ]
        );
        // A second request numbers its registrations afresh, and reaches the same mocks.
        let again = edge
            .get("/dynamic-two/a.example.com:80/b.example.com:80")
            .send()
            .await;
        assert_eq!(again.text(), "one,two");
    }

    #[edge_test(service = "misbehave")]
    async fn a_dynamic_target_without_mocks_fails_the_test_naming_it(edge: Edge) {
        let failure = edge
            .get("/dynamic-backend/203.0.113.9:80")
            .try_send()
            .await
            .expect_err("no mock for the target");
        let GuestFailureKind::MockFailed { reports } = failure.kind() else {
            panic!("a mock failure: {failure}")
        };
        assert!(
            reports[0].contains(
                "to dynamic backend `dynamic` at 203.0.113.9:80, which has no mocks.\n  Mount \
                 one with `Mock::given(..).respond_with(..).mount(&edge.dynamic_backend(\"203.0.113.9:80\"))`"
            ),
            "{}",
            reports[0]
        );
        assert_eq!(failure.response().map(|r| r.status().as_u16()), Some(502));
    }

    #[edge_test(service = "misbehave")]
    #[should_panic(expected = "\"https://api.example.com\" is not a dynamic backend target")]
    async fn a_target_that_is_not_host_or_host_port_fails_at_the_call(edge: Edge) {
        let _ = edge.dynamic_backend("https://api.example.com");
    }

    #[edge_test(service = "misbehave")]
    async fn a_dynamic_backend_reaches_the_mock_for_its_target(edge: Edge) {
        Mock::given(path("/"))
            .respond_with(Reply::text(201, "from the mock"))
            .expect(1)
            .mount(&edge.dynamic_backend("api.example.com:8080"));
        let response = edge
            .get("/dynamic-backend/api.example.com:8080")
            .send()
            .await;
        assert_eq!(response.status(), 201, "{}", response.text());
        let [call] = response.backend_calls() else {
            panic!("one call: {:?}", response.backend_calls())
        };
        assert_eq!(call.backend(), "api.example.com:8080");
        let dynamic = call.dynamic().expect("a dynamic backend's call");
        assert_eq!(dynamic.name, "dynamic");
        assert_eq!(dynamic.target, "api.example.com:8080");
        assert!(!dynamic.use_tls);
        assert_eq!(call.header("host"), Some("api.example.com:8080"));
    }
}

mod tls {
    use edge_test::{Edge, Tls, edge_test};
    use serde_json::{Value, json};

    async fn tls_of(edge: &Edge, tls: Option<Tls>) -> Value {
        let mut request = edge.get("/tls");
        if let Some(tls) = tls {
            request = request.tls(tls);
        }
        serde_json::from_str(request.send().await.text()).unwrap()
    }

    #[edge_test(service = "misbehave")]
    async fn a_request_over_tls_carries_its_facts_and_a_plain_one_none(edge: Edge) {
        assert_eq!(
            tls_of(&edge, Some(Tls::new())).await,
            json!({
                "url": "https://edge.test/tls", "protocol": "TLSv1.3",
                "cipher": "TLS_AES_128_GCM_SHA256", "server_name": "edge.test",
                "ja4": null, "h2": null,
            })
        );
        let custom = Tls::new()
            .protocol("TLSv1.2")
            .cipher("ECDHE-RSA-AES128-GCM-SHA256")
            .server_name("api.example.com")
            .ja4("t13d1516h2_8daaf6152771_b186095e22b6")
            .h2_fingerprint("1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p");
        let read = tls_of(&edge, Some(custom)).await;
        assert_eq!(read["protocol"], "TLSv1.2");
        assert_eq!(read["cipher"], "ECDHE-RSA-AES128-GCM-SHA256");
        assert_eq!(read["server_name"], "api.example.com");
        assert_eq!(read["ja4"], "t13d1516h2_8daaf6152771_b186095e22b6");
        assert_eq!(
            read["h2"],
            "1:65536;2:0;4:6291456;6:262144|15663105|0|m,a,s,p"
        );
        assert_eq!(
            tls_of(&edge, None).await,
            json!({
                "url": "http://edge.test/tls", "protocol": null, "cipher": null,
                "server_name": null, "ja4": null, "h2": null,
            }),
            "the next plain request has no TLS facts"
        );
    }
}
