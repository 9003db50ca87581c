//! The cassette file: JSON a reviewer can read and a diff can follow. Headers as `name: value`
//! lines sorted by name, JSON bodies as JSON (objects' keys sorted), text as text, anything
//! else base64; a header naming the format, the service and when it was recorded.
//!
//! A JSON body is replayed as the same JSON, not the same bytes: keys in sorted order, no
//! insignificant whitespace, and `content-length` counted again.
//!
//! ```json
//! {
//!   "edge-test cassette": 1,
//!   "service": "todo", "backend": "origin", "test": "edge::lists_todos",
//!   "origin": "http://127.0.0.1:8080", "recorded_at": "2026-11-28T05:00:00Z",
//!   "state": { "seed": "42" },
//!   "interactions": [
//!     { "request": { "method": "GET", "path": "/todos", "headers": ["accept: */*"] },
//!       "response": { "status": 200, "headers": [...], "body": { "json": [...] } } },
//!     { "request": { ... }, "fault": "timeout" }
//!   ]
//! }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{CassetteRequest, CassetteResponse};
use crate::mock::Reply;

/// The format this edge-test writes and reads.
pub(super) const FORMAT: u64 = 1;
const FORMAT_KEY: &str = "edge-test cassette";

pub(super) struct CassetteFile {
    pub service: String,
    pub backend: String,
    pub test: String,
    pub origin: String,
    pub recorded_at: String,
    pub state: BTreeMap<String, String>,
    pub interactions: Vec<Interaction>,
}

#[derive(Debug, Clone)]
pub(super) struct Interaction {
    pub request: CassetteRequest,
    pub outcome: Outcome,
}

/// What the origin did with a request.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Response(CassetteResponse),
    Fault(Fault),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The connection failed or closed without an answer.
    Connection,
    /// No answer within the recording's time limit.
    Timeout,
}

impl Outcome {
    /// The same answer, or the same fault, for the guest.
    pub(crate) fn reply(&self) -> Reply {
        match self {
            Outcome::Response(response) => response
                .headers
                .iter()
                // Counted again for the body replayed (a JSON body may be shorter).
                .filter(|(name, _)| !name.eq_ignore_ascii_case("content-length"))
                .fold(Reply::new(response.status), |reply, (name, value)| {
                    reply.header(name.clone(), value.clone())
                })
                .body(response.body.clone()),
            Outcome::Fault(Fault::Connection) => Reply::drop_connection(),
            Outcome::Fault(Fault::Timeout) => Reply::hang(),
        }
    }
}

impl CassetteFile {
    pub(super) fn read(path: &Path) -> Result<Self, String> {
        let bad = |why: String| format!("cassette {} is not readable: {why}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| bad(format!("{e}")))?;
        let format = value
            .get(FORMAT_KEY)
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                bad(format!(
                    "it has no \"{FORMAT_KEY}\" format number: it is not a cassette"
                ))
            })?;
        if format > FORMAT {
            return Err(format!(
                "cassette {} is format {format}, written by a newer edge-test; this one reads \
                 format {FORMAT}: update edge-test, or record the cassette again",
                path.display()
            ));
        }
        let text_field = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("its \"{name}\" is missing")))
        };
        let state = match value.get("state") {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|v| (k.clone(), v.to_owned()))
                        .ok_or_else(|| bad(format!("state `{k}` is not a string")))
                })
                .collect::<Result<_, _>>()?,
            None => BTreeMap::new(),
            Some(_) => return Err(bad("its \"state\" is not an object".into())),
        };
        let interactions = value
            .get("interactions")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("its \"interactions\" are missing".into()))?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                interaction(v).map_err(|why| bad(format!("interaction #{}: {why}", i + 1)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            service: text_field("service")?,
            backend: text_field("backend")?,
            test: text_field("test")?,
            origin: text_field("origin")?,
            recorded_at: text_field("recorded_at")?,
            state,
            interactions,
        })
    }

    /// Writes the file whole (a temporary file renamed into place), creating its directory.
    pub(super) fn write(&self, path: &Path) -> Result<(), String> {
        let interactions: Vec<Value> = self
            .interactions
            .iter()
            .map(|i| {
                let mut entry = Map::new();
                entry.insert("request".into(), request_json(&i.request));
                match &i.outcome {
                    Outcome::Response(r) => {
                        entry.insert("response".into(), response_json(r));
                    }
                    Outcome::Fault(fault) => {
                        let name = match fault {
                            Fault::Connection => "connection",
                            Fault::Timeout => "timeout",
                        };
                        entry.insert("fault".into(), json!(name));
                    }
                }
                Value::Object(entry)
            })
            .collect();
        let file = json!({
            FORMAT_KEY: FORMAT,
            "service": self.service,
            "backend": self.backend,
            "test": self.test,
            "origin": self.origin,
            "recorded_at": self.recorded_at,
            "state": self.state,
            "interactions": interactions,
        });
        let mut text = serde_json::to_string_pretty(&file).map_err(|e| e.to_string())?;
        text.push('\n');
        let failed = |e: std::io::Error| format!("cannot write cassette {}: {e}", path.display());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let partial = path.with_extension(format!("json.{}.partial", std::process::id()));
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(failed)
    }
}

