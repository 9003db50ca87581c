//! Runs a test's guest on viceroy-lib inside the test process, on a thread of its own.
//!
//! Why a thread per session: viceroy keeps running a guest in a spawned task after its first
//! response, and offers no way to stop one. Owning the tokio runtime that runs it means a
//! guest past its time limit is stopped by dropping that runtime (wasmtime's epoch callback
//! yields, so the guest's task is dropped at its next yield). The thread also scopes the
//! tracing dispatcher that observes traps to this session's guests alone.

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, mpsc};

use http_body::Body as _;
use viceroy_lib::config::{Backend, Backends, FastlyConfig, UnknownImportBehavior};
use viceroy_lib::{ExecuteCtx, ProfilingConfig, WasmFeatures};

use super::log_sink::LogSink;
use super::network_fence::NetworkFence;
use super::trap_capture::TrapCollector;
use super::viceroy_compat;
use super::{
    InvocationReport, InvocationRequest, Outcome, ReceivedResponse, SESSION_ENDED, SessionSpec,
};
use crate::error::EdgeError;

type Reply = tokio::sync::oneshot::Sender<InvocationReport>;

pub(crate) struct InProcessSession {
    commands: Option<mpsc::Sender<(InvocationRequest, Reply)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The report of the request in flight: kept here, not in the caller's future, so that
    /// a request whose test stopped awaiting it can still be settled.
    outstanding: tokio::sync::Mutex<Option<Report>>,
}

/// A guest compiled and linked, with the sink its log endpoints write to: everything a
/// session needs. Built once per test in process, or once per configuration in the host,
/// whose forked workers each inherit a pristine copy.
#[derive(Clone)]
pub(crate) struct CompiledGuest {
    pub(crate) ctx: Arc<ExecuteCtx>,
    logs: LogSink,
    /// Where its backends point: the only addresses its guest may connect to.
    backend_addrs: Vec<SocketAddr>,
}

impl CompiledGuest {
    pub(crate) fn compile(spec: &SessionSpec) -> Result<Self, EdgeError> {
        let logs = LogSink::default();
        let ctx = build_context(spec, &logs)?;
        Ok(Self {
            ctx,
            logs,
            backend_addrs: spec.backend_addrs.values().copied().collect(),
        })
    }
}

impl InProcessSession {
    pub(crate) fn start(spec: SessionSpec) -> Result<Self, EdgeError> {
        let guest = CompiledGuest::compile(&spec)?;
        Self::serve(&spec.service, guest)
    }

    /// Runs invocations of `guest` on a thread of its own until the session is dropped.
    pub(crate) fn serve(service: &str, guest: CompiledGuest) -> Result<Self, EdgeError> {
        let (commands, inbox) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("edge-test guest [{service}]"))
            .spawn(move || guest_thread(guest, inbox))
            .map_err(|e| EdgeError::io("cannot start the guest thread", e))?;
        Ok(Self {
            commands: Some(commands),
            thread: Some(thread),
            outstanding: tokio::sync::Mutex::new(None),
        })
    }

    /// Starts one request; its report is ready once the guest has fully finished (or was
    /// stopped).
    fn invoke(&self, request: InvocationRequest) -> Report {
        let (reply, report) = tokio::sync::oneshot::channel();
        if let Some(commands) = &self.commands {
            // A session that ended drops the request, and with it `reply`: `wait` sees that.
            let _ = commands.send((request, reply));
        }
        report
    }

    pub(crate) async fn run(&self, request: InvocationRequest) -> InvocationReport {
        let mut outstanding = self.outstanding.lock().await;
        if let Some(abandoned) = outstanding.as_mut() {
            // The edge settles an abandoned request first; even if not, never shift by one.
            let _ = abandoned.await;
        }
        let report = outstanding.insert(self.invoke(request));
        let report = report.await;
        *outstanding = None;
        report.unwrap_or_else(|_| InvocationReport::not_run(SESSION_ENDED))
    }

    pub(crate) fn run_blocking(&self, request: InvocationRequest) -> InvocationReport {
        let mut outstanding = self.outstanding.blocking_lock();
        if let Some(abandoned) = outstanding.take() {
            let _ = abandoned.blocking_recv();
        }
        self.invoke(request)
            .blocking_recv()
            .unwrap_or_else(|_| InvocationReport::not_run(SESSION_ENDED))
    }

    pub(crate) async fn settle(&self) -> Option<InvocationReport> {
        let mut outstanding = self.outstanding.lock().await;
        let report = outstanding.as_mut()?.await;
        *outstanding = None;
        Some(report.unwrap_or_else(|_| InvocationReport::not_run(SESSION_ENDED)))
    }

    pub(crate) fn settle_blocking(&self) -> Option<InvocationReport> {
        let report = self.outstanding.blocking_lock().take()?.blocking_recv();
        Some(report.unwrap_or_else(|_| InvocationReport::not_run(SESSION_ENDED)))
    }
}

