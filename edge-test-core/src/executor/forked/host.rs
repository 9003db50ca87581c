//! The host: compiles each configuration once, then forks a worker per test from it.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::backend_proxy::{self, Routes};
use super::fork::{self, Forked};
use super::protocol::{self, Accepted, Hello, Welcome};
use super::worker;
use crate::error::EdgeError;
use crate::executor::SessionSpec;
use crate::executor::guest::CompiledGuest;

/// How many templates the host keeps (`EDGE_TEST_HOST_MAX_TEMPLATES`): the least recently
/// used goes first once there are more.
const DEFAULT_MAX_TEMPLATES: usize = 16;

/// One compiled configuration of a service, and the proxies its backends point at (stopped
/// when the last worker forked from it is gone, after the host dropped it).
struct Template {
    guest: CompiledGuest,
    /// This host's pid and the template's number: unique across host restarts.
    id: u64,
    _proxies: Vec<backend_proxy::Proxy>,
}

/// What makes two sessions share a template: the module's content and everything compiled
/// into the context, never which test binary asked. Mock addresses are not part of it:
/// backends point at the host's proxies.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TemplateKey {
    wasm: u64,
    fastly_toml: Option<String>,
    backends: Vec<String>,
    kv_guest: Option<u64>,
    http_cache_shim: Option<u64>,
    capture_stdio: bool,
}

/// The templates, most recently used last, each compiled once (concurrent sessions wait for
/// the first): a cache bounded by `max`.
struct Templates {
    slots: Mutex<Vec<TemplateSlot>>,
    max: usize,
    /// Content hashes of the modules seen, by path and file identity: a module is hashed
    /// once, not per session.
    hashes: Mutex<std::collections::HashMap<FileIdentity, u64>>,
}

struct TemplateSlot {
    key: TemplateKey,
    wasm: PathBuf,
    compiled: Arc<std::sync::OnceLock<Result<Arc<Template>, EdgeError>>>,
}

/// A file as the file system names it: a changed file has another.
#[derive(Clone, PartialEq, Eq, Hash)]
struct FileIdentity {
    path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

struct Host {
    templates: Templates,
    /// The template each live worker was forked from: a template the cache dropped lives
    /// (its proxies serving) until its last worker exits.
    workers: Mutex<BTreeMap<u32, Arc<Template>>>,
    routes: Routes,
    live_workers: AtomicUsize,
    /// Tests being set up (a template may be compiling for them): not idle either.
    arriving: AtomicUsize,
    last_activity: Mutex<Instant>,
}

/// How long a client may take to send its Hello: the project's own tests send it at once.
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// Writes a line to the host's log. Never panics (as `eprintln!` does when the write
/// fails, on a full disk): the host runs before `main`, where a panic is an abort. Never
/// during a fork: std's stderr is one process-wide lock, and a worker forked while another
/// thread held it would hang at its first use of stderr (see `fork`).
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    fork::outside_forks(|| {
        let _ = writeln!(std::io::stderr(), "{line}");
    });
}

