//! Carries out a test's KV operations in the stores it shares with the test's guest.
//!
//! The request body is a JSON array of operations:
//! `{"insert": {"store", "key", "value": [bytes], "metadata": null | "text"}}`,
//! `{"remove": {"store", "key"}}` and `{"read": {"store"}}`. The response is a JSON object:
//! `{"error": null | "why", "read": {store: [[key, [bytes], metadata]]}}`. The first
//! failing operation stops the rest and is named.

use fastly::kv_store::KVStore;
use fastly::{Request, Response};
use serde_json::{Map, Value, json};

fn main() {
    let body = Request::from_client().into_body_bytes();
    let mut read = Map::new();
    let error = serde_json::from_slice::<Vec<Value>>(&body)
        .map_err(|e| format!("edge-test sent operations that are not JSON: {e}"))
        .and_then(|ops| ops.iter().try_for_each(|op| run(op, &mut read)))
        .err();
    Response::from_body(json!({ "error": error, "read": read }).to_string()).send_to_client();
}

fn run(op: &Value, read: &mut Map<String, Value>) -> Result<(), String> {
    let field = |name: &str, of: &Value| -> Result<String, String> {
        of.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("operation {op} has no `{name}`"))
    };
    let (kind, args) = op
        .as_object()
        .and_then(|o| o.iter().next())
        .ok_or_else(|| format!("operation {op} is not an object"))?;
    let name = field("store", args)?;
    let store = KVStore::open(&name)
        .map_err(|e| format!("KV store `{name}` cannot be opened: {e}"))?
        .ok_or_else(|| format!("the service has no KV store `{name}`"))?;
    match kind.as_str() {
        "insert" => {
            let key = field("key", args)?;
            let value: Vec<u8> = serde_json::from_value(args["value"].clone())
                .map_err(|e| format!("operation {op} has no byte value: {e}"))?;
            let mut insert = store.build_insert();
            if let Some(metadata) = args.get("metadata").and_then(Value::as_str) {
                insert = insert.metadata(metadata);
            }
            insert
                .execute(&key, value)
                .map_err(|e| format!("KV store `{name}` refused key {key:?}: {e}"))
        }
        "remove" => {
            let key = field("key", args)?;
            store
                .delete(&key)
                .or_else(|e| match e {
                    fastly::kv_store::KVStoreError::ItemNotFound => Ok(()),
                    e => Err(e),
                })
                .map_err(|e| format!("KV store `{name}` could not remove {key:?}: {e}"))
        }
        "read" => {
            let mut entries = Vec::new();
            for page in store.build_list().iter() {
                let page = page.map_err(|e| format!("KV store `{name}` cannot be listed: {e}"))?;
                for key in page.keys() {
                    let Ok(mut found) = store.lookup(key) else {
                        continue;
                    };
                    let metadata = found
                        .metadata()
                        .map(|m| String::from_utf8_lossy(&m).into_owned());
                    entries.push(json!([key, found.take_body_bytes(), metadata]));
                }
            }
            read.insert(name, Value::Array(entries));
            Ok(())
        }
        other => Err(format!("edge-test sent an unknown KV operation `{other}`")),
    }
}
