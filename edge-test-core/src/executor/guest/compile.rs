//! Compiling a guest: its module, its `fastly.toml`, and backends pointed at mocks, into
//! one viceroy context. Once per test in process, once per configuration in the host.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use viceroy_lib::config::{
    Backend, Backends, DeviceDetection, Dictionaries, Dictionary, FastlyConfig, Geolocation,
    UnknownImportBehavior,
};
use viceroy_lib::{ExecuteCtx, ProfilingConfig, WasmFeatures};

use super::kv_guest::KvGuest;
use super::log_sink::LogSink;
use super::platform_files::PlatformFiles;
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
    /// The files its config stores and geolocation table are read from, which a test's
    /// changes rewrite (shared by the clones of one session, or of one template until a
    /// worker makes them its own).
    pub(super) platform: Arc<Mutex<PlatformFiles>>,
    /// Carries out the test's KV changes and reads, when `fastly.toml` declares KV stores.
    pub(super) kv: Option<Arc<KvGuest>>,
    /// Why the module's dynamic backends are not redirected to mocks, when they are not.
    pub(super) unredirected: Option<String>,
    /// A file whose DWARF describes its code, for a trap's source lines (`trap_lines`).
    pub(super) dwarf: Option<super::module_rewrite::DwarfFile>,
    /// Its stdout and stderr go to the process's own (`SessionSpec::capture_stdio`), for a
    /// forked worker to catch, rather than to the log sink.
    pub(crate) capture_stdio: bool,
}

impl CompiledGuest {
    pub(crate) fn compile(spec: &SessionSpec) -> Result<Self, EdgeError> {
        let logs = LogSink::default();
        let load_error = |reason: String| EdgeError::GuestLoad {
            service: spec.service.clone(),
            wasm: spec.wasm.clone(),
            reason,
        };
        let config: Option<FastlyConfig> = match &spec.fastly_toml {
            Some(text) => Some(
                text.parse()
                    .map_err(|e| load_error(format!("its fastly.toml does not parse: {e}")))?,
            ),
            None => None,
        };
        let (platform, settings) =
            platform_files(spec.fastly_toml.as_deref(), config.as_ref()).map_err(load_error)?;
        // Dynamic backends redirected to the test's mocks (`module_rewrite`); a module that
        // cannot be rewritten runs as it is, its dynamic backends refused by the fence, and
        // the reason said with each refusal.
        let shim = spec.http_cache_shim.as_deref();
        let (module, unredirected) = match super::module_rewrite::module_for(&spec.wasm, shim) {
            Ok(module) => (module, None),
            // Without the shim the guest's HTTP cache would silently pass everything through.
            Err(why) if shim.is_some() && super::module_rewrite::imports_http_cache(&spec.wasm) => {
                return Err(load_error(format!(
                    "edge-test cannot give it Fastly's HTTP cache: {why}. \
                     `Service::http_cache(false)` runs it without one (every send passes)"
                )));
            }
            Err(why) => (
                super::module_rewrite::ModuleToCompile::without_lines(&spec.wasm),
                Some(why),
            ),
        };
        let ctx = build_context(spec, &module.path, config, settings, &logs)?;
        let kv = match &spec.kv_guest {
            Some(wasm) => Some(Arc::new(KvGuest::compile(wasm, &ctx).map_err(load_error)?)),
            None => None,
        };
        Ok(Self {
            unredirected,
            dwarf: module.dwarf,
            capture_stdio: spec.capture_stdio,
            kv,
            ctx,
            logs,
            backend_addrs: spec.backend_addrs.values().copied().collect(),
            platform: Arc::new(Mutex::new(platform)),
        })
    }
}

/// The viceroy settings that read the platform files.
struct FileBackedSettings {
    dictionaries: Dictionaries,
    geolocation: Geolocation,
    device_detection: DeviceDetection,
}