pub(super) fn run(socket: PathBuf) -> ! {
    // SAFETY: the host runs from a constructor, before main and before any other thread
    // exists, so nothing can be reading the environment concurrently. Not inherited by
    // anything the host starts.
    #[allow(unsafe_code)]
    unsafe {
        std::env::remove_var(super::HOST_SOCKET_ENV)
    };
    super::name_this_process(c"edge-test host");
    fork::map_large_allocations_alone();
    if super::huge_code::wanted()
        && let Err(why) = super::huge_code::move_code_to_huge_pages()
    {
        say(format_args!(
            "edge-test host: its code, or some of it, stays in the binary's mappings ({why}): \
             workers fault that in"
        ));
    }
    let _ = std::fs::remove_file(&socket);
    let listener = match UnixListener::bind(&socket) {
        Ok(listener) => listener,
        Err(e) => {
            say(format_args!(
                "edge-test host: cannot listen on {}: {e}",
                socket.display()
            ));
            std::process::exit(1);
        }
    };
    let _ = std::fs::write(socket.with_extension("pid"), std::process::id().to_string());
    // Nothing of the test process that started it: the host serves every test binary.
    let _ = std::env::set_current_dir("/");
    let host = Arc::new(Host {
        templates: Templates {
            slots: Mutex::new(Vec::new()),
            max: std::env::var("EDGE_TEST_HOST_MAX_TEMPLATES")
                .ok()
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_MAX_TEMPLATES),
            hashes: Mutex::new(Default::default()),
        },
        workers: Mutex::new(BTreeMap::new()),
        routes: Routes::default(),
        live_workers: AtomicUsize::new(0),
        arriving: AtomicUsize::new(0),
        last_activity: Mutex::new(Instant::now()),
    });
    spawn_reaper(host.clone());
    spawn_idle_exit(host.clone(), socket.clone());
    say(format_args!(
        "edge-test host {} listening on {}",
        std::process::id(),
        socket.display()
    ));
    crate::staying_threads::serve_forever(listener, move |stream| {
        *crate::sync::lock(&host.last_activity) = Instant::now();
        host.arriving.fetch_add(1, Ordering::SeqCst);
        // Left even if serving panics: a count never brought down would keep the host from
        // ever going idle.
        let _leave = Leave(&host);
        serve_test(&host, stream);
    })
}

/// A test's arrival, counted in `Host::arriving` from the accept until its thread ends.
struct Leave<'h>(&'h Host);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.arriving.fetch_sub(1, Ordering::SeqCst);
        *crate::sync::lock(&self.0.last_activity) = Instant::now();
    }
}

/// Runs `work`, a panic in it (a bug of edge-test's, in the module rewrite or below) turned
/// into an error for the test that asked, naming `what` panicked.
fn caught<T>(what: &str, work: impl FnOnce() -> Result<T, EdgeError>) -> Result<T, EdgeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        Err(EdgeError::Host {
            reason: format!(
                "{what} panicked, a bug in edge-test (please report it): {}",
                crate::mock::server::panic_message(&panic)
            ),
        })
    })
}

fn serve_test(host: &Host, mut stream: UnixStream) {
    // A client that sends nothing, or half a Hello, must not keep the host alive.
    if stream.set_read_timeout(Some(HELLO_DEADLINE)).is_err()
        || stream.set_write_timeout(Some(HELLO_DEADLINE)).is_err()
    {
        return;
    }
    let hello: Hello = match protocol::receive(&mut stream, protocol::MAX_HELLO) {
        Ok(Some(hello)) => hello,
        Ok(None) => return,
        Err(e) => {
            say(format_args!(
                "edge-test host: a client's Hello was refused: {e}"
            ));
            return;
        }
    };
    let accepted = Accepted {
        host_pid: std::process::id(),
    };
    // The worker inherits this socket: it must block on it again, without time limits.
    if protocol::send(&mut stream, &accepted).is_err()
        || stream.set_read_timeout(None).is_err()
        || stream.set_write_timeout(None).is_err()
    {
        return;
    }
    if let Err(error) = admit(&hello) {
        let _ = protocol::send(&mut stream, &Welcome::refused(&error));
        return;
    }
    let template = match template_for(host, &hello.spec) {
        Ok(template) => template,
        Err(error) => {
            let _ = protocol::send(&mut stream, &Welcome::refused(&error));
            return;
        }
    };
    let mocks = hello.spec.backend_addrs.clone();
    // Said before the fork: a test may kill this host as soon as its worker answers.
    say(format_args!(
        "edge-test host: a worker runs service `{}` for test {}",
        hello.spec.service, hello.spec.test
    ));
    // Routes are registered before the worker can send a single backend request: the
    // worker only runs a guest after it has said Ready.
    let guard = host.routes.lock();
    match fork::fork_worker(stream.as_fd()) {
        Ok(Forked::Child) => {
            // The child: only this thread exists now (see `fork`'s contract); the routes
            // lock it inherited is never used again.
            std::mem::forget(guard);
            worker::run(
                stream,
                template.guest.clone(),
                template.id,
                hello.client_pid,
            )
        }
        Err(e) => {
            drop(guard);
            let error = EdgeError::io("the edge-test host could not fork a worker", e);
            let _ = protocol::send(&mut stream, &Welcome::refused(&error));
        }
        Ok(Forked::Parent { child: pid }) => {
            say(format_args!(
                "edge-test host: worker {pid} started for test {}",
                hello.spec.test
            ));
            let mut routes = guard;
            routes.insert(pid, mocks);
            drop(routes);
            crate::sync::lock(&host.workers).insert(pid, template.clone());
            host.live_workers.fetch_add(1, Ordering::SeqCst);
            // The worker owns the connection now; the host's copy would only keep it open.
            drop(stream);
        }
    }
}

