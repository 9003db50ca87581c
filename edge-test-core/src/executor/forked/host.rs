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
use crate::sync::OnceMap;

/// A host with no worker and no new test for this long exits (and removes its socket).
const DEFAULT_IDLE: Duration = Duration::from_secs(10);

/// One compiled configuration of a service, and the proxies its backends point at.
struct Template {
    guest: CompiledGuest,
    /// This host's pid and the template's number: unique across host restarts.
    id: u64,
}

/// What makes two sessions share a template: the module and everything compiled into the
/// context. Mock addresses are not part of it: backends point at the host's proxies.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TemplateKey {
    wasm: PathBuf,
    wasm_len: u64,
    wasm_modified: Option<std::time::SystemTime>,
    fastly_toml: Option<String>,
    backends: Vec<String>,
    kv_guest: Option<PathBuf>,
}

struct Host {
    templates: OnceMap<TemplateKey, Result<Arc<Template>, EdgeError>>,
    routes: Routes,
    live_workers: AtomicUsize,
    /// Tests being set up (a template may be compiling for them): not idle either.
    arriving: AtomicUsize,
    last_activity: Mutex<Instant>,
}

/// How long a client may take to send its Hello: the project's own tests send it at once.
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// Writes a line to the host's log. Never panics (as `eprintln!` does when the write
/// fails, on a full disk): the host runs before `main`, where a panic is an abort.
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
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
    let host = Arc::new(Host {
        templates: OnceMap::new(),
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
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        *crate::sync::lock(&host.last_activity) = Instant::now();
        let host = host.clone();
        host.arriving.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            serve_test(&host, stream);
            host.arriving.fetch_sub(1, Ordering::SeqCst);
            *crate::sync::lock(&host.last_activity) = Instant::now();
        });
    }
    std::process::exit(0)
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
    if let Err(error) = admit(&hello.spec) {
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
                "edge-test host: worker {pid} runs service `{}` for test {}",
                hello.spec.service, hello.spec.test
            ));
            let mut routes = guard;
            routes.insert(pid, mocks);
            drop(routes);
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
fn admit(spec: &SessionSpec) -> Result<(), EdgeError> {
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
/// waited for by concurrent ones, reused by every later one.
fn template_for(host: &Host, spec: &SessionSpec) -> Result<Arc<Template>, EdgeError> {
    let meta = std::fs::metadata(&spec.wasm).ok();
    let key = TemplateKey {
        wasm: spec.wasm.clone(),
        wasm_len: meta.as_ref().map_or(0, |m| m.len()),
        wasm_modified: meta.and_then(|m| m.modified().ok()),
        fastly_toml: spec.fastly_toml.clone(),
        backends: spec.backend_addrs.keys().cloned().collect(),
        kv_guest: spec.kv_guest.clone(),
    };
    host.templates
        .get_or_init(key, || compile_template(host, spec))
}

fn compile_template(host: &Host, spec: &SessionSpec) -> Result<Arc<Template>, EdgeError> {
    let mut proxies = BTreeMap::new();
    for backend in spec.backend_addrs.keys() {
        proxies.insert(
            backend.clone(),
            backend_proxy::serve(backend.clone(), host.routes.clone())?,
        );
    }
    let template_spec = SessionSpec {
        backend_addrs: proxies,
        ..spec.clone()
    };
    let guest =
        fork::outside_forks(|| with_lazy_timers(|| CompiledGuest::compile(&template_spec)))?;
    fork::give_back_free_memory();
    static COMPILED: AtomicU64 = AtomicU64::new(0);
    let number = COMPILED.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(Arc::new(Template {
        guest,
        id: (u64::from(std::process::id()) << 32) | number,
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
                host.routes
                    .lock()
                    .remove(&(pid.as_raw_nonzero().get() as u32));
                host.live_workers.fetch_sub(1, Ordering::SeqCst);
                *crate::sync::lock(&host.last_activity) = Instant::now();
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    });
}

fn spawn_idle_exit(host: Arc<Host>, socket: PathBuf) {
    let idle = std::env::var("EDGE_TEST_HOST_IDLE_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_IDLE);
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
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use super::*;

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
        }
    }

    fn refusal(spec: &SessionSpec) -> String {
        admit(spec).expect_err("refused").to_string()
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
        assert!(admit(&spec(wasm.clone(), "127.0.0.1:9")).is_ok());
        let _ = std::fs::remove_file(wasm);
    }
}
