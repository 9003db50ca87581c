//! `todo`: a caching API proxy for a todo service, running on Fastly Compute.
//!
//! Routes:
//! - `GET /todos/{id}`: served from the core cache when present, otherwise fetched from the
//!   `origin` backend (authenticated with a token from the `credentials` secret store) and
//!   cached for `cache_ttl_secs` seconds (from the `settings` config store).
//! - `POST /todos`: validates a JSON todo and forwards it to the origin.
//! - `POST /todos/{id}/purge`: purges the cached copy by surrogate key.
//! - `GET /feed`: streams the origin's todo list to the client as NDJSON.
//! - `GET /notes/{key}`, `PUT /notes/{key}`: a KV-backed note store.
//! - `GET /greeting`: a greeting from the config store, addressed to the client's IP.
//!
//! Every request writes one line to the `access` log endpoint; cache and store events go to
//! the `audit` endpoint, some of them after the response has been sent.

use std::io::Write;
use std::time::Duration;

use fastly::cache::core::{self as core_cache, CacheKey};
use fastly::http::{Method, StatusCode};
use fastly::kv_store::KVStoreError;
use fastly::log::Endpoint;
use fastly::{ConfigStore, KVStore, Request, Response, SecretStore};
use serde_json::{Value, json};

const ORIGIN: &str = "origin";

fn main() {
    let req = Request::from_client();
    let method = req.get_method().clone();
    let path = req.get_path().to_owned();

    let (resp, after_response) = route(req);
    access_log(&method, &path, &resp);
    match after_response {
        AfterResponse::Nothing => resp.send_to_client(),
        AfterResponse::Audit(line) => {
            // Written after the response left, as real services do for non-critical work:
            // edge-test must still capture it.
            resp.send_to_client();
            audit(&line);
        }
        AfterResponse::StreamFeed(origin_body) => stream_feed(resp, origin_body),
    }
}

enum AfterResponse {
    Nothing,
    Audit(String),
    StreamFeed(Vec<Value>),
}

fn route(req: Request) -> (Response, AfterResponse) {
    let segments: Vec<&str> = req.get_path().trim_matches('/').split('/').collect();
    let method = req.get_method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["todos", id]) => {
            let id = id.to_string();
            get_todo(&id)
        }
        (Method::POST, ["todos"]) => (create_todo(req), AfterResponse::Nothing),
        (Method::POST, ["todos", id, "purge"]) => {
            let key = surrogate_key(id);
            match fastly::http::purge::purge_surrogate_key(&key) {
                Ok(()) => (
                    Response::from_status(StatusCode::ACCEPTED),
                    AfterResponse::Audit(format!("purged {key}")),
                ),
                Err(e) => (
                    error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                    AfterResponse::Nothing,
                ),
            }
        }
        (Method::GET, ["feed"]) => feed(),
        (Method::GET, ["notes", key]) => (get_note(key), AfterResponse::Nothing),
        (Method::PUT, ["notes", key]) => {
            let key = key.to_string();
            put_note(&key, req)
        }
        (Method::GET, ["greeting"]) => (greeting(&req), AfterResponse::Nothing),
        (Method::GET, ["tenants", id, "plan"]) => (tenant_plan(id), AfterResponse::Nothing),
        (Method::GET, ["avatars", user]) => (avatar(user), AfterResponse::Nothing),
        _ => (
            error(StatusCode::NOT_FOUND, "no such route"),
            AfterResponse::Nothing,
        ),
    }
}