/// Checks a session before anything is read or compiled for it: the host serves only what
/// edge-test's own test processes send. Any process of this user can reach the socket, and
/// a hand-written Hello must not make the host read an arbitrary file (and quote it back)
/// or proxy to an arbitrary address outside the fence.
fn admit(hello: &Hello) -> Result<(), EdgeError> {
    let spec = &hello.spec;
    let own = super::socket_dir::build_id();
    if hello.build_id != own {
        return Err(EdgeError::Host {
            reason: format!(
                "this edge-test host runs edge-test build {own}, and the test was built \
                 against build {}; a host serves only its own build (each has its socket)",
                hello.build_id
            ),
        });
    }
    let refuse = |reason: String| EdgeError::GuestLoad {
        service: spec.service.clone(),
        wasm: spec.wasm.clone(),
        reason,
    };
    let is_text = spec.wasm.extension().is_some_and(|ext| ext == "wat");
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(&spec.wasm)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut magic));
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse("no such file".to_owned()));
        }
        Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
            return Err(refuse(format!("cannot read it: {e}")));
        }
        _ if !is_text && magic != *b"\0asm" => {
            return Err(refuse(
                "it is not a WebAssembly module (it does not start with the wasm magic bytes)"
                    .to_owned(),
            ));
        }
        _ => {}
    }
    if let Some((backend, addr)) = spec
        .backend_addrs
        .iter()
        .find(|(_, addr)| !addr.ip().is_loopback())
    {
        return Err(EdgeError::Host {
            reason: format!(
                "service `{}`: backend `{backend}` would be served at {addr}, which is not a \
             loopback address; mocks only ever listen on loopback",
                spec.service
            ),
        });
    }
    Ok(())
}

/// The template for a session's configuration: compiled by the first test that needs it,
/// waited for by concurrent ones, reused by every later one, from any test binary.
fn template_for(host: &Host, spec: &SessionSpec) -> Result<Arc<Template>, EdgeError> {
    let key = TemplateKey {
        wasm: host.templates.content_hash(&spec.wasm)?,
        fastly_toml: spec.fastly_toml.clone(),
        backends: spec.backend_addrs.keys().cloned().collect(),
        kv_guest: match &spec.kv_guest {
            Some(kv) => Some(host.templates.content_hash(kv)?),
            None => None,
        },
        http_cache_shim: match &spec.http_cache_shim {
            Some(shim) => Some(host.templates.content_hash(shim)?),
            None => None,
        },
        capture_stdio: spec.capture_stdio,
    };
    let compiled = host.templates.slot(key, &spec.wasm);
    let template =
        compiled.get_or_init(|| caught("compiling the template", || compile_template(host, spec)));
    if template.is_ok() {
        host.templates.evict_beyond_max();
    }
    template.clone()
}

