//! Running a guest's invocations, one at a time, on the thread that owns it: send the
//! request, read the response, wait for the guest to finish, collect what it left.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use http_body::Body as _;
use viceroy_lib::ExecuteCtx;

use super::cache_control;
use super::cache_ledger::CacheLedger;
use super::compile::CompiledGuest;
use super::dynamic_backends::DynamicSlots;
use super::kv_guest::KvGuest;
use super::log_sink::LogSink;
use super::network_fence::NetworkFence;
use super::platform_files::PlatformFiles;
use super::trap_capture::TrapCollector;
use super::viceroy_compat;
use crate::executor::{
    InvocationReport, InvocationRequest, Outcome, ReceivedResponse, SESSION_ENDED,
};

/// Runs a guest's invocations on the thread that owns it: the session's thread in process,
/// the worker's main thread in a forked worker (where every hop between threads would be
/// paid on each request).
pub(crate) struct GuestRunner {
    ctx: Arc<ExecuteCtx>,
    logs: LogSink,
    platform: Arc<std::sync::Mutex<PlatformFiles>>,
    kv: Option<Arc<KvGuest>>,
    /// The invocation's dynamic backends, redirected to the test's dispatcher.
    dynamic: DynamicSlots,
    /// The cache keys the guest and the test used, and what their writes said.
    ledger: CacheLedger,
    /// Why the module's dynamic backends are not redirected, when they are not.
    unredirected: Option<String>,
    /// Where a trap's source lines are read from (`trap_lines`).
    dwarf: Option<super::module_rewrite::DwarfFile>,
    traps: TrapCollector,
    runtime: Option<tokio::runtime::Runtime>,
    /// `Err` (why) where the kernel will not fence the guest: it then runs unfenced.
    fence: Result<NetworkFence, String>,
    // Scopes the trap observer to this thread's guests.
    _dispatch: tracing::dispatcher::DefaultGuard,
}

impl GuestRunner {
    /// `Err` says why the guest cannot run at all.
    pub(crate) fn new(guest: CompiledGuest) -> Result<Self, String> {
        // Before anything writes them: a forked worker shares its template's files until
        // then (`platform_files`).
        crate::sync::lock(&guest.platform)
            .make_private()
            .map_err(|e| format!("could not give the guest platform files of its own: {e}"))?;
        let traps = TrapCollector::default();
        let dispatch = tracing::dispatcher::set_default(&tracing::Dispatch::new(traps.clone()));
        // Before the runtime, so that every thread it starts (the blocking pool, where
        // host names are resolved) is fenced too.
        let dynamic = DynamicSlots::default();
        let ledger = CacheLedger::default();
        guest.logs.take_reports(dynamic.clone(), ledger.clone());
        let fence = NetworkFence::install(guest.backend_addrs, dynamic.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("could not start a tokio runtime for the guest: {e}"))?;
        Ok(Self {
            ctx: guest.ctx,
            logs: guest.logs,
            platform: guest.platform,
            kv: guest.kv,
            dynamic,
            ledger,
            unredirected: guest.unredirected,
            dwarf: guest.dwarf,
            traps,
            runtime: Some(runtime),
            fence,
            _dispatch: dispatch,
        })
    }

