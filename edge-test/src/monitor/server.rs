//! The monitor's HTTP side: the results page, the API and `/metrics`.
//!
//! - `GET /`, `/suites/<name>`, `/runs/<id>`: the page.
//! - `POST /suites/<name>/runs` (a form with a `key`): runs the suite; redirects to the run.
//! - `POST /api/runs` with `{"suite": "...", "key": "...", "partition": "count:1/2"}` (or
//!   the key as an `Idempotency-Key` header): 201 and the new run, or 200 and the run the
//!   key already names.
//! - `GET /api/runs?suite=<name>&limit=<n>`: the newest runs, as JSON.
//! - `GET /api/runs/<id>`: the run, its counts, tests and attempts, as JSON.
//! - `GET /metrics`: Prometheus's text format. `GET /healthz`: 200 while serving.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::{Body, Method, Request, Response, StatusCode};
use serde_json::json;

use super::state::Monitor;

/// The largest request body read (a form or a JSON request).
const BODY_LIMIT: usize = 64 * 1024;

pub(crate) async fn handle(
    monitor: Arc<Monitor>,
    request: Request<Body>,
) -> Result<Response<Body>, Infallible> {
    let response = match route(&monitor, request).await {
        Ok(response) => response,
        Err((status, why)) => text(status, &why),
    };
    Ok(response)
}

type Failure = (StatusCode, String);

fn text(status: StatusCode, body: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from(body.to_owned()))
        .expect("a plain response")
}

fn html(body: String) -> Response<Body> {
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .body(Body::from(body))
        .expect("a page")
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(value.to_string()))
        .expect("a JSON response")
}

fn internal(e: String) -> Failure {
    (StatusCode::INTERNAL_SERVER_ERROR, e)
}

fn not_found(what: &str) -> Failure {
    (StatusCode::NOT_FOUND, format!("no {what} here"))
}

async fn read_body(mut body: Body) -> Result<Vec<u8>, Failure> {
    use hyper::body::HttpBody;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        if bytes.len() + chunk.len() > BODY_LIMIT {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request's body is over {BODY_LIMIT} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn route(monitor: &Arc<Monitor>, request: Request<Body>) -> Result<Response<Body>, Failure> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();
    let blocking = |f: Box<dyn FnOnce(&Monitor) -> Result<Response<Body>, Failure> + Send>| {
        let monitor = monitor.clone();
        async move {
            tokio::task::spawn_blocking(move || f(&monitor))
                .await
                .map_err(|e| internal(e.to_string()))?
        }
    };
    match (&method, segments.as_slice()) {
        (&Method::GET, [""]) => {
            blocking(Box::new(|m| {
                super::page::index(m).map(html).map_err(internal)
            }))
            .await
        }
        (&Method::GET, ["suites", name]) => {
            let name = decode(name);
            blocking(Box::new(move |m| match super::page::suite(m, &name) {
                Ok(Some(page)) => Ok(html(page)),
                Ok(None) => Err(not_found("such suite")),
                Err(e) => Err(internal(e)),
            }))
            .await
        }
        (&Method::GET, ["runs", id]) => {
            let id = parse_id(id)?;
            blocking(Box::new(move |m| match super::page::run(m, id) {
                Ok(Some(page)) => Ok(html(page)),
                Ok(None) => Err(not_found("such run")),
                Err(e) => Err(internal(e)),
            }))
            .await
        }
        (&Method::POST, ["suites", name, "runs"]) => {
            let name = decode(name);
            let form = String::from_utf8_lossy(&read_body(request.into_body()).await?).into_owned();
            let key = form_field(&form, "key");
            blocking(Box::new(move |m| {
                let (run, _) = m
                    .request_run(&name, key.as_deref(), "page", None)
                    .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
                Ok(Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header("location", format!("/runs/{}", run.id))
                    .body(Body::empty())
                    .expect("a redirect"))
            }))
            .await
        }
        (&Method::POST, ["api", "runs"]) => {
            let header_key = request
                .headers()
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = read_body(request.into_body()).await?;
            let asked: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body is not JSON ({e}): send {{\"suite\": \"<name>\", \"key\": \
                         \"<idempotency key>\"}}"
                    ),
                )
            })?;
            let suite = asked["suite"]
                .as_str()
                .ok_or((
                    StatusCode::BAD_REQUEST,
                    "the body names no \"suite\"".to_owned(),
                ))?
                .to_owned();
            let key = asked["key"].as_str().map(str::to_owned).or(header_key);
            let partition = asked["partition"]
                .as_str()
                .map(str::parse)
                .transpose()
                .map_err(|e: String| (StatusCode::BAD_REQUEST, e))?;
            blocking(Box::new(move |m| {
                let (run, created) = m
                    .request_run(&suite, key.as_deref(), "api", partition)
                    .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
                let status = if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                Ok(json_response(
                    status,
                    &json!({ "created": created, "run": run }),
                ))
            }))
            .await
        }
        (&Method::GET, ["api", "runs"]) => {
            let query = request.uri().query().unwrap_or("").to_owned();
            let suite = form_field(&query, "suite");
            let limit = form_field(&query, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(50);
            blocking(Box::new(move |m| {
                let runs = m
                    .store(|s| s.runs(suite.as_deref(), limit))
                    .map_err(internal)?;
                Ok(json_response(StatusCode::OK, &json!({ "runs": runs })))
            }))
            .await
        }
        (&Method::GET, ["api", "runs", id]) => {
            let id = parse_id(id)?;
            blocking(Box::new(move |m| {
                run_json(m, id)
                    .map_err(internal)?
                    .map(|v| json_response(StatusCode::OK, &v))
                    .ok_or_else(|| not_found("such run"))
            }))
            .await
        }
        (&Method::GET, ["metrics"]) => Ok(Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Body::from(monitor.metrics.render()))
            .expect("metrics")),
        (&Method::GET, ["healthz"]) => Ok(text(StatusCode::OK, "ok")),
        _ => Err(not_found(&format!("{method} {path}"))),
    }
}

/// A run, its counts, and its tests with their attempts.
pub(crate) fn run_json(monitor: &Monitor, id: i64) -> Result<Option<serde_json::Value>, String> {
    monitor.store(|s| {
        let Some(run) = s.run(id)? else {
            return Ok(None);
        };
        let mut tests = Vec::new();
        for test in s.tests(id)? {
            let attempts = s.attempts(test.id)?;
            let (flaky, finished) = s.flake_rate(&run.suite, &test.name)?;
            tests.push(json!({
                "test": test,
                "attempts": attempts,
                "flake_rate": if finished == 0 { 0.0 } else { flaky as f64 / finished as f64 },
            }));
        }
        Ok(Some(json!({
            "run": run,
            "counts": s.counts(id)?,
            "tests": tests,
        })))
    })
}

fn parse_id(id: &str) -> Result<i64, Failure> {
    id.parse().map_err(|_| {
        (
            StatusCode::NOT_FOUND,
            format!("`{id}` is not a run's number"),
        )
    })
}

/// A form field's value (`application/x-www-form-urlencoded`).
fn form_field(form: &str, name: &str) -> Option<String> {
    form.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (decode(k) == name).then(|| decode(v))
    })
}

/// Percent-decoding, `+` as a space.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