impl Templates {
    /// The content hash of the module at `path`, computed once per version of the file.
    fn content_hash(&self, path: &std::path::Path) -> Result<u64, EdgeError> {
        use std::os::unix::fs::MetadataExt;
        let unreadable =
            |e: std::io::Error| EdgeError::io(format!("cannot read {}", path.display()), e);
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        let identity = FileIdentity {
            path: path.to_owned(),
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
        };
        if let Some(hash) = crate::sync::lock(&self.hashes).get(&identity) {
            return Ok(*hash);
        }
        let bytes = std::fs::read(path).map_err(unreadable)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&bytes, &mut hasher);
        let hash = std::hash::Hasher::finish(&hasher);
        let mut hashes = crate::sync::lock(&self.hashes);
        // Older versions of this file will not be asked for again.
        hashes.retain(|seen, _| seen.path != identity.path);
        hashes.insert(identity, hash);
        Ok(hash)
    }

    /// The slot for `key`, made most recently used. A template of another version of the
    /// same module file is dropped: the guest changed, and nothing will ask for it again.
    fn slot(
        &self,
        key: TemplateKey,
        wasm: &std::path::Path,
    ) -> Arc<std::sync::OnceLock<Result<Arc<Template>, EdgeError>>> {
        let mut slots = crate::sync::lock(&self.slots);
        let found = slots.iter().position(|slot| slot.key == key);
        let slot = match found {
            Some(at) => slots.remove(at),
            None => {
                let before = slots.len();
                slots.retain(|slot| slot.wasm != wasm || slot.key.wasm == key.wasm);
                if slots.len() < before {
                    say(format_args!(
                        "edge-test host: {} changed; dropped {} template(s) of its earlier \
                         version",
                        wasm.display(),
                        before - slots.len()
                    ));
                }
                TemplateSlot {
                    key,
                    wasm: wasm.to_owned(),
                    compiled: Arc::default(),
                }
            }
        };
        let compiled = slot.compiled.clone();
        slots.push(slot);
        compiled
    }

    /// Drops the least recently used compiled templates beyond `max` (never one still
    /// compiling), and says what the host holds.
    fn evict_beyond_max(&self) {
        let mut slots = crate::sync::lock(&self.slots);
        let mut dropped = 0;
        while slots.len() > self.max {
            let Some(oldest) = slots.iter().position(|slot| slot.compiled.get().is_some()) else {
                break;
            };
            slots.remove(oldest);
            dropped += 1;
        }
        if dropped > 0 {
            say(format_args!(
                "edge-test host: dropped {dropped} least recently used template(s); {} kept \
                 (EDGE_TEST_HOST_MAX_TEMPLATES={}), resident memory {}",
                slots.len(),
                self.max,
                resident_memory()
            ));
        }
    }
}

/// The host's resident memory, as the kernel reports it.
fn resident_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:").map(|rss| rss.trim().to_owned()))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn compile_template(host: &Host, spec: &SessionSpec) -> Result<Arc<Template>, EdgeError> {
    let mut proxies = Vec::new();
    let mut addrs = BTreeMap::new();
    for backend in spec.backend_addrs.keys() {
        let proxy = backend_proxy::serve(backend.clone(), host.routes.clone())?;
        addrs.insert(backend.clone(), proxy.addr);
        proxies.push(proxy);
    }
    let template_spec = SessionSpec {
        backend_addrs: addrs,
        ..spec.clone()
    };
    let guest =
        fork::outside_forks(|| with_lazy_timers(|| CompiledGuest::compile(&template_spec)))?;
    fork::give_back_free_memory();
    static COMPILED: AtomicU64 = AtomicU64::new(0);
    let number = COMPILED.fetch_add(1, Ordering::SeqCst) + 1;
    say(format_args!(
        "edge-test host: compiled template {number} for service `{}` ({}); resident memory {}",
        spec.service,
        spec.wasm.display(),
        resident_memory()
    ));
    Ok(Arc::new(Template {
        guest,
        id: (u64::from(std::process::id()) << 32) | number,
        _proxies: proxies,
    }))
}

/// Runs `compile` with this thread's timer slack at 100 ms, restored after.
///
/// viceroy starts a thread per context that advances wasmtime's epoch every 50 µs, forever,
/// and offers no way to stop it but dropping the context. A template's context is never
/// run (its workers tick their own epoch after the fork, which leaves that thread behind),
/// so in the host the thread only burns CPU: about a tenth of a core per template, idle.
/// Timer slack is inherited by the threads a thread starts: started with 100 ms of it, the
/// epoch thread wakes a few times a second instead of 20,000.
fn with_lazy_timers<T>(compile: impl FnOnce() -> T) -> T {
    const LAZY: std::num::NonZeroU64 = std::num::NonZeroU64::new(100_000_000).unwrap();
    // Best effort: without it the host only costs more CPU.
    let _ = rustix::thread::set_current_timer_slack(Some(LAZY));
    let compiled = compile();
    let _ = rustix::thread::set_current_timer_slack(None);
    compiled
}