fn get_todo(id: &str) -> (Response, AfterResponse) {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return (
            error(StatusCode::BAD_REQUEST, "todo ids are numeric"),
            AfterResponse::Nothing,
        );
    }
    let key = CacheKey::from(format!("todo:{id}"));
    if let Ok(Some(found)) = core_cache::lookup(key.clone()).execute() {
        if let Ok(body) = found.to_stream() {
            let resp = Response::from_status(StatusCode::OK)
                .with_content_type(fastly::mime::APPLICATION_JSON)
                .with_header("x-cache", "HIT")
                .with_body(body.into_bytes());
            return (resp, AfterResponse::Audit(format!("cache HIT todo:{id}")));
        }
    }

    // Passed by the readthrough cache: the service keeps todos in the core cache itself, and
    // a second copy there would outlive the purge below (edge-test's HTTP cache showed it).
    let origin_req = Request::get(format!("https://api.todo.example/todos/{id}"))
        .with_header("authorization", format!("Bearer {}", origin_token()))
        .with_header("accept", "application/json")
        .with_pass(true);
    let mut origin_resp = match origin_req.send(ORIGIN) {
        Ok(resp) => resp,
        Err(e) => {
            return (
                error(
                    StatusCode::BAD_GATEWAY,
                    &format!("origin unreachable: {}", e.root_cause()),
                ),
                AfterResponse::Audit(format!("origin error todo:{id}")),
            );
        }
    };
    match origin_resp.get_status() {
        StatusCode::OK => {
            let body = origin_resp.take_body_bytes();
            let ttl = cache_ttl();
            let stored = insert_into_cache(key, &surrogate_key(id), ttl, &body);
            let resp = Response::from_status(StatusCode::OK)
                .with_content_type(fastly::mime::APPLICATION_JSON)
                .with_header("x-cache", "MISS")
                .with_body(body);
            let note = if stored {
                format!("cache MISS todo:{id} stored for {}s", ttl.as_secs())
            } else {
                format!("cache MISS todo:{id} not stored")
            };
            (resp, AfterResponse::Audit(note))
        }
        StatusCode::NOT_FOUND => (
            error(StatusCode::NOT_FOUND, "no such todo"),
            AfterResponse::Nothing,
        ),
        status => (
            error(
                StatusCode::BAD_GATEWAY,
                &format!("origin answered {}", status.as_u16()),
            ),
            AfterResponse::Audit(format!("origin error todo:{id} status {}", status.as_u16())),
        ),
    }
}

fn insert_into_cache(key: CacheKey, surrogate: &str, ttl: Duration, body: &[u8]) -> bool {
    let Ok(mut writer) = core_cache::insert(key, ttl)
        .surrogate_keys([surrogate])
        .known_length(body.len() as u64)
        .execute()
    else {
        return false;
    };
    writer.write_all(body).is_ok() && writer.finish().is_ok()
}

fn create_todo(mut req: Request) -> Response {
    let Ok(todo) = req.take_body_json::<Value>() else {
        return error(StatusCode::BAD_REQUEST, "body must be JSON");
    };
    let Some(title) = todo.get("title").and_then(Value::as_str) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "title is required");
    };
    let forwarded = json!({ "title": title.trim(), "done": false });
    let origin_req = Request::post("https://api.todo.example/todos")
        .with_header("authorization", format!("Bearer {}", origin_token()))
        .with_body_json(&forwarded)
        .expect("a JSON value always serializes");
    match origin_req.send(ORIGIN) {
        Ok(mut resp) => Response::from_status(resp.get_status())
            .with_content_type(fastly::mime::APPLICATION_JSON)
            .with_body(resp.take_body_bytes()),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            &format!("origin unreachable: {}", e.root_cause()),
        ),
    }
}

fn feed() -> (Response, AfterResponse) {
    let origin_req = Request::get("https://api.todo.example/todos")
        .with_header("authorization", format!("Bearer {}", origin_token()));
    let items = match origin_req.send(ORIGIN) {
        Ok(mut resp) if resp.get_status() == StatusCode::OK => {
            match resp.take_body_json::<Vec<Value>>() {
                Ok(items) => items,
                Err(_) => {
                    return (
                        error(StatusCode::BAD_GATEWAY, "origin sent an invalid list"),
                        AfterResponse::Nothing,
                    );
                }
            }
        }
        Ok(resp) => {
            let msg = format!("origin answered {}", resp.get_status().as_u16());
            return (error(StatusCode::BAD_GATEWAY, &msg), AfterResponse::Nothing);
        }
        Err(e) => {
            return (
                error(
                    StatusCode::BAD_GATEWAY,
                    &format!("origin unreachable: {}", e.root_cause()),
                ),
                AfterResponse::Nothing,
            );
        }
    };
    let resp = Response::from_status(StatusCode::OK)
        .with_content_type("application/x-ndjson".parse().expect("a valid mime type"));
    (resp, AfterResponse::StreamFeed(items))
}

