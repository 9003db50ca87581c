//! A Fastly guest that misbehaves on request: the framework's tests drive each failure
//! mode through it (panics before, after and during a response, loops, memory exhaustion)
//! and use its cache and KV routes to check isolation between tests.

use std::io::Write;

use fastly::cache::core::{self as core_cache, CacheKey};
use fastly::http::StatusCode;
use fastly::log::Endpoint;
use fastly::{KVStore, Request, Response};

/// What the guest read of an address's geolocation, as JSON.
fn geo_response(ip: std::net::IpAddr) {
    match fastly::geo::geo_lookup(ip) {
        Some(geo) => Response::from_body(
            serde_json::json!({
                "country_code": geo.country_code(),
                "city": geo.city(),
                "as_number": geo.as_number(),
                "latitude": geo.latitude(),
                "region": geo.region(),
                "utc_offset": geo.utc_offset().map(|o| o.whole_hours()),
                "continent": format!("{:?}", geo.continent()),
            })
            .to_string(),
        )
        .send_to_client(),
        None => Response::from_status(StatusCode::NOT_FOUND)
            .with_body("no geolocation")
            .send_to_client(),
    }
}

fn main() {
    let req = Request::from_client();
    let path = req.get_path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["ok"] => Response::from_body("ok").send_to_client(),
        ["panic-before"] => panic!("boom before the response"),
        ["panic-after-send"] => {
            Response::from_body("sent").send_to_client();
            panic!("boom after send_to_client");
        }
        ["panic-mid-stream"] => {
            let mut stream = Response::new().stream_to_client();
            stream.write_all(b"first chunk\n").unwrap();
            stream.flush().unwrap();
            panic!("boom mid stream");
        }
        ["loop"] => spin(),
        ["loop-after-send"] => {
            Response::from_body("sent").send_to_client();
            spin();
        }
        ["oom"] => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page so the allocation is real.
                hoard.push(vec![1u8; 16 * 1024 * 1024]);
            }
        }
        ["exit-1"] => std::process::exit(1),
        ["random"] => {
            // std's hash keys come from WASI's `random_get`, once per instance.
            use std::hash::BuildHasher;
            let drawn = std::collections::hash_map::RandomState::new().hash_one(0u8);
            Response::from_body(format!("{drawn:016x}")).send_to_client()
        }
        ["stdout"] => {
            println!("to stdout");
            eprintln!("to stderr");
            Response::from_body("printed").send_to_client();
        }
        ["log-after-send"] => {
            Endpoint::from_name("events")
                .write_all(b"before response")
                .unwrap();
            Response::from_body("sent").send_to_client();
            for i in 1..=3 {
                Endpoint::from_name("events")
                    .write_all(format!("after response {i}").as_bytes())
                    .unwrap();
            }
        }
        ["backend", rest @ ..] => {
            // Forwards the method, query, body, `x-forward` and `authorization`, so that tests can
            // match mocks on each of them.
            let mut url = format!("https://api.example.com/{}", rest.join("/"));
            if let Some(query) = req.get_query_str() {
                url = format!("{url}?{query}");
            }
            let mut upstream = Request::new(req.get_method().clone(), url);
            for name in ["x-forward", "authorization"] {
                if let Some(value) = req.get_header_str(name) {
                    upstream.set_header(name, value);
                }
            }
            let mut req = req;
            upstream.set_body(req.take_body_bytes());
            relay(upstream.send("api"));
        }
        ["dynamic-tls", target] => {
            let ms = std::time::Duration::from_millis;
            let sent = fastly::Backend::builder("secure", *target)
                .override_host("api.example.com")
                .enable_ssl()
                .connect_timeout(ms(1500))
                .first_byte_timeout(ms(2500))
                .between_bytes_timeout(ms(3500))
                .check_certificate("cert.example.com")
                .sni_hostname("sni.example.com")
                .finish()
                .map_err(|e| e.to_string())
                .and_then(|backend| {
                    Request::get("https://api.example.com/secure")
                        .send(backend)
                        .map_err(|e| e.to_string())
                });
            match sent {
                Ok(mut resp) => Response::from_status(resp.get_status())
                    .with_body(resp.take_body_bytes())
                    .send_to_client(),
                Err(e) => Response::from_status(StatusCode::BAD_GATEWAY)
                    .with_body(format!("send failed: {e}"))
                    .send_to_client(),
            }
        }
        ["dynamic-two", first, second] => {
            let mut bodies = Vec::new();
            for (name, target, path) in [("first", first, "/one"), ("second", second, "/two")] {
                let body = fastly::Backend::builder(name, *target)
                    .finish()
                    .map_err(|e| e.to_string())
                    .and_then(|backend| {
                        Request::get(format!("http://{target}{path}"))
                            .send(backend)
                            .map_err(|e| e.to_string())
                    })
                    .map(|mut resp| resp.take_body_str())
                    .unwrap_or_else(|e| format!("failed: {e}"));
                bodies.push(body);
            }
            Response::from_body(bodies.join(",")).send_to_client();
        }
        ["dynamic-backend", target] => {
            // A backend made at run time, to any address: nothing a test can mock.
            let sent = fastly::Backend::builder("dynamic", *target)
                .finish()
                .map_err(|e| e.to_string())
                .and_then(|backend| {
                    Request::get(format!("http://{target}/"))
                        .send(backend)
                        .map_err(|e| e.to_string())
                });
            match sent {
                Ok(resp) => Response::from_status(resp.get_status()).send_to_client(),
                Err(e) => Response::from_status(StatusCode::BAD_GATEWAY)
                    .with_body(format!("send failed: {e}"))
                    .send_to_client(),
            }
        }
        ["big", mib] => {
            // A large response: reports must cross the worker's socket in linear time.
            let mib: usize = mib.parse().unwrap();
            Response::from_body(vec![b'x'; mib << 20]).send_to_client();
        }
        ["flood", kib] => {
            // Log output in 1 KiB lines, for the per-invocation output cap.
            let line = "y".repeat(1023);
            for _ in 0..kib.parse::<usize>().unwrap() {
                println!("{line}");
            }
            Response::from_body("flooded").send_to_client();
        }
        ["backend-as", host, rest @ ..] => {
            // The request's own Host is what a backend without `override_host` receives.
            let upstream = Request::get(format!("https://{host}/{}", rest.join("/")));
            relay(upstream.send("api"));
        }
        ["pinned"] => relay(Request::get("https://elsewhere.example.com/pinned").send("pinned")),
        ["via", backend, rest @ ..] => relay(
            Request::get(format!("https://{backend}.example.com/{}", rest.join("/")))
                .send(*backend),
        ),
        ["undeclared"] => relay(Request::get("https://api.example.com/").send("nowhere")),
        ["after-backend", then @ ..] => {
            // Waits on the api backend first (a test makes it slow), then misbehaves.
            let _ = Request::get("https://api.example.com/slow").send("api");
            Endpoint::from_name("events")
                .write_all(b"backend answered")
                .unwrap();
            match then {
                ["panic"] => panic!("boom after the backend answered"),
                ["dynamic", target] => {
                    let _ = fastly::Backend::builder("late", *target)
                        .finish()
                        .map(|backend| Request::get(format!("http://{target}/")).send(backend));
                    Response::from_body("tried").send_to_client();
                }
                _ => {
                    let _ = Request::get("https://api.example.com/after").send("api");
                    Response::from_body("done").send_to_client();
                }
            }
        }
        ["cookies"] => {
            let mut resp = Response::new().with_header("set-cookie", "a=1");
            resp.append_header("set-cookie", "b=2");
            resp.send_to_client();
        }
        ["json-log"] => {
            let mut events = Endpoint::from_name("events");
            events
                .write_all(br#"{"status":200,"cache":"MISS"}"#)
                .unwrap();
            events
                .write_all(br#"{"status":304,"cache":"HIT"}"#)
                .unwrap();
            Response::from_body("logged").send_to_client();
        }
        ["url"] => Response::from_body(req.get_url_str().to_owned()).send_to_client(),
        ["config-store", name] => {
            let store = fastly::ConfigStore::open(name);
            Response::from_body(store.get("k").unwrap_or_default()).send_to_client();
        }
        ["config", store, key] => match fastly::ConfigStore::try_open(store) {
            Ok(store) => match store.get(key) {
                Some(value) => Response::from_body(value).send_to_client(),
                None => Response::from_status(StatusCode::NOT_FOUND)
                    .with_body("absent")
                    .send_to_client(),
            },
            Err(e) => Response::from_status(StatusCode::INTERNAL_SERVER_ERROR)
                .with_body(format!("no store: {e}"))
                .send_to_client(),
        },
        ["device"] => {
            let user_agent = req.get_header_str("user-agent").unwrap_or_default();
            match fastly::device_detection::lookup(user_agent) {
                Some(device) => Response::from_body(
                    serde_json::json!({
                        "name": device.device_name(),
                        "brand": device.brand(),
                        "mobile": device.is_mobile(),
                        "tablet": device.is_tablet(),
                        "browser": device.user_agent_name(),
                        "os": device.os_name(),
                        "bot": device.is_bot(),
                    })
                    .to_string(),
                )
                .send_to_client(),
                None => Response::from_status(StatusCode::NOT_FOUND)
                    .with_body("no device")
                    .send_to_client(),
            }
        }
        ["tls"] => Response::from_body(
            serde_json::json!({
                "url": req.get_url_str(),
                "protocol": req.get_tls_protocol().ok().flatten(),
                "cipher": req.get_tls_cipher_openssl_name().ok().flatten(),
                "server_name": req.get_tls_client_servername(),
                "ja4": req.get_tls_ja4(),
                "h2": req.get_client_h2_fingerprint(),
            })
            .to_string(),
        )
        .send_to_client(),
        ["geo"] => geo_response(req.get_client_ip_addr().unwrap()),
        ["geo-of", ip] => geo_response(ip.parse().unwrap()),
        ["kv-meta", key] => {
            let store = KVStore::open("data").unwrap().unwrap();
            match store.lookup(key) {
                Ok(found) => Response::from_body(
                    found
                        .metadata()
                        .map(|m| String::from_utf8_lossy(&m).into_owned())
                        .unwrap_or_else(|| "no metadata".to_owned()),
                )
                .send_to_client(),
                Err(_) => Response::from_status(StatusCode::NOT_FOUND).send_to_client(),
            }
        }
        ["secret", store, key] => match fastly::SecretStore::open(store) {
            Ok(store) => match store.get(key) {
                Some(secret) => Response::from_body(secret.plaintext().to_vec()).send_to_client(),
                None => Response::from_status(StatusCode::NOT_FOUND)
                    .with_body("absent")
                    .send_to_client(),
            },
            Err(e) => Response::from_status(StatusCode::INTERNAL_SERVER_ERROR)
                .with_body(format!("no store: {e}"))
                .send_to_client(),
        },
        ["kv-in", store, key] => match KVStore::open(store) {
            Ok(Some(store)) => match store.lookup(key) {
                Ok(mut found) => Response::from_body(found.take_body_bytes()).send_to_client(),
                Err(_) => Response::from_status(StatusCode::NOT_FOUND).send_to_client(),
            },
            _ => Response::from_status(StatusCode::INTERNAL_SERVER_ERROR)
                .with_body("no store")
                .send_to_client(),
        },
        ["kv", key] => {
            let store = KVStore::open("data").unwrap().unwrap();
            match store.lookup(key) {
                Ok(mut found) => Response::from_body(found.take_body_bytes()).send_to_client(),
                Err(_) => Response::from_status(StatusCode::NOT_FOUND).send_to_client(),
            }
        }
        ["kv", key, value] => {
            KVStore::open("data")
                .unwrap()
                .unwrap()
                .insert(key, value.to_string())
                .unwrap();
            Response::from_status(StatusCode::CREATED).send_to_client();
        }
        ["cache", key] => match core_cache::lookup(CacheKey::from(key.to_string())).execute() {
            Ok(Some(found)) => {
                Response::from_body(found.to_stream().unwrap().into_bytes()).send_to_client()
            }
            _ => Response::from_status(StatusCode::NOT_FOUND).send_to_client(),
        },
        ["cache-meta", key] => {
            match core_cache::lookup(CacheKey::from(key.to_string())).execute() {
                Ok(Some(found)) => Response::from_body(
                    serde_json::json!({
                        "user_metadata": String::from_utf8_lossy(&found.user_metadata()),
                        "stale": found.is_stale(),
                        "max_age_secs": found.max_age().as_secs(),
                        "age_secs": found.age().as_secs(),
                    })
                    .to_string(),
                )
                .send_to_client(),
                _ => Response::from_status(StatusCode::NOT_FOUND).send_to_client(),
            }
        }
        ["cache-tagged", key, value, surrogate] => {
            let mut w = core_cache::insert(
                CacheKey::from(key.to_string()),
                std::time::Duration::from_secs(600),
            )
            .surrogate_keys([*surrogate])
            .execute()
            .unwrap();
            w.write_all(value.as_bytes()).unwrap();
            w.finish().unwrap();
            Response::from_status(StatusCode::CREATED).send_to_client();
        }
        ["cache-tx", key, value, surrogate] => {
            let tx = core_cache::Transaction::lookup(CacheKey::from(key.to_string()))
                .execute()
                .unwrap();
            if tx.must_insert() {
                let mut w = tx
                    .insert(std::time::Duration::from_secs(300))
                    .surrogate_keys([*surrogate])
                    .stale_while_revalidate(std::time::Duration::from_secs(30))
                    .execute()
                    .unwrap();
                w.write_all(value.as_bytes()).unwrap();
                w.finish().unwrap();
                Response::from_status(StatusCode::CREATED).send_to_client();
            } else {
                Response::from_body("already cached").send_to_client();
            }
        }
        ["purge", surrogate] => {
            fastly::http::purge::purge_surrogate_key(surrogate).unwrap();
            Response::from_body("purged").send_to_client();
        }
        ["cache", key, value] => {
            let mut w = core_cache::insert(
                CacheKey::from(key.to_string()),
                std::time::Duration::from_secs(600),
            )
            .execute()
            .unwrap();
            w.write_all(value.as_bytes()).unwrap();
            w.finish().unwrap();
            Response::from_status(StatusCode::CREATED).send_to_client();
        }
        _ => Response::from_status(StatusCode::NOT_FOUND).send_to_client(),
    }
}

fn relay(sent: Result<Response, fastly::http::request::SendError>) {
    match sent {
        Ok(mut resp) => Response::from_status(resp.get_status())
            .with_body(resp.take_body_bytes())
            .send_to_client(),
        Err(e) => Response::from_status(StatusCode::BAD_GATEWAY)
            .with_body(format!("send failed: {e}"))
            .send_to_client(),
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