/// Where the report of one request arrives.
type Report = tokio::sync::oneshot::Receiver<InvocationReport>;

impl Drop for InProcessSession {
    fn drop(&mut self) {
        // Closing the channel ends the guest thread, which drops the runtime and the context.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn guest_thread(guest: CompiledGuest, inbox: mpsc::Receiver<(InvocationRequest, Reply)>) {
    let mut runner = match GuestRunner::new(guest) {
        Ok(runner) => runner,
        Err(reason) => {
            // Every request of this session is refused with the reason.
            while let Ok((_, reply)) = inbox.recv() {
                let _ = reply.send(InvocationReport::not_run(&reason));
            }
            return;
        }
    };
    while let Ok((request, reply)) = inbox.recv() {
        let report = runner.run(request);
        let timed_out = matches!(report.outcome, Outcome::TimedOut { .. });
        let _ = reply.send(report);
        if timed_out {
            // The guest may still be running: only dropping its runtime stops it, and the
            // context it ran in can no longer be trusted, so this session ends. Later
            // requests are refused as soon as the inbox is gone.
            break;
        }
    }
}

/// Runs a guest's invocations on the thread that owns it: the session's thread in process,
/// the worker's main thread in a forked worker (where every hop between threads would be
/// paid on each request).
pub(crate) struct GuestRunner {
    ctx: Arc<ExecuteCtx>,
    logs: LogSink,
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
        let traps = TrapCollector::default();
        let dispatch = tracing::dispatcher::set_default(&tracing::Dispatch::new(traps.clone()));
        // Before the runtime, so that every thread it starts (the blocking pool, where
        // host names are resolved) is fenced too.
        let fence = NetworkFence::install(guest.backend_addrs);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("could not start a tokio runtime for the guest: {e}"))?;
        Ok(Self {
            ctx: guest.ctx,
            logs: guest.logs,
            traps,
            runtime: Some(runtime),
            fence,
            _dispatch: dispatch,
        })
    }

    /// Runs one request until the guest has fully finished or its time limit passed. After
    /// a timeout the guest may still be running, and the runner must be dropped.
    pub(crate) fn run(&mut self, request: InvocationRequest) -> InvocationReport {
        let Some(runtime) = &self.runtime else {
            return InvocationReport::not_run(SESSION_ENDED);
        };
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
                }
            }
        };
        match &self.fence {
            Ok(fence) => report.refused_connections = fence.take_refused(),
            Err(why) => report.unfenced = Some(why.clone()),
        }
        report
    }
}