/// The files behind the config stores, the geolocation and the device detection tables,
/// holding what `fastly.toml` declares, and the viceroy settings that read them.
fn platform_files(
    text: Option<&str>,
    config: Option<&FastlyConfig>,
) -> Result<(PlatformFiles, FileBackedSettings), String> {
    let mut stores = BTreeMap::new();
    for (name, store) in config.map(FastlyConfig::dictionaries).into_iter().flatten() {
        let loaded = store
            .load()
            .map_err(|e| format!("its config store `{name}` does not load: {e}"))?;
        let entries: Map<String, Value> = loaded
            .contents
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        stores.insert(name.clone(), entries);
    }
    // Where the downstream facts the test sets per request are read from (`module_rewrite`).
    stores.insert(
        super::module_rewrite::DOWNSTREAM_STORE.to_owned(),
        Map::new(),
    );
    let declared = DeclaredGeolocation::read(text)?;
    let devices = declared_devices(text)?;
    let files = PlatformFiles::new(stores, declared.records, devices)
        .map_err(|e| format!("could not create the files its stores are read from: {e}"))?;
    let dictionaries: Dictionaries = files
        .config_store_paths()
        .map(|(name, file)| (name.clone(), Dictionary::Json { file }))
        .collect();
    let snippet = format!(
        "[local_server.geolocation]\nformat = \"json\"\nfile = {:?}\nuse_default_loopback = {}\n",
        files.geolocation_path().display().to_string(),
        declared.use_default_loopback
    );
    let geolocation = snippet
        .parse::<FastlyConfig>()
        .map_err(|e| format!("could not serve its geolocation table from a file: {e}"))?
        .geolocation()
        .clone();
    let snippet = format!(
        "[local_server.device_detection]\nformat = \"json\"\nfile = {:?}\n",
        files.device_detection_path().display().to_string(),
    );
    let device_detection = snippet
        .parse::<FastlyConfig>()
        .map_err(|e| format!("could not serve its device detection table from a file: {e}"))?
        .device_detection()
        .clone();
    Ok((
        files,
        FileBackedSettings {
            dictionaries,
            geolocation,
            device_detection,
        },
    ))
}

/// The device detection records `fastly.toml` declares (inline or in a JSON file), by
/// user agent.
fn declared_devices(text: Option<&str>) -> Result<Map<String, Value>, String> {
    let table = text
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|table| {
            table
                .get("local_server")?
                .get("device_detection")?
                .as_table()
                .cloned()
        })
        .unwrap_or_default();
    if let Some(file) = table.get("file").and_then(|f| f.as_str()) {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("its device detection file {file:?} cannot be read: {e}"))?;
        return serde_json::from_str(&text)
            .map_err(|e| format!("its device detection file {file:?} is not a JSON object: {e}"));
    }
    Ok(table
        .get("user_agents")
        .and_then(|agents| serde_json::to_value(agents).ok())
        .and_then(|agents| agents.as_object().cloned())
        .unwrap_or_default())
}

/// The geolocation table `fastly.toml` declares (inline or in a JSON file), keyed by
/// address as the test's records are.
struct DeclaredGeolocation {
    records: Map<String, Value>,
    use_default_loopback: bool,
}

impl DeclaredGeolocation {
    fn read(text: Option<&str>) -> Result<Self, String> {
        let table = text
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|table| {
                table
                    .get("local_server")?
                    .get("geolocation")?
                    .as_table()
                    .cloned()
            })
            .unwrap_or_default();
        let use_default_loopback = table
            .get("use_default_loopback")
            .and_then(toml::Value::as_bool)
            .unwrap_or(true);
        let raw: Map<String, Value> = if let Some(file) = table.get("file").and_then(|f| f.as_str())
        {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("its geolocation file {file:?} cannot be read: {e}"))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("its geolocation file {file:?} is not a JSON object: {e}"))?
        } else if let Some(addresses) = table.get("addresses") {
            serde_json::to_value(addresses)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default()
        } else {
            Map::new()
        };
        let records = raw
            .into_iter()
            .map(|(address, record)| {
                let ip: std::net::IpAddr = address.parse().map_err(|_| {
                    format!("its geolocation table names {address:?}, not an IP address")
                })?;
                Ok((ip.to_string(), record))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            records,
            use_default_loopback,
        })
    }
}

fn build_context(
    spec: &SessionSpec,
    module: &std::path::Path,
    config: Option<FastlyConfig>,
    files: FileBackedSettings,
    logs: &LogSink,
) -> Result<Arc<ExecuteCtx>, EdgeError> {
    let mut builder = ExecuteCtx::build(
        module,
        ProfilingConfig::None,
        HashSet::new(),
        UnknownImportBehavior::LinkError,
        false,
        WasmFeatures::default(),
    )
    .map_err(|e| compile_error(spec, &e))?
    .with_capture_logs(logs.as_writer())
    .with_log_stdout(!spec.capture_stdio)
    .with_log_stderr(!spec.capture_stdio)
    // Served from files a test's changes rewrite (`platform_files`).
    .with_dictionaries(files.dictionaries)
    .with_geolocation(files.geolocation)
    .with_device_detection(files.device_detection);
    if let Some(config) = &config {
        builder = builder
            .with_acls(config.acls().clone())
            // Parsed from text for this session alone: the stores start as fastly.toml
            // declares them and are never shared with another test.
            .with_object_stores(config.object_stores().clone())
            .with_secret_stores(config.secret_stores().clone());
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
