//! A test's changes to, and reads of, its guest's core cache, through viceroy-lib's public
//! `Cache` (the same one the guest's `fastly::cache::core` hostcalls reach).
//!
//! What the public API allows, and so what this offers: insert an entry (key, body, TTL,
//! age, stale-while-revalidate, surrogate keys, user metadata), purge by surrogate key, and
//! look up a key (body, TTL, age, user metadata, length). Not: listing the keys (the map is
//! private), reading an entry's surrogate keys or stale-while-revalidate (no accessor), or
//! moving the cache's clock (it is `Instant`).

use std::time::Duration;

use http_body::Body as _;
use serde_json::{Value, json};
use viceroy_lib::ExecuteCtx;
use viceroy_lib::body::Body;
use viceroy_lib::cache::{CacheKey, SurrogateKeySet, WriteOptions};

use crate::wire::PlatformChange;

/// The surrogate key that purges one key's entry: set on the entry that replaces it, then
/// purged at once (viceroy has no removal by key).
const PURGE_BY_KEY_MARKER: &str = "edge-test-purge-by-key";

/// Applies one cache change; `Err` says why it could not be.
pub(crate) async fn apply(ctx: &ExecuteCtx, change: PlatformChange) -> Result<(), String> {
    match change {
        PlatformChange::CacheInsert {
            key,
            body,
            ttl,
            age,
            stale_while_revalidate,
            surrogate_keys,
            user_metadata,
        } => {
            let key = cache_key(&key)?;
            let surrogate_keys: SurrogateKeySet = surrogate_keys
                .join(" ")
                .parse()
                .map_err(|e| format!("invalid surrogate keys: {e}"))?;
            let options = WriteOptions {
                initial_age: age,
                stale_while_revalidate,
                user_metadata: user_metadata.into(),
                length: Some(body.len() as u64),
                surrogate_keys,
                ..WriteOptions::new(ttl)
            };
            ctx.cache()
                .insert(&key, Default::default(), options, Body::from(body))
                .await;
            Ok(())
        }
        PlatformChange::CachePurgeSurrogateKey { key } => {
            let key = key
                .as_bytes()
                .try_into()
                .map_err(|e| format!("invalid surrogate key {key:?}: {e}"))?;
            ctx.cache().purge(key, false);
            Ok(())
        }
        PlatformChange::CachePurgeKey { key } => {
            let key = cache_key(&key)?;
            let marker: SurrogateKeySet = PURGE_BY_KEY_MARKER.parse().expect("a valid key");
            let options = WriteOptions {
                surrogate_keys: marker,
                ..WriteOptions::new(Duration::ZERO)
            };
            ctx.cache()
                .insert(&key, Default::default(), options, Body::empty())
                .await;
            let marker = PURGE_BY_KEY_MARKER
                .as_bytes()
                .try_into()
                .expect("a valid key");
            ctx.cache().purge(marker, false);
            Ok(())
        }
        other => Err(format!("{other:?} reached the cache (a bug in edge-test)")),
    }
}

/// What the cache holds at `key` (for a request with no headers), as JSON: `null`, or
/// `{"body": [bytes], "max_age_ns", "age_ns", "user_metadata": [bytes], "length"}`.
pub(crate) async fn read(ctx: &ExecuteCtx, key: &[u8]) -> Result<Value, String> {
    let key = cache_key(key)?;
    let entry = ctx.cache().lookup(&key, &Default::default()).await;
    let Some(found) = entry.found() else {
        return Ok(Value::Null);
    };
    let meta = found.meta();
    let (max_age, age, user_metadata, length) = (
        meta.max_age(),
        meta.age(),
        meta.user_metadata(),
        found.length(),
    );
    let mut body = entry
        .body(None, None)
        .await
        .map_err(|e| format!("the cached body cannot be read: {e}"))?;
    let mut bytes = Vec::new();
    while let Some(chunk) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_data(cx)).await
    {
        bytes.extend_from_slice(&chunk.map_err(|e| format!("the cached body: {e}"))?);
    }
    Ok(json!({
        "body": bytes,
        "max_age_ns": max_age.as_nanos() as u64,
        "age_ns": age.as_nanos() as u64,
        "user_metadata": user_metadata.to_vec(),
        "length": length,
    }))
}

fn cache_key(key: &[u8]) -> Result<CacheKey, String> {
    key.try_into()
        .map_err(|_| format!("a cache key has at most {} bytes", CacheKey::MAX_LENGTH))
}