impl Drop for GuestRunner {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn build_context(spec: &SessionSpec, logs: &LogSink) -> Result<Arc<ExecuteCtx>, EdgeError> {
    let config: Option<FastlyConfig> = match &spec.fastly_toml {
        Some(text) => Some(text.parse().map_err(|e| EdgeError::GuestLoad {
            service: spec.service.clone(),
            wasm: spec.wasm.clone(),
            reason: format!("its fastly.toml does not parse: {e}"),
        })?),
        None => None,
    };
    let mut builder = ExecuteCtx::build(
        &spec.wasm,
        ProfilingConfig::None,
        HashSet::new(),
        UnknownImportBehavior::LinkError,
        false,
        WasmFeatures::default(),
    )
    .map_err(|e| compile_error(spec, &e))?
    .with_capture_logs(logs.as_writer())
    .with_log_stdout(true)
    .with_log_stderr(true);
    if let Some(config) = &config {
        builder = builder
            .with_acls(config.acls().clone())
            .with_dictionaries(config.dictionaries().clone())
            // Parsed from text for this session alone: the stores start as fastly.toml
            // declares them and are never shared with another test.
            .with_object_stores(config.object_stores().clone())
            .with_secret_stores(config.secret_stores().clone())
            .with_geolocation(config.geolocation().clone())
            .with_device_detection(config.device_detection().clone());
    }
    let backends = mocked_backends(
        config.as_ref().map(FastlyConfig::backends),
        &spec.backend_addrs,
    );
    builder = builder.with_backends(backends);
    builder.finish().map_err(|e| compile_error(spec, &e))
}

fn compile_error(spec: &SessionSpec, error: &viceroy_lib::Error) -> EdgeError {
    EdgeError::GuestLoad {
        service: spec.service.clone(),
        wasm: spec.wasm.clone(),
        // `{:#}` keeps wasmtime's cause chain ("unknown import: ...").
        reason: format!("{error:#}"),
    }
}

/// Points every backend at the test's mock for it. The Host the mock sees is the one
/// production sends: the backend's `override_host` when `fastly.toml` gives one, the
/// request's own Host otherwise (viceroy, like Fastly, keeps it then).
fn mocked_backends(
    declared: Option<&Backends>,
    addrs: &std::collections::BTreeMap<String, SocketAddr>,
) -> Backends {
    addrs
        .iter()
        .map(|(name, addr)| {
            let original = declared.and_then(|b| b.get(name));
            let override_host = original.and_then(|b| b.override_host.clone());
            let backend = Backend {
                uri: format!("http://{addr}")
                    .parse()
                    .expect("a socket address is a valid authority"),
                override_host,
                cert_host: None,
                use_sni: false,
                grpc: false,
                first_byte_timeout: original.and_then(|b| b.first_byte_timeout),
                between_bytes_timeout: original.and_then(|b| b.between_bytes_timeout),
                client_cert: None,
                ca_certs: Vec::new(),
                health: Default::default(),
            };
            (name.clone(), Arc::new(backend))
        })
        .collect()
}

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
    let idle_refs = Arc::strong_count(ctx);

    let hyper_request = match crate::wire::hyper_request(request.clone()) {
        Ok(r) => r,
        Err(e) => return InvocationReport::not_run(&format!("invalid {e}")),
    };
    let local = viceroy_compat::EDGE_ADDR;
    let remote = SocketAddr::new(request.client_ip, 50_000);
    let (response, early_error) = match ctx
        .clone()
        .handle_request(hyper_request, local, remote)
        .await
    {
        Ok(result) => result,
        Err(e) => {
            return InvocationReport::not_run(&format!("the runtime refused the request: {e}"));
        }
    };

    let (parts, mut body) = response.into_parts();
    *progress.borrow_mut() = Some(ReceivedResponse {
        status: parts.status.as_u16(),
        headers: crate::wire::raw_headers_from_hyper(&parts.headers),
        body: Vec::new(),
        body_error: None,
        from_runtime: false,
    });
    loop {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_data(cx)).await {
            Some(Ok(chunk)) => {
                if let Some(received) = progress.borrow_mut().as_mut() {
                    received.body.extend_from_slice(&chunk);
                }
            }
            Some(Err(e)) => {
                if let Some(received) = progress.borrow_mut().as_mut() {
                    received.body_error = Some(e.to_string());
                }
                break;
            }
            None => break,
        }
    }
    drop(body);

    viceroy_compat::wait_for_guest_exit(ctx, idle_refs).await;

    let mut failures = traps.drain_guest_failures();
    if let (true, Some(e)) = (failures.is_empty(), early_error) {
        failures.push(viceroy_compat::without_host_backtrace(&format!(
            "WebAssembly trapped: {e:?}"
        )));
    }
    let mut response = progress.borrow_mut().take();
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
    }
}
