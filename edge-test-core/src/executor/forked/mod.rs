//! Compile once, fork a pristine guest per test.
//!
//! viceroy-lib cannot share a compiled module between contexts nor reset one, so a context
//! cannot be both compiled once and pristine for every test. A forked process can: the
//! host compiles each configuration once into a template, and every test gets a worker
//! forked from it, whose copy-on-write memory is the template's untouched cache and stores.
//!
//! The host is the test binary itself, re-executed with `EDGE_TEST_HOST_SOCKET` set: a
//! constructor in `.init_array` runs it before libtest's `main`. One host serves every test
//! process of a binary (so cargo nextest's processes share its templates), listens in a
//! directory only this user can open, and exits when idle.

mod backend_proxy;
mod fork;
mod host;
mod huge_code;
mod protocol;
mod report_wire;
mod socket_dir;
mod stdio_capture;
mod worker;
mod worker_link;

use std::io::ErrorKind;
use std::ops::ControlFlow;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{InvocationReport, InvocationRequest, SessionSpec, TEMPLATE_COMPILE_LIMIT};
use crate::error::EdgeError;
use crate::sync::poll_until;
use protocol::{Accepted, Hello, Welcome};
use worker_link::WorkerLink;

/// Set in the host's environment: where it listens.
const HOST_SOCKET_ENV: &str = "EDGE_TEST_HOST_SOCKET";
/// `EDGE_TEST_HOST=off` runs every test in process, compiling per test.
const HOST_SWITCH_ENV: &str = "EDGE_TEST_HOST";

// SAFETY: `.init_array` holds plain function pointers that the loader calls before main,
// and this one is an `extern "C" fn()` taking nothing, as the loader expects.
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static RUN_AS_HOST_WHEN_ASKED: extern "C" fn() = run_as_host_when_asked;

extern "C" fn run_as_host_when_asked() {
    if let Some(socket) = std::env::var_os(HOST_SOCKET_ENV) {
        host::run(socket.into());
    }
}

/// Names the calling thread (15 bytes at most). A process's main thread's name is what `ps`
/// and `top` show, so a user looking at a machine full of test binaries can tell the host
/// and its workers apart.
fn name_this_process(name: &std::ffi::CStr) {
    // Only a name for people looking at the machine: best effort.
    let _ = rustix::thread::set_name(name);
}

/// Whether tests should use the host (the default on Linux).
pub(crate) fn enabled() -> bool {
    // Referenced here so that the constructor is linked into every binary that runs tests.
    std::hint::black_box(&RUN_AS_HOST_WHEN_ASKED);
    !matches!(
        std::env::var(HOST_SWITCH_ENV).as_deref(),
        Ok("off" | "0" | "false")
    )
}

/// A test's connection to its forked worker.
pub(crate) struct ForkedSession {
    // Never contended (the edge runs one request at a time), but held across an await, so
    // it must not make the test's future !Send.
    link: tokio::sync::Mutex<WorkerLink>,
    worker_pid: u32,
    template_id: u64,
}

/// Why a forked session could not start.
pub(crate) enum StartError {
    /// The service itself is at fault: reported to the test.
    Service(EdgeError),
    /// The host could not be reached or started; the test may run in process instead.
    /// `permanent`: trying again in this process would fail the same way (a squatted
    /// directory, a full disk), so it should not.
    Host { reason: String, permanent: bool },
}

impl StartError {
    fn transient(reason: impl Into<String>) -> Self {
        StartError::Host {
            reason: reason.into(),
            permanent: false,
        }
    }

    fn permanent(reason: impl Into<String>) -> Self {
        StartError::Host {
            reason: reason.into(),
            permanent: true,
        }
    }
}

/// How long a host may take to acknowledge a Hello before it is taken for stuck and
/// replaced: it answers from a thread of its own before any compile, so only a stopped,
/// frozen or wedged host misses this (`EDGE_TEST_HOST_ANSWER_MS` shortens it for tests).
const DEFAULT_HOST_ANSWER: Duration = Duration::from_secs(20);
/// How long a test process waits for another one that is starting the host, in answer
/// limits: starting a host is spawning it and waiting for it to listen, nothing more.
const START_LOCK_ANSWERS: u32 = 3;
/// How long a new host may take to listen.
const HOST_LISTEN_LIMIT: Duration = Duration::from_secs(30);