    /// Runs one request until the guest has fully finished or its time limit passed. After
    /// a timeout the guest may still be running, and the runner must be dropped.
    pub(crate) fn run(&mut self, mut request: InvocationRequest) -> InvocationReport {
        let Some(runtime) = &self.runtime else {
            return InvocationReport::not_run(SESSION_ENDED);
        };
        let changes = std::mem::take(&mut request.platform);
        if let Err(why) = self.apply_platform(runtime, changes) {
            return InvocationReport::not_run(&format!(
                "the test's platform changes could not be applied: {why}"
            ));
        }
        if request.platform_only {
            return match self.read_platform(runtime, &request) {
                Ok(read) => {
                    let mut report = InvocationReport::not_run("a platform request runs no guest");
                    report.outcome = Outcome::Completed;
                    report.platform_read = Some(read.to_string());
                    report
                }
                Err(why) => InvocationReport::not_run(&format!("the read failed: {why}")),
            };
        }
        self.dynamic.begin(request.dynamic_dispatcher);
        self.ledger.begin_invocation();
        let progress = Rc::new(RefCell::new(None));
        let limit = request.guest_timeout;
        let run = invoke(
            &self.ctx,
            request,
            &self.logs,
            &self.traps,
            progress.clone(),
        );
        let mut report = match runtime.block_on(async { tokio::time::timeout(limit, run).await }) {
            Ok(report) => report,
            Err(_elapsed) => {
                // Only dropping the runtime stops the guest.
                if let Some(runtime) = self.runtime.take() {
                    runtime.shutdown_background();
                }
                let logs = self.logs.drain();
                InvocationReport {
                    response: progress.borrow_mut().take(),
                    log: logs.bytes,
                    outcome: Outcome::TimedOut { limit },
                    refused_connections: Vec::new(),
                    dropped_log_bytes: logs.dropped,
                    runtime_warnings: self.traps.drain_warnings(),
                    unfenced: None,
                    platform_read: None,
                    stdio: None,
                }
            }
        };
        if let (Outcome::Trapped { message }, Some(dwarf)) = (&mut report.outcome, &self.dwarf) {
            *message = super::trap_lines::with_source_lines(message, dwarf);
        }
        match &self.fence {
            Ok(fence) => report.refused_connections = fence.take_refused(),
            Err(why) => {
                report.unfenced = Some(why.clone());
                // Without the fence nothing hands a redirected backend its mock: it must not
                // pass as a backend that merely failed.
                report.refused_connections = self
                    .dynamic
                    .registered()
                    .into_iter()
                    .map(|backend| format!("{backend} (not mocked: {why})"))
                    .collect();
            }
        }
        if let (false, Some(why)) = (report.refused_connections.is_empty(), &self.unredirected) {
            report.runtime_warnings.push(format!(
                "edge-test did not redirect this module's dynamic backends to mocks: {why}"
            ));
        }
        for why in self.dynamic.take_unreadable() {
            report
                .runtime_warnings
                .push(format!("edge-test could not read a dynamic backend: {why}"));
        }
        report
    }
}

impl GuestRunner {
    /// Applies the test's changes, in the order made within each kind: to the files, the
    /// cache and the KV stores (which are independent of each other).
    fn apply_platform(
        &self,
        runtime: &tokio::runtime::Runtime,
        changes: Vec<crate::wire::PlatformChange>,
    ) -> Result<(), String> {
        let (kv, rest): (Vec<_>, Vec<_>) = changes.into_iter().partition(|c| c.is_kv());
        let (cache, files): (Vec<_>, Vec<_>) = rest.into_iter().partition(|c| c.is_cache());
        crate::sync::lock(&self.platform).apply(files)?;
        runtime.block_on(async {
            for change in cache {
                cache_control::apply(&self.ctx, &self.ledger, change).await?;
            }
            Ok::<_, String>(())
        })?;
        if !kv.is_empty() {
            self.run_kv_guest(runtime, kv, &[])?;
        }
        Ok(())
    }

    /// Reads the KV stores and the cache keys a platform-only request names.
    fn read_platform(
        &self,
        runtime: &tokio::runtime::Runtime,
        request: &InvocationRequest,
    ) -> Result<serde_json::Value, String> {
        let kv = if request.read_kv.is_empty() {
            Default::default()
        } else {
            self.run_kv_guest(runtime, Vec::new(), &request.read_kv)?
        };
        let (cache, listed) = runtime.block_on(async {
            let mut entries = Vec::new();
            for key in &request.read_cache {
                entries.push(cache_control::read(&self.ctx, &self.ledger, key).await?);
            }
            let listed = if request.list_cache {
                cache_control::list(&self.ctx, &self.ledger).await?
            } else {
                Vec::new()
            };
            Ok::<_, String>((entries, listed))
        })?;
        Ok(serde_json::json!({ "kv": kv, "cache": cache, "cache_list": listed }))
    }

    fn run_kv_guest(
        &self,
        runtime: &tokio::runtime::Runtime,
        changes: Vec<crate::wire::PlatformChange>,
        read: &[String],
    ) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let Some(guest) = &self.kv else {
            return Err("the service declares no KV store".to_owned());
        };
        let result = runtime.block_on(guest.run(changes, read));
        // What the KV guest's run left for the trap observer is not the test's guest's.
        let _ = self.traps.drain_guest_failures();
        let _ = self.traps.drain_warnings();
        result
    }
}