/// Collects exited workers, so none is left a zombie and the idle clock knows.
fn spawn_reaper(host: Arc<Host>) {
    std::thread::spawn(move || {
        loop {
            let exited = rustix::process::waitpid(None, rustix::process::WaitOptions::empty());
            if let Ok(Some((pid, _))) = exited {
                let pid = pid.as_raw_nonzero().get() as u32;
                host.routes.lock().remove(&pid);
                crate::sync::lock(&host.workers).remove(&pid);
                host.live_workers.fetch_sub(1, Ordering::SeqCst);
                *crate::sync::lock(&host.last_activity) = Instant::now();
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
}

fn spawn_idle_exit(host: Arc<Host>, socket: PathBuf) {
    let idle = crate::executor::idle_limit();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(100).min(idle));
            let quiet = crate::sync::lock(&host.last_activity).elapsed();
            let busy =
                host.live_workers.load(Ordering::SeqCst) + host.arriving.load(Ordering::SeqCst);
            if busy == 0 && quiet >= idle {
                // The log only matters after a crash.
                for leftover in [
                    socket.clone(),
                    socket.with_extension("pid"),
                    socket.with_extension("log"),
                ] {
                    let _ = std::fs::remove_file(leftover);
                }
                std::process::exit(0);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    /// A worker forked while another thread of the host held std's stderr lock (writing to
    /// the log) would inherit it held by a thread it does not have, and hang at its first
    /// use of stderr: its stdio capture's flush, or a guest writing to stderr, and its test
    /// would fail at its time limit (as one did once, in CI). The fork waits for the write.
    #[test]
    fn no_worker_is_forked_while_another_thread_holds_stderr() {
        use std::io::{Read, Write};
        let (held, holding) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            fork::outside_forks(|| {
                let _stderr = std::io::stderr().lock();
                held.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(300));
            })
        });
        holding.recv().unwrap();
        let (ours, theirs) = UnixStream::pair().unwrap();
        match fork::fork_worker(theirs.as_fd()).unwrap() {
            Forked::Child => {
                drop(std::io::stderr().lock());
                let _ = (&theirs).write_all(b"k");
                fork::exit_now(0)
            }
            Forked::Parent { child } => {
                ours.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let mut answer = [0u8; 1];
                let read = (&ours).read(&mut answer);
                let pid = rustix::process::Pid::from_raw(child as i32).unwrap();
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
                assert!(
                    matches!(read, Ok(1)),
                    "the forked child could not take stderr: {read:?}"
                );
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn a_panicking_compile_is_an_error_naming_it() {
        let error = caught::<()>("compiling the template", || panic!("walrus lost a block"))
            .expect_err("a panic is an error");
        assert_eq!(
            error.to_string(),
            "edge-test: compiling the template panicked, a bug in edge-test (please report \
             it): walrus lost a block"
        );
    }

    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use super::*;

    fn hello(spec: SessionSpec) -> Hello {
        Hello {
            build_id: super::super::socket_dir::build_id(),
            spec,
            client_pid: std::process::id(),
        }
    }

    fn spec(wasm: PathBuf, backend: &str) -> SessionSpec {
        SessionSpec {
            service: "probe".into(),
            test: "admit::probe".into(),
            wasm,
            fastly_toml: None,
            backend_addrs: BTreeMap::from([(
                "api".to_owned(),
                backend.parse::<SocketAddr>().unwrap(),
            )]),
            kv_guest: None,
            http_cache_shim: None,
            capture_stdio: false,
        }
    }

    fn refusal(spec: &SessionSpec) -> String {
        admit(&hello(spec.clone()))
            .expect_err("refused")
            .to_string()
    }

    fn templates(max: usize) -> Templates {
        Templates {
            slots: Mutex::new(Vec::new()),
            max,
            hashes: Mutex::new(Default::default()),
        }
    }

    fn key(wasm: u64) -> TemplateKey {
        TemplateKey {
            wasm,
            fastly_toml: None,
            backends: Vec::new(),
            kv_guest: None,
            http_cache_shim: None,
            capture_stdio: false,
        }
    }

    /// Fills a slot as a compile would (an error stands in for a template: cheaper).
    fn compile(templates: &Templates, wasm: u64, path: &str) {
        let slot = templates.slot(key(wasm), std::path::Path::new(path));
        let _ = slot.get_or_init(|| {
            Err(EdgeError::Host {
                reason: format!("template {wasm}"),
            })
        });
        templates.evict_beyond_max();
    }

    fn kept(templates: &Templates) -> Vec<u64> {
        crate::sync::lock(&templates.slots)
            .iter()
            .map(|slot| slot.key.wasm)
            .collect()
    }

    #[test]
    fn the_least_recently_used_template_goes_first() {
        let templates = templates(2);
        compile(&templates, 1, "/a.wasm");
        compile(&templates, 2, "/b.wasm");
        compile(&templates, 1, "/a.wasm");
        compile(&templates, 3, "/c.wasm");
        assert_eq!(kept(&templates), [1, 3], "2 was used least recently");
    }

    #[test]
    fn a_changed_module_drops_the_templates_of_its_earlier_version() {
        let templates = templates(8);
        compile(&templates, 1, "/a.wasm");
        compile(&templates, 7, "/other.wasm");
        compile(&templates, 2, "/a.wasm");
        assert_eq!(kept(&templates), [7, 2]);
    }

    #[test]
    fn a_module_is_keyed_by_its_content_not_its_name() {
        let templates = templates(8);
        let dir = std::env::temp_dir().join(format!("edge-test-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.wasm"), dir.join("b.wasm"));
        std::fs::write(&a, b"same bytes").unwrap();
        std::fs::write(&b, b"same bytes").unwrap();
        let hash = templates.content_hash(&a).unwrap();
        assert_eq!(templates.content_hash(&b).unwrap(), hash);
        std::fs::write(&a, b"other bytes!").unwrap();
        assert_ne!(
            templates.content_hash(&a).unwrap(),
            hash,
            "a changed file is hashed again"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_test_of_another_build_of_edge_test_is_refused() {
        let wasm = PathBuf::from("/no/such/module.wasm");
        let mut other = hello(spec(wasm, "127.0.0.1:1"));
        other.build_id = "0.0.0-0000000000000000".into();
        let message = admit(&other).expect_err("refused").to_string();
        assert!(
            message.contains("the test was built against build 0.0.0-0000000000000000"),
            "{message}"
        );
    }

    #[test]
    fn a_file_that_is_not_wasm_is_refused_without_being_quoted() {
        let not_wasm = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let message = refusal(&spec(not_wasm, "127.0.0.1:1"));
        assert!(
            message.contains("it is not a WebAssembly module"),
            "{message}"
        );
        assert!(
            !message.contains("[package]"),
            "nothing of the file is echoed: {message}"
        );
    }

    #[test]
    fn a_missing_module_is_refused() {
        let message = refusal(&spec("/no/such/module.wasm".into(), "127.0.0.1:1"));
        assert!(message.contains("no such file"), "{message}");
    }

    #[test]
    fn a_backend_off_loopback_is_refused() {
        let wasm =
            std::env::temp_dir().join(format!("edge-test-admit-{}.wasm", std::process::id()));
        std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
        let message = refusal(&spec(wasm.clone(), "192.0.2.1:80"));
        assert!(
            message.contains(
                "backend `api` would be served at 192.0.2.1:80, which is not a loopback address"
            ),
            "{message}"
        );
        assert!(admit(&hello(spec(wasm.clone(), "127.0.0.1:9"))).is_ok());
        let _ = std::fs::remove_file(wasm);
    }
}