fn host_answer_limit() -> Duration {
    std::env::var("EDGE_TEST_HOST_ANSWER_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(DEFAULT_HOST_ANSWER, Duration::from_millis)
}

impl ForkedSession {
    pub(crate) fn start(spec: SessionSpec) -> Result<Self, StartError> {
        // A host that was just killed can still hold its socket for a moment (its threads
        // exit one by one) and then drop the connection; a stuck one is replaced: try again,
        // and start a new one.
        let mut attempts = 0;
        loop {
            match Self::handshake(spec.clone()) {
                Err(StartError::Host {
                    permanent: false, ..
                }) if attempts < 3 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50 * attempts));
                }
                result => return result,
            }
        }
    }

    fn handshake(spec: SessionSpec) -> Result<Self, StartError> {
        let service = spec.service.clone();
        let answer = host_answer_limit();
        let (mut stream, paths) = connect_or_start_host(answer)?;
        let io = |what: &str, e: std::io::Error| {
            StartError::transient(format!("{what} the edge-test host: {e}"))
        };
        stream
            .set_write_timeout(Some(answer))
            .map_err(|e| io("configuring the socket to", e))?;
        protocol::send(
            &mut stream,
            &Hello {
                build_id: socket_dir::build_id(),
                spec,
                client_pid: std::process::id(),
            },
        )
        .map_err(|e| io("sending the session to", e))?;

        stream
            .set_read_timeout(Some(answer))
            .map_err(|e| io("configuring the socket to", e))?;
        match protocol::receive::<Accepted>(&mut stream, 1024) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(StartError::transient("the edge-test host hung up")),
            Err(e) if is_timeout(&e) => {
                let host = replace_stuck_host(&paths);
                let reason = format!(
                    "the edge-test host ({host}) did not answer within {answer:?}: it is stuck \
                     (stopped or frozen); it was stopped and a new one is started"
                );
                super::warn(&reason);
                return Err(StartError::transient(reason));
            }
            Err(e) => return Err(io("reading from", e)),
        }

        stream
            .set_read_timeout(Some(TEMPLATE_COMPILE_LIMIT))
            .map_err(|e| io("configuring the socket to", e))?;
        let (worker_pid, template_id) =
            match protocol::receive::<Welcome>(&mut stream, protocol::MAX_MESSAGE) {
                Ok(Some(Welcome::Ready {
                    worker_pid,
                    template_id,
                })) => (worker_pid, template_id),
                Ok(Some(Welcome::Refused(refusal))) => {
                    return Err(StartError::Service(refusal.into_error()));
                }
                Ok(None) => return Err(StartError::transient("the edge-test host hung up")),
                Err(e) if is_timeout(&e) => {
                    return Err(StartError::Service(EdgeError::Host {
                        reason: format!(
                            "the edge-test host did not have service `{service}` compiled and \
                             a worker forked within {TEMPLATE_COMPILE_LIMIT:?}; its log is {}",
                            paths.log.display()
                        ),
                    }));
                }
                Err(e) => return Err(io("reading from", e)),
            };
        let link =
            WorkerLink::new(stream, worker_pid).map_err(|e| io("configuring the socket to", e))?;
        Ok(Self {
            link: tokio::sync::Mutex::new(link),
            worker_pid,
            template_id,
        })
    }

    /// Awaited on tokio, the report is awaited there; awaited on another executor, there is
    /// no runtime to wait on, and the caller's thread waits instead, as a blocking send would.
    pub(crate) async fn run(&self, request: InvocationRequest) -> InvocationReport {
        let mut link = self.link.lock().await;
        if on_tokio() {
            link.exchange_async(request).await
        } else {
            link.exchange_blocking(request)
        }
    }

    pub(crate) fn run_blocking(&self, request: InvocationRequest) -> InvocationReport {
        self.link.blocking_lock().exchange_blocking(request)
    }

    /// The report of a request its test stopped awaiting, once the guest finished it.
    pub(crate) async fn settle(&self) -> Option<InvocationReport> {
        let mut link = self.link.lock().await;
        if on_tokio() {
            link.settle_async().await
        } else {
            link.settle_blocking()
        }
    }

    pub(crate) fn settle_blocking(&self) -> Option<InvocationReport> {
        self.link.blocking_lock().settle_blocking()
    }

    pub(crate) fn worker_pid(&self) -> u32 {
        self.worker_pid
    }

    pub(crate) fn template_id(&self) -> u64 {
        self.template_id
    }
}

fn on_tokio() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Stops a host that accepted a connection but does not answer, so that the next attempt
/// starts a fresh one. Returns how to name it. Only a process of this user that names
/// itself an edge-test host is signalled: a pid file can outlive its process, and its
/// number be reused.
fn replace_stuck_host(paths: &socket_dir::HostPaths) -> String {
    let pid = std::fs::read_to_string(paths.socket.with_extension("pid"))
        .ok()
        .and_then(|pid| pid.trim().parse::<i32>().ok());
    let Some(pid) = pid else {
        let _ = std::fs::remove_file(&paths.socket);
        return "pid unknown".to_owned();
    };
    let ours = is_edge_test_host(pid);
    if let Some(stuck) = rustix::process::Pid::from_raw(pid).filter(|_| ours) {
        let _ = rustix::process::kill_process(stuck, rustix::process::Signal::KILL);
    }
    // Whether or not it could be stopped, the next host listens at a fresh socket.
    let _ = std::fs::remove_file(&paths.socket);
    format!("pid {pid}")
}

