//! Compiling a guest: its module, its `fastly.toml`, and backends pointed at mocks, into
//! one viceroy context. Once per test in process, once per configuration in the host.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use viceroy_lib::config::{Backend, Backends, FastlyConfig, UnknownImportBehavior};
use viceroy_lib::{ExecuteCtx, ProfilingConfig, WasmFeatures};

use super::log_sink::LogSink;
use crate::error::EdgeError;
use crate::executor::SessionSpec;

/// A guest compiled and linked, with the sink its log endpoints write to: everything a
/// session needs. Built once per test in process, or once per configuration in the host,
/// whose forked workers each inherit a pristine copy.
#[derive(Clone)]
pub(crate) struct CompiledGuest {
    pub(crate) ctx: Arc<ExecuteCtx>,
    pub(super) logs: LogSink,
    /// Where its backends point: the only addresses its guest may connect to.
    pub(super) backend_addrs: Vec<SocketAddr>,
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
