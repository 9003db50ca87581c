//! A test's KV changes and reads, carried out by edge-test's own guest (`kv-guest/` in this
//! crate) in a second context that shares the test's guest's KV stores.
//!
//! Why a guest: viceroy-lib 0.22 keeps a context's KV stores behind key types that its
//! public API does not export, so the host cannot write them; but `ObjectStores` is a shared
//! handle, and a context built with a clone of the test guest's handle reads and writes the
//! very same stores through the KV hostcalls. It is compiled beside the test's guest (once
//! per template, so a forked worker inherits both and their shared stores), and runs one
//! request per batch of operations.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use http_body::Body as _;
use serde_json::{Map, Value, json};
use viceroy_lib::config::UnknownImportBehavior;
use viceroy_lib::{ExecuteCtx, ProfilingConfig, WasmFeatures};

use super::viceroy_compat;
use crate::wire::PlatformChange;

/// How long the KV guest may take over one batch: it only touches the in-memory stores, so
/// anything near this is a bug of edge-test's, named rather than waited on.
const KV_GUEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct KvGuest {
    ctx: Arc<ExecuteCtx>,
}

impl KvGuest {
    /// Compiles the KV guest at `wasm` over the stores of `guest`.
    pub(crate) fn compile(wasm: &Path, guest: &ExecuteCtx) -> Result<Self, String> {
        let ctx = ExecuteCtx::build(
            wasm,
            ProfilingConfig::None,
            Default::default(),
            UnknownImportBehavior::LinkError,
            false,
            WasmFeatures::default(),
        )
        .and_then(|builder| {
            builder
                .with_object_stores(guest.object_store().clone())
                // Its output is nobody's: the test's logs are its guest's alone.
                .with_capture_logs(Arc::new(Mutex::new(std::io::sink())))
                .with_log_stdout(true)
                .with_log_stderr(true)
                .finish()
        })
        .map_err(|e| {
            format!(
                "could not load edge-test's KV guest ({}): {e:#}",
                wasm.display()
            )
        })?;
        Ok(Self { ctx })
    }

    /// Carries out `changes` (KV ones only), then reads the stores `read` names: each entry
    /// as `[key, [bytes], metadata]`, by store. `Err` names the first operation that failed,
    /// or says the KV guest did not finish within [`KV_GUEST_LIMIT`].
    pub(crate) async fn run(
        &self,
        changes: Vec<PlatformChange>,
        read: &[String],
    ) -> Result<Map<String, Value>, String> {
        tokio::time::timeout(KV_GUEST_LIMIT, self.run_unbounded(changes, read))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "edge-test's KV guest did not finish within {KV_GUEST_LIMIT:?} (a bug in \
                     edge-test)"
                ))
            })
    }

    async fn run_unbounded(
        &self,
        changes: Vec<PlatformChange>,
        read: &[String],
    ) -> Result<Map<String, Value>, String> {
        let mut ops: Vec<Value> = changes.into_iter().filter_map(operation).collect();
        ops.extend(read.iter().map(|store| json!({"read": {"store": store}})));
        if ops.is_empty() {
            return Ok(Map::new());
        }
        let body = serde_json::to_vec(&ops).expect("operations serialize");
        let request = hyper::Request::post("http://edge-test.kv/")
            .body(hyper::Body::from(body))
            .expect("a valid request");
        let idle_refs = Arc::strong_count(&self.ctx);
        let remote = SocketAddr::from(([127, 0, 0, 1], 50_000));
        let (response, error) = self
            .ctx
            .clone()
            .handle_request(request, viceroy_compat::EDGE_ADDR, remote)
            .await
            .map_err(|e| format!("edge-test's KV guest did not run: {e}"))?;
        let mut body = response.into_body();
        let mut answer = Vec::new();
        while let Some(chunk) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_data(cx)).await
        {
            answer.extend_from_slice(&chunk.map_err(|e| format!("edge-test's KV guest: {e}"))?);
        }
        viceroy_compat::wait_for_guest_exit(&self.ctx, idle_refs).await;
        let answer: Value = serde_json::from_slice(&answer).map_err(|_| {
            format!(
                "edge-test's KV guest failed: {}",
                error.map_or_else(
                    || String::from_utf8_lossy(&answer).into_owned(),
                    |e| format!("{e:?}")
                )
            )
        })?;
        if let Some(why) = answer["error"].as_str() {
            return Err(why.to_owned());
        }
        Ok(answer["read"].as_object().cloned().unwrap_or_default())
    }
}

fn operation(change: PlatformChange) -> Option<Value> {
    match change {
        PlatformChange::KvInsert {
            store,
            key,
            value,
            metadata,
        } => Some(
            json!({"insert": {"store": store, "key": key, "value": value, "metadata": metadata}}),
        ),
        PlatformChange::KvRemove { store, key } => {
            Some(json!({"remove": {"store": store, "key": key}}))
        }
        _ => None,
    }
}