fn sorted(headers: &[(String, String)]) -> Value {
    let mut headers = headers.to_vec();
    // Stable: the values of one name keep their order.
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Array(
        headers
            .into_iter()
            .map(|(n, v)| Value::String(format!("{n}: {v}")))
            .collect(),
    )
}

fn request_json(r: &CassetteRequest) -> Value {
    let mut map = Map::new();
    map.insert("method".into(), json!(r.method));
    map.insert("path".into(), json!(r.path));
    if let Some(query) = &r.query {
        map.insert("query".into(), json!(query));
    }
    map.insert("headers".into(), sorted(&r.headers));
    if !r.body.is_empty() {
        map.insert("body".into(), body_json(&r.body));
    }
    Value::Object(map)
}

fn response_json(r: &CassetteResponse) -> Value {
    let mut map = Map::new();
    map.insert("status".into(), json!(r.status));
    map.insert("headers".into(), sorted(&r.headers));
    if !r.body.is_empty() {
        map.insert("body".into(), body_json(&r.body));
    }
    Value::Object(map)
}

/// A body as the reader would want it: a JSON object or array as JSON, else text, else
/// base64.
fn body_json(bytes: &[u8]) -> Value {
    if let Ok(value @ (Value::Object(_) | Value::Array(_))) = serde_json::from_slice::<Value>(bytes)
    {
        return json!({ "json": value });
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => json!({ "text": text }),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

fn body_bytes(value: Option<&Value>) -> Result<Vec<u8>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    if let Some(json) = value.get("json") {
        return serde_json::to_vec(json).map_err(|e| e.to_string());
    }
    if let Some(text) = value.get("text").and_then(Value::as_str) {
        return Ok(text.as_bytes().to_vec());
    }
    if let Some(encoded) = value.get("base64").and_then(Value::as_str) {
        return base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("its base64 body does not decode: {e}"));
    }
    Err(
        "a body is one of {\"json\": ..}, {\"json_pretty\": ..}, {\"text\": ..}, {\"base64\": ..}"
            .into(),
    )
}

fn headers(value: Option<&Value>) -> Result<Vec<(String, String)>, String> {
    value
        .and_then(Value::as_array)
        .ok_or("its headers are missing")?
        .iter()
        .map(
            |line| match line.as_str().and_then(|l| l.split_once(": ")) {
                Some((name, value)) => Ok((name.to_owned(), value.to_owned())),
                None => Err(format!("a header is \"name: value\", not {line}")),
            },
        )
        .collect()
}

fn interaction(value: &Value) -> Result<Interaction, String> {
    let request = value.get("request").ok_or("its request is missing")?;
    let text = |v: &Value, name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("its request has no \"{name}\""))
    };
    let request = CassetteRequest {
        method: text(request, "method")?,
        path: text(request, "path")?,
        query: request
            .get("query")
            .and_then(Value::as_str)
            .map(str::to_owned),
        headers: headers(request.get("headers"))?,
        body: body_bytes(request.get("body"))?,
    };
    let outcome = match (
        value.get("response"),
        value.get("fault").and_then(Value::as_str),
    ) {
        (Some(response), None) => {
            let status = response
                .get("status")
                .and_then(Value::as_u64)
                .filter(|s| (100..1000).contains(s))
                .ok_or("its response has no valid \"status\"")?;
            Outcome::Response(CassetteResponse {
                status: status as u16,
                headers: headers(response.get("headers"))?,
                body: body_bytes(response.get("body"))?,
            })
        }
        (None, Some("connection")) => Outcome::Fault(Fault::Connection),
        (None, Some("timeout")) => Outcome::Fault(Fault::Timeout),
        _ => {
            return Err(
                "it has neither a response nor a fault (\"connection\", \"timeout\")".into(),
            );
        }
    };
    Ok(Interaction { request, outcome })
}

/// Now, as RFC 3339 in UTC (`2026-11-28T05:00:00Z`).
pub(super) fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_come_back_as_they_were_json_as_the_same_json() {
        for body in [&b"plain text"[..], &[0xff, 0x00, 0x10], b"42"] {
            assert_eq!(body_bytes(Some(&body_json(body))).unwrap(), body);
        }
        let json = br#"{"b":1, "a":[true,null]}"#;
        assert_eq!(
            body_json(json)["json"]["a"],
            json!([true, null]),
            "JSON as JSON"
        );
        let replayed = body_bytes(Some(&body_json(json))).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&replayed).unwrap(),
            serde_json::from_slice::<Value>(json).unwrap()
        );
        assert!(body_json(&[0xff]).get("base64").is_some());
    }

    #[test]
    fn now_is_rfc_3339() {
        let now = now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
