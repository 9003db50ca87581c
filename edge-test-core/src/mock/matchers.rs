//! What a mock matches on: method, path, query, headers, body. Combine with `Mock::and`.

use std::fmt;

use crate::backend_request::BackendRequest;

/// A condition on a request a backend received.
pub trait Match: Send + Sync + 'static {
    fn matches(&self, request: &BackendRequest) -> bool;
    /// How the condition reads in failure reports, e.g. `path == /todos/1`.
    fn describe(&self) -> String;
}

pub(crate) struct Described<F> {
    description: String,
    predicate: F,
}

impl<F: Fn(&BackendRequest) -> bool + Send + Sync + 'static> Match for Described<F> {
    fn matches(&self, request: &BackendRequest) -> bool {
        (self.predicate)(request)
    }
    fn describe(&self) -> String {
        self.description.clone()
    }
}

fn matcher(
    description: impl fmt::Display,
    predicate: impl Fn(&BackendRequest) -> bool + Send + Sync + 'static,
) -> impl Match {
    Described {
        description: description.to_string(),
        predicate,
    }
}

/// Any request at all.
pub fn any() -> impl Match {
    matcher("any request", |_| true)
}

/// The HTTP method, case-insensitive (`"GET"`, `"post"`).
pub fn method(method: &str) -> impl Match {
    let expected = method.to_ascii_uppercase();
    matcher(format!("method == {expected}"), move |r| {
        r.method().as_str() == expected
    })
}

/// The exact path, without the query.
pub fn path(path: &str) -> impl Match {
    let expected = path.to_owned();
    matcher(format!("path == {expected}"), move |r| r.path() == expected)
}

/// A path that starts with `prefix`.
pub fn path_prefix(prefix: &str) -> impl Match {
    let expected = prefix.to_owned();
    matcher(format!("path starts with {expected}"), move |r| {
        r.path().starts_with(&expected)
    })
}

/// A query parameter with exactly this value.
pub fn query_param(name: &str, value: &str) -> impl Match {
    let (name, value) = (name.to_owned(), value.to_owned());
    matcher(format!("query {name} == {value}"), move |r| {
        r.query_param(&name).as_deref() == Some(value.as_str())
    })
}

/// A header with exactly this value (one of its values, when repeated).
pub fn header(name: &str, value: &str) -> impl Match {
    let (name, value) = (name.to_ascii_lowercase(), value.to_owned());
    matcher(format!("header {name} == {value}"), move |r| {
        r.headers()
            .get_all(name.as_str())
            .iter()
            .any(|v| v.as_bytes() == value.as_bytes())
    })
}

/// A header that is present, whatever its value.
pub fn header_exists(name: &str) -> impl Match {
    let name = name.to_ascii_lowercase();
    matcher(format!("header {name} present"), move |r| {
        r.headers().contains_key(name.as_str())
    })
}

/// The body, exactly.
pub fn body_string(body: &str) -> impl Match {
    let expected = body.to_owned();
    matcher(format!("body == {expected:?}"), move |r| {
        r.body() == expected.as_bytes()
    })
}

/// A body that contains `needle`.
pub fn body_contains(needle: &str) -> impl Match {
    let expected = needle.to_owned();
    matcher(format!("body contains {expected:?}"), move |r| {
        String::from_utf8_lossy(r.body()).contains(&expected)
    })
}

/// A JSON body equal to `expected` (compared as JSON values, so key order and whitespace
/// do not matter).
pub fn body_json(expected: &impl serde::Serialize) -> impl Match {
    let expected = serde_json::to_value(expected).expect("the expected body serializes to JSON");
    matcher(format!("body json == {expected}"), move |r| {
        serde_json::from_slice::<serde_json::Value>(r.body()).is_ok_and(|v| v == expected)
    })
}

/// A JSON body that contains `expected`: every field of an expected object must be in the
/// body's object with a matching value (compared the same way, recursively); the body may
/// have more fields. Arrays and other values must be equal. For a GraphQL request:
/// `body_partial_json(&json!({ "operationName": "Todos" }))`, whatever its `variables`.
pub fn body_partial_json(expected: &impl serde::Serialize) -> impl Match {
    let expected = serde_json::to_value(expected).expect("the expected body serializes to JSON");
    matcher(format!("body json contains {expected}"), move |r| {
        serde_json::from_slice::<serde_json::Value>(r.body())
            .is_ok_and(|body| json_contains(&body, &expected))
    })
}

fn json_contains(body: &serde_json::Value, expected: &serde_json::Value) -> bool {
    match (body, expected) {
        (serde_json::Value::Object(body), serde_json::Value::Object(expected)) => {
            expected.iter().all(|(key, value)| {
                body.get(key)
                    .is_some_and(|found| json_contains(found, value))
            })
        }
        _ => body == expected,
    }
}

/// Any condition, as a closure.
pub fn custom(
    description: &str,
    predicate: impl Fn(&BackendRequest) -> bool + Send + Sync + 'static,
) -> impl Match {
    matcher(description, predicate)
}

#[cfg(test)]
mod tests {
    use super::json_contains;
    use serde_json::json;

    #[test]
    fn a_partial_json_match_ignores_fields_it_does_not_name() {
        let body = json!({ "query": "{ todos }", "variables": { "id": 1, "all": true } });
        assert!(json_contains(&body, &json!({ "query": "{ todos }" })));
        assert!(json_contains(&body, &json!({ "variables": { "id": 1 } })));
        assert!(!json_contains(&body, &json!({ "variables": { "id": 2 } })));
        assert!(!json_contains(&body, &json!({ "missing": null })));
        assert!(
            !json_contains(&json!([1, 2, 3]), &json!([1, 2])),
            "arrays are compared whole"
        );
    }
}
