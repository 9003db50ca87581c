//! A test's changes to, and reads of, its guest's core cache, through viceroy-lib's public
//! `Cache` (the same one the guest's `fastly::cache::core` hostcalls reach).
//!
//! The public API allows inserting an entry (key, body, TTL, age, stale-while-revalidate,
//! surrogate keys, user metadata), purging by surrogate key and looking up a key (body, TTL,
//! age, user metadata, length). What it does not give, the ledger of the guest's cache
//! calls (`cache_ledger`) does: which keys to list, and each entry's surrogate keys and
//! stale-while-revalidate period. Time passes by storing an entry again older (`age`): the
//! cache's clock is `Instant`, which nothing can move.

use std::time::Duration;

use http_body::Body as _;
use serde_json::{Value, json};
use viceroy_lib::ExecuteCtx;
use viceroy_lib::body::Body;
use viceroy_lib::cache::{CacheKey, SurrogateKeySet, WriteOptions};

use super::cache_ledger::{CacheLedger, Written};
use crate::wire::PlatformChange;

/// The surrogate key that purges one key's entry: set on the entry that replaces it, then
/// purged at once (viceroy has no removal by key).
const PURGE_BY_KEY_MARKER: &str = "edge-test-purge-by-key";

/// Applies one cache change; `Err` says why it could not be.
pub(crate) async fn apply(
    ctx: &ExecuteCtx,
    ledger: &CacheLedger,
    change: PlatformChange,
) -> Result<(), String> {
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
            ledger.seeded(
                &key,
                Written {
                    surrogate_keys: surrogate_keys.clone(),
                    stale_while_revalidate,
                },
            );
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
        PlatformChange::CacheAdvance { by } => {
            for (key, written) in ledger.keys() {
                age(ctx, &key, by, written.unwrap_or_default()).await?;
            }
            Ok(())
        }
        other => Err(format!("{other:?} reached the cache (a bug in edge-test)")),
    }
}

/// Re-stores the entry at `key` (as a request without headers finds it) `by` older: the
/// same body, TTL, user metadata, vary rule and (from the ledger) surrogate keys and
/// stale-while-revalidate period, with an initial age of its age plus `by`.
async fn age(ctx: &ExecuteCtx, key: &[u8], by: Duration, written: Written) -> Result<(), String> {
    let key = cache_key(key)?;
    let entry = ctx.cache().lookup(&key, &Default::default()).await;
    let Some(found) = entry.found() else {
        return Ok(());
    };
    let meta = found.meta();
    let surrogate_keys: SurrogateKeySet = written
        .surrogate_keys
        .join(" ")
        .parse()
        .map_err(|e| format!("invalid surrogate keys: {e}"))?;
    let options = WriteOptions {
        initial_age: meta.age() + by,
        stale_while_revalidate: written.stale_while_revalidate,
        vary_rule: meta.vary_rule().clone(),
        user_metadata: meta.user_metadata(),
        length: meta.length(),
        surrogate_keys,
        ..WriteOptions::new(meta.max_age())
    };
    let request_headers = meta.request_headers().clone();
    let body = read_body(&entry).await?;
    ctx.cache()
        .insert(&key, request_headers, options, Body::from(body))
        .await;
    Ok(())
}

/// Every entry the guest or the test stored that the cache still holds, with its key.
/// Where the HTTP cache shim keeps its hit counts (`http-cache-shim/src/meta.rs`).
const HTTP_CACHE_HITS_PREFIX: &[u8] = b"edge-test-http-cache-hits/";

pub(crate) async fn list(ctx: &ExecuteCtx, ledger: &CacheLedger) -> Result<Vec<Value>, String> {
    let mut entries = Vec::new();
    for (key, _) in ledger.keys() {
        // The HTTP cache's hit counts are edge-test's bookkeeping, not the guest's entries.
        if key.starts_with(HTTP_CACHE_HITS_PREFIX) {
            continue;
        }
        let mut entry = read(ctx, ledger, &key).await?;
        if let Value::Object(fields) = &mut entry {
            fields.insert("key".to_owned(), Value::from(key));
            entries.push(entry);
        }
    }
    Ok(entries)
}

async fn read_body(entry: &viceroy_lib::cache::CacheEntry) -> Result<Vec<u8>, String> {
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
    Ok(bytes)
}

/// What the cache holds at `key` (for a request with no headers), as JSON: `null`, or
/// `{"body": [bytes], "max_age_ns", "age_ns", "user_metadata": [bytes], "length",
/// "surrogate_keys": [..] | null, "stale_while_revalidate_ns": n | null}` (the last two
/// from the ledger, `null` when no write to the key was seen).
pub(crate) async fn read(
    ctx: &ExecuteCtx,
    ledger: &CacheLedger,
    key: &[u8],
) -> Result<Value, String> {
    let written = ledger.written(key);
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
    let bytes = read_body(&entry).await?;
    Ok(json!({
        "body": bytes,
        "max_age_ns": max_age.as_nanos() as u64,
        "age_ns": age.as_nanos() as u64,
        "user_metadata": user_metadata.to_vec(),
        "length": length,
        "surrogate_keys": written.as_ref().map(|w| w.surrogate_keys.clone()),
        "stale_while_revalidate_ns":
            written.map(|w| w.stale_while_revalidate.as_nanos() as u64),
    }))
}

fn cache_key(key: &[u8]) -> Result<CacheKey, String> {
    key.try_into()
        .map_err(|_| format!("a cache key has at most {} bytes", CacheKey::MAX_LENGTH))
}