/// Whether process `pid` is one of this user's edge-test hosts: the name its main thread
/// gives itself (`name_this_process`), and its owner.
fn is_edge_test_host(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let named = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|name| name.trim_end() == "edge-test host");
    let owned = std::fs::metadata(format!("/proc/{pid}"))
        .is_ok_and(|meta| meta.uid() == rustix::process::getuid().as_raw());
    named && owned
}

/// Connects to this build's host, starting one if none is listening (a killed host
/// is replaced the same way).
fn connect_or_start_host(
    answer: Duration,
) -> Result<(UnixStream, socket_dir::HostPaths), StartError> {
    let paths = socket_dir::host_paths().map_err(StartError::permanent)?;
    if let Ok(stream) = UnixStream::connect(&paths.socket) {
        return Ok((stream, paths));
    }
    let lock = std::fs::File::create(&paths.start_lock)
        .map_err(|e| StartError::permanent(socket_dir::cannot("create", &paths.start_lock, &e)))?;
    lock_within(&lock, &paths.start_lock, answer * START_LOCK_ANSWERS)?;
    // Another test process may have started it while we waited for the lock.
    if let Ok(stream) = UnixStream::connect(&paths.socket) {
        return Ok((stream, paths));
    }
    let _ = std::fs::remove_file(&paths.socket);
    socket_dir::remove_stale_logs(&paths);
    let log = socket_dir::new_host_log(&paths, &paths.exe).map_err(StartError::permanent)?;
    let log_err = log
        .try_clone()
        .map_err(|e| StartError::transient(format!("cannot share the host's log: {e}")))?;
    let mut command = Command::new(&paths.exe);
    // The host serves every test binary of this build: it must not depend on what the
    // first one had (a test's manifest reaches it with absolute paths and resolved
    // variables, `Manifest::read`). The root as its directory, and only the variables a
    // process needs and edge-test's own settings.
    command
        .current_dir("/")
        .env_clear()
        .envs(std::env::vars_os().filter(|(name, _)| {
            name.to_str().is_some_and(|name| {
                name.starts_with("EDGE_TEST_")
                    || [
                        "PATH",
                        "HOME",
                        "TMPDIR",
                        "XDG_RUNTIME_DIR",
                        "LANG",
                        "RUST_BACKTRACE",
                    ]
                    .contains(&name)
            })
        }));
    command
        .env(HOST_SOCKET_ENV, &paths.socket)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // Its own session: the host outlives the test process that started it, and a runner
    // that kills the test's process group (or waits on its pipes) does not see it.
    // SAFETY: the closure runs in the child between fork and exec and only calls setsid,
    // which is async-signal-safe and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            let _ = rustix::process::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| StartError::transient(format!("cannot start the edge-test host: {e}")))?;
    let listening = poll_until(HOST_LISTEN_LIMIT, Duration::from_millis(5), || {
        if let Ok(stream) = UnixStream::connect(&paths.socket) {
            return ControlFlow::Break(Ok(stream));
        }
        match child.try_wait() {
            Ok(Some(status)) => ControlFlow::Break(Err(status)),
            _ => ControlFlow::Continue(()),
        }
    });
    match listening {
        Some(Ok(stream)) => {
            // Reap it when it exits, should this process still be alive then.
            std::thread::spawn(move || child.wait());
            Ok((stream, paths))
        }
        Some(Err(status)) => {
            let log = std::fs::read_to_string(&paths.log).unwrap_or_default();
            Err(StartError::permanent(format!(
                "the edge-test host exited at start ({status}): {}",
                log.trim_end()
            )))
        }
        None => {
            let _ = child.kill();
            Err(StartError::transient(format!(
                "the edge-test host did not start listening within {HOST_LISTEN_LIMIT:?}"
            )))
        }
    }
}

/// Takes the host start lock, waiting at most `limit` for a test process that holds it.
fn lock_within(
    lock: &std::fs::File,
    path: &std::path::Path,
    limit: Duration,
) -> Result<(), StartError> {
    let taken = poll_until(limit, Duration::from_millis(20), || match lock.try_lock() {
        Ok(()) => ControlFlow::Break(Ok(())),
        Err(std::fs::TryLockError::WouldBlock) => ControlFlow::Continue(()),
        Err(std::fs::TryLockError::Error(e)) => ControlFlow::Break(Err(e)),
    });
    match taken {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(StartError::permanent(socket_dir::cannot("lock", path, &e))),
        None => Err(StartError::transient(format!(
            "another test process has held {} for {limit:?} while starting the edge-test \
             host (stopped or stuck?)",
            path.display()
        ))),
    }
}