fn stream_feed(resp: Response, items: Vec<Value>) {
    let mut stream = resp.stream_to_client();
    for item in &items {
        // One write per item: the client sees the feed arrive item by item.
        let line = format!("{item}\n");
        if stream
            .write_all(line.as_bytes())
            .and_then(|()| stream.flush())
            .is_err()
        {
            return;
        }
    }
    if stream.finish().is_ok() {
        audit(&format!("feed streamed {} items", items.len()));
    }
}

fn get_note(key: &str) -> Response {
    let store = KVStore::open("notes")
        .ok()
        .flatten()
        .expect("the notes KV store is declared in fastly.toml");
    match store.lookup(key) {
        Ok(mut found) => Response::from_status(StatusCode::OK)
            .with_content_type(fastly::mime::TEXT_PLAIN_UTF_8)
            .with_body(found.take_body_bytes()),
        Err(KVStoreError::ItemNotFound) => error(StatusCode::NOT_FOUND, "no such note"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn put_note(key: &str, mut req: Request) -> (Response, AfterResponse) {
    let store = KVStore::open("notes")
        .ok()
        .flatten()
        .expect("the notes KV store is declared in fastly.toml");
    let body = req.take_body_bytes();
    if body.is_empty() {
        return (
            error(StatusCode::BAD_REQUEST, "a note needs a body"),
            AfterResponse::Nothing,
        );
    }
    match store.insert(key, body) {
        Ok(()) => (
            Response::from_status(StatusCode::NO_CONTENT),
            AfterResponse::Audit(format!("note {key} written")),
        ),
        Err(e) => (
            error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            AfterResponse::Nothing,
        ),
    }
}

/// The greeting of the config store; behind the `localized_greetings` flag, the greeting of
/// the client's country where it has one.
fn greeting(req: &Request) -> Response {
    let settings = ConfigStore::open("settings");
    let localized = settings.get("localized_greetings").as_deref() == Some("on");
    let country = req
        .get_client_ip_addr()
        .and_then(fastly::geo::geo_lookup)
        .map(|geo| geo.country_code().to_owned());
    let greeting = match (localized, country.as_deref()) {
        (true, Some("DE" | "AT")) => "hallo".to_owned(),
        (true, Some("FR")) => "bonjour".to_owned(),
        _ => settings
            .get("greeting")
            .unwrap_or_else(|| "hello".to_owned()),
    };
    let client = req
        .get_client_ip_addr()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "stranger".to_owned());
    Response::from_status(StatusCode::OK)
        .with_content_type(fastly::mime::TEXT_PLAIN_UTF_8)
        .with_body(format!("{greeting}, {client}"))
}

/// A user's avatar, from an image host chosen at run time: a dynamic backend, over TLS.
fn avatar(user: &str) -> Response {
    if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric()) {
        return error(StatusCode::BAD_REQUEST, "user names are alphanumeric");
    }
    let backend = fastly::Backend::builder("avatars", "avatars.example.net:443")
        .override_host("avatars.example.net")
        .enable_ssl()
        .first_byte_timeout(Duration::from_secs(2))
        .finish();
    let sent = backend.map_err(|e| e.to_string()).and_then(|backend| {
        Request::get(format!("https://avatars.example.net/u/{user}.png"))
            .send(backend)
            .map_err(|e| e.to_string())
    });
    match sent {
        Ok(resp) if resp.get_status() == StatusCode::OK => resp,
        Ok(resp) => error(
            StatusCode::NOT_FOUND,
            &format!(
                "no avatar (image host answered {})",
                resp.get_status().as_u16()
            ),
        ),
        Err(e) => error(
            StatusCode::BAD_GATEWAY,
            &format!("image host unreachable: {e}"),
        ),
    }
}

/// A tenant's plan, from its record in the `tenants` KV store (`{"plan": ...}`).
fn tenant_plan(id: &str) -> Response {
    let Ok(Some(tenants)) = KVStore::open("tenants") else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no tenants store");
    };
    match tenants.lookup(id) {
        Ok(mut found) => match serde_json::from_slice::<Value>(&found.take_body_bytes()) {
            Ok(record) => Response::from_status(StatusCode::OK)
                .with_body_text_plain(record["plan"].as_str().unwrap_or("free")),
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "corrupt tenant record"),
        },
        Err(KVStoreError::ItemNotFound) => error(StatusCode::NOT_FOUND, "no such tenant"),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn cache_ttl() -> Duration {
    let secs = ConfigStore::open("settings")
        .get("cache_ttl_secs")
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

fn origin_token() -> String {
    SecretStore::open("credentials")
        .ok()
        .and_then(|store| store.get("origin_token"))
        .map(|secret| String::from_utf8_lossy(&secret.plaintext()).into_owned())
        .unwrap_or_default()
}

fn surrogate_key(id: &str) -> String {
    format!("todo-{id}")
}

fn error(status: StatusCode, message: &str) -> Response {
    Response::from_status(status)
        .with_body_json(&json!({ "error": message }))
        .expect("a JSON value always serializes")
}

fn access_log(method: &Method, path: &str, resp: &Response) {
    let cache = resp.get_header_str("x-cache").unwrap_or("-");
    let line = format!("{method} {path} {} {cache}", resp.get_status().as_u16());
    let _ = Endpoint::from_name("access").write_all(line.as_bytes());
}

fn audit(line: &str) {
    let _ = Endpoint::from_name("audit").write_all(line.as_bytes());
}

/// The service's helpers, tested inside the guest as Fastly's guidance has it (`#[test]`
/// functions calling the fastly APIs directly), each run in a pristine instance of its own
/// by `edge-test-runner` (`.cargo/config.toml`): `cargo test` in this directory.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_ttl_comes_from_the_settings_store() {
        assert_eq!(cache_ttl(), Duration::from_secs(60));
    }

    #[test]
    fn the_origin_token_comes_from_the_secret_store() {
        assert_eq!(origin_token(), "s3cr3t-token");
    }

    #[test]
    fn surrogate_keys_name_the_todo() {
        assert_eq!(surrogate_key("42"), "todo-42");
    }

    #[test]
    fn errors_are_json_with_their_status() {
        let mut resp = error(StatusCode::BAD_REQUEST, "todo ids are numeric");
        assert_eq!(resp.get_status(), StatusCode::BAD_REQUEST);
        let body: Value = resp.take_body_json().unwrap();
        assert_eq!(body, json!({ "error": "todo ids are numeric" }));
    }

    #[test]
    fn a_non_numeric_id_is_refused_before_any_backend_call() {
        let (resp, after) = get_todo("abc");
        assert_eq!(resp.get_status(), StatusCode::BAD_REQUEST);
        assert!(matches!(after, AfterResponse::Nothing));
    }

    /// Runs in an instance of its own: the note written here is never another test's.
    #[test]
    fn a_note_put_in_kv_is_read_back() {
        let req = Request::put("http://edge.test/notes/groceries").with_body("milk");
        let (resp, _) = put_note("groceries", req);
        assert!(resp.get_status().is_success(), "{}", resp.get_status());
        let mut read = get_note("groceries");
        assert_eq!(read.take_body_str(), "milk");
    }

    #[test]
    fn the_declared_note_is_there_and_no_other() {
        assert_eq!(get_note("welcome").take_body_str(), "first note");
        assert_eq!(get_note("groceries").get_status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_todo_in_the_core_cache_is_served_without_the_origin() {
        assert!(insert_into_cache(
            CacheKey::from("todo:7"),
            "todo-7",
            Duration::from_secs(60),
            br#"{"id":7}"#
        ));
        let (mut resp, _) = get_todo("7");
        assert_eq!(resp.get_header_str("x-cache"), Some("HIT"));
        assert_eq!(resp.take_body_str(), r#"{"id":7}"#);
    }
}
