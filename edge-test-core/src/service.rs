//! Services a test binary can run: declared once with `register_service!`, resolved by name.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::error::EdgeError;
use crate::guest_build;
use crate::sync::OnceMap;

/// How long one invocation may run before its guest is stopped, unless the service or the
/// test says otherwise. Long enough for a slow shared CI machine, short enough that a
/// looping guest fails fast.
pub const DEFAULT_GUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How many bytes of log output (endpoints, stdout and stderr together) one invocation may
/// write, unless the service or the test says otherwise: far more than a service should
/// log per request, and a bound on what a guest printing in a loop costs the test.
pub const DEFAULT_MAX_LOG_BYTES: usize = 32 << 20;

/// A Fastly Compute service under test: where its wasm comes from and how it is configured.
///
/// Relative paths resolve against the directory of the crate that registers the service.
///
/// ```
/// use std::time::Duration;
/// use edge_test_core::Service;
///
/// // A guest crate, built for wasm32-wasip1 when a test first needs it;
/// // its `fastly.toml` is picked up from the crate directory.
/// let todo = Service::guest_crate("guest");
///
/// // A module built by another toolchain, with its manifest elsewhere.
/// let js = Service::wasm("fixtures/app.wasm")
///     .fastly_toml("fixtures/fastly.toml")
///     .guest_timeout(Duration::from_secs(2));
/// # let _ = (todo, js);
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Service does nothing until it is returned from `register_service!`"]
pub struct Service {
    source: GuestSource,
    fastly_toml: Option<PathBuf>,
    guest_timeout: Duration,
    max_log_bytes: usize,
    http_cache: bool,
}

#[derive(Debug, Clone)]
enum GuestSource {
    Crate(PathBuf),
    Wasm(PathBuf),
}

impl Service {
    /// A guest written in Rust: the crate at `dir` is built (release, wasm32-wasip1) into
    /// edge-test's own target directory whenever its sources change.
    pub fn guest_crate(dir: impl Into<PathBuf>) -> Self {
        Self {
            source: GuestSource::Crate(dir.into()),
            fastly_toml: None,
            guest_timeout: DEFAULT_GUEST_TIMEOUT,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            http_cache: true,
        }
    }

    /// A prebuilt module (`.wasm`, or `.wat` text), for guests built by other toolchains.
    pub fn wasm(path: impl Into<PathBuf>) -> Self {
        Self {
            source: GuestSource::Wasm(path.into()),
            fastly_toml: None,
            guest_timeout: DEFAULT_GUEST_TIMEOUT,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            http_cache: true,
        }
    }

    /// The service's `fastly.toml`. For a guest crate it defaults to `<crate>/fastly.toml`
    /// when that file exists.
    pub fn fastly_toml(mut self, path: impl Into<PathBuf>) -> Self {
        self.fastly_toml = Some(path.into());
        self
    }

    /// How long one invocation of this service may run (default 5 s).
    pub fn guest_timeout(mut self, limit: Duration) -> Self {
        self.guest_timeout = limit;
        self
    }

    /// How many bytes of log output one invocation may write (default 32 MiB); past it,
    /// output is dropped and the test fails saying how much.
    pub fn max_log_bytes(mut self, limit: usize) -> Self {
        self.max_log_bytes = limit;
        self
    }

    /// Whether the guest gets Fastly's HTTP cache (default: yes). viceroy has none, so
    /// edge-test merges its own into the guest's module: `Request::send` caches as it does
    /// in production, and `before_send` / `after_send` hooks run. `false` gives the guest
    /// viceroy's behaviour instead: every send goes to the backend, and a send with a hook
    /// fails ("HTTP caching API is not enabled").
    ///
    /// ```
    /// use edge_test_core::Service;
    /// let uncached = Service::guest_crate("guest").http_cache(false);
    /// # let _ = uncached;
    /// ```
    pub fn http_cache(mut self, enabled: bool) -> Self {
        self.http_cache = enabled;
        self
    }
}

/// One `register_service!` in a test binary. Public for the macro only.
#[doc(hidden)]
pub struct ServiceRegistration {
    name: &'static str,
    manifest_dir: &'static str,
    define: fn() -> Service,
}