impl Drop for GuestRunner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// One invocation, step by step, until the guest has fully finished. What the client has
/// received so far is kept in `progress`, for a time-out to report.
async fn invoke(
    ctx: &Arc<ExecuteCtx>,
    request: InvocationRequest,
    logs: &LogSink,
    traps: &TrapCollector,
    progress: Rc<RefCell<Option<ReceivedResponse>>>,
) -> InvocationReport {
    // Output left by an earlier invocation was drained with it; this is belt and braces.
    let _ = traps.drain_guest_failures();
    let _ = traps.drain_warnings();
    logs.begin(request.max_log_bytes);
    if let Some(args) = request.command {
        return run_command(ctx, args, logs, traps).await;
    }
    let idle_refs = Arc::strong_count(ctx);

    let (response, early_error) = match send(ctx, request).await {
        Ok(answered) => answered,
        Err(not_run) => return not_run,
    };
    read_response(response, &progress).await;
    viceroy_compat::wait_for_guest_exit(ctx, idle_refs).await;
    let response = progress.borrow_mut().take();
    collect(response, early_error, logs, traps)
}

/// Runs the module as a WASI command with `args` (the program's name first) until its
/// `_start` returns or it exits: one instance of its own, which it leaves nothing behind in
/// (viceroy drops the store before answering).
async fn run_command(
    ctx: &Arc<ExecuteCtx>,
    args: Vec<String>,
    logs: &LogSink,
    traps: &TrapCollector,
) -> InvocationReport {
    let Some((program, args)) = args.split_first() else {
        return InvocationReport::not_run("a command needs at least its program's name");
    };
    let ended = ctx.clone().run_main(program, args).await;
    let mut report = collect(None, None, logs, traps);
    if report.outcome == Outcome::Completed {
        report.outcome = viceroy_compat::command_outcome(ended);
    }
    report
}

/// What viceroy answers a request with: the guest's first response, and (as its report
/// reads) the error of a guest that failed before it.
type Answered = (hyper::Response<viceroy_lib::body::Body>, Option<String>);

/// Hands the request to viceroy; it answers at the guest's first response (the guest
/// goes on in a task of its own).
async fn send(
    ctx: &Arc<ExecuteCtx>,
    request: InvocationRequest,
) -> Result<Answered, InvocationReport> {
    let remote = SocketAddr::new(request.client_ip, 50_000);
    let hyper_request = crate::wire::hyper_request(request)
        .map_err(|e| InvocationReport::not_run(&format!("invalid {e}")))?;
    let (response, early_error) = ctx
        .clone()
        .handle_request(hyper_request, viceroy_compat::EDGE_ADDR, remote)
        .await
        .map_err(|e| InvocationReport::not_run(&format!("the runtime refused the request: {e}")))?;
    Ok((response, early_error.map(|e| format!("{e:?}"))))
}

/// Reads the whole response into `progress`, noting why its body ended early, if it did.
async fn read_response(
    response: hyper::Response<viceroy_lib::body::Body>,
    progress: &RefCell<Option<ReceivedResponse>>,
) {
    let (parts, mut body) = response.into_parts();
    *progress.borrow_mut() = Some(ReceivedResponse {
        status: parts.status.as_u16(),
        headers: crate::wire::raw_headers_from_hyper(&parts.headers),
        body: Vec::new(),
        body_error: None,
        from_runtime: false,
    });
    loop {
        let chunk = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_data(cx)).await;
        let mut received = progress.borrow_mut();
        let Some(received) = received.as_mut() else {
            return;
        };
        match chunk {
            Some(Ok(chunk)) => received.body.extend_from_slice(&chunk),
            Some(Err(e)) => {
                received.body_error = Some(e.to_string());
                return;
            }
            None => return,
        }
    }
}

/// How the guest ended, and what it left: its trap (seen after the response, or the error
/// viceroy returned before it), its logs and the runtime's warnings.
fn collect(
    mut response: Option<ReceivedResponse>,
    early_error: Option<String>,
    logs: &LogSink,
    traps: &TrapCollector,
) -> InvocationReport {
    let mut failures = traps.drain_guest_failures();
    if let (true, Some(e)) = (failures.is_empty(), early_error) {
        failures.push(viceroy_compat::without_host_backtrace(&format!(
            "WebAssembly trapped: {e}"
        )));
    }
    if let (Some(received), Some(failure)) = (response.as_mut(), failures.first()) {
        received.from_runtime =
            viceroy_compat::is_runtime_error_response(received.status, &received.body, failure);
    }
    let outcome = match failures.into_iter().next() {
        None => Outcome::Completed,
        Some(message) => Outcome::Trapped { message },
    };
    let logs = logs.drain();
    InvocationReport {
        response,
        log: logs.bytes,
        outcome,
        refused_connections: Vec::new(),
        dropped_log_bytes: logs.dropped,
        runtime_warnings: traps.drain_warnings(),
        unfenced: None,
        platform_read: None,
        stdio: None,
    }
}