impl ServiceRegistration {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        manifest_dir: &'static str,
        define: fn() -> Service,
    ) -> Self {
        Self {
            name,
            manifest_dir,
            define,
        }
    }
}

inventory::collect!(ServiceRegistration);

/// A service ready to run: its module on disk and its manifest read.
#[derive(Debug)]
pub(crate) struct ResolvedService {
    pub name: String,
    pub wasm: PathBuf,
    pub manifest: Option<crate::manifest::Manifest>,
    pub guest_timeout: Duration,
    pub max_log_bytes: usize,
    /// edge-test's HTTP cache shim, built, unless the service opted out.
    pub http_cache_shim: Option<PathBuf>,
}

/// Resolves (and, for a guest crate, builds) a service once per process; every test of the
/// binary that names it shares the result.
pub(crate) fn resolve(name: &str) -> Result<Arc<ResolvedService>, EdgeError> {
    static RESOLVED: OnceLock<OnceMap<String, Result<Arc<ResolvedService>, EdgeError>>> =
        OnceLock::new();
    // Concurrent tests wait here for the one that builds; they never build twice.
    RESOLVED
        .get_or_init(OnceMap::new)
        .get_or_init(name.to_owned(), || resolve_uncached(name).map(Arc::new))
}

fn resolve_uncached(name: &str) -> Result<ResolvedService, EdgeError> {
    let registration = find_registration(name)?;
    let service = (registration.define)();
    let base = Path::new(registration.manifest_dir);
    let (wasm, default_manifest) = match &service.source {
        GuestSource::Crate(dir) => {
            let dir = base.join(dir);
            let wasm = guest_build::build_guest_crate(name, &dir)?;
            let manifest = dir.join("fastly.toml");
            (wasm, manifest.is_file().then_some(manifest))
        }
        GuestSource::Wasm(path) => {
            let path = base.join(path);
            if let Err(e) = std::fs::metadata(&path).and_then(|m| {
                if m.is_file() {
                    Ok(())
                } else {
                    Err(std::io::Error::other("it is not a file"))
                }
            }) {
                return Err(EdgeError::WasmUnreadable {
                    service: name.to_owned(),
                    path,
                    reason: e.to_string(),
                });
            }
            (path, None)
        }
    };
    let manifest_path = service
        .fastly_toml
        .as_ref()
        .map(|p| base.join(p))
        .or(default_manifest);
    let manifest = manifest_path
        .map(|path| crate::manifest::Manifest::read(name, &path))
        .transpose()?;
    Ok(ResolvedService {
        name: name.to_owned(),
        wasm,
        manifest,
        guest_timeout: service.guest_timeout,
        max_log_bytes: service.max_log_bytes,
        http_cache_shim: if service.http_cache {
            Some(guest_build::http_cache_shim_wasm()?)
        } else {
            None
        },
    })
}

/// `name` as registered, for a run against its deployment: nothing is built or read, since
/// no guest runs here. Errors as [`resolve`] does for a name no `register_service!` declares.
pub(crate) fn resolve_deployed(name: &str) -> Result<Arc<ResolvedService>, EdgeError> {
    let service = (find_registration(name)?.define)();
    Ok(Arc::new(ResolvedService {
        name: name.to_owned(),
        wasm: PathBuf::new(),
        manifest: None,
        guest_timeout: service.guest_timeout,
        max_log_bytes: service.max_log_bytes,
        http_cache_shim: None,
    }))
}

fn find_registration(name: &str) -> Result<&'static ServiceRegistration, EdgeError> {
    let mut matching = inventory::iter::<ServiceRegistration>
        .into_iter()
        .filter(|r| r.name == name);
    match (matching.next(), matching.next()) {
        (Some(found), None) => Ok(found),
        (Some(_), Some(_)) => Err(EdgeError::DuplicateService {
            name: name.to_owned(),
        }),
        (None, _) => {
            let mut registered: Vec<String> = inventory::iter::<ServiceRegistration>
                .into_iter()
                .map(|r| r.name.to_owned())
                .collect();
            registered.sort();
            registered.dedup();
            Err(EdgeError::UnknownService {
                name: name.to_owned(),
                registered,
            })
        }
    }
}
