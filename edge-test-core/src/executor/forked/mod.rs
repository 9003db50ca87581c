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
mod host;
mod protocol;
mod socket_dir;
mod worker;
mod worker_link;

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::{InvocationReport, InvocationRequest, SessionSpec};
use crate::error::EdgeError;
use protocol::{Hello, Welcome};
use worker_link::{Waiting, WorkerLink};

/// Set in the host's environment: where it listens.
const HOST_SOCKET_ENV: &str = "EDGE_TEST_HOST_SOCKET";
/// `EDGE_TEST_HOST=off` runs every test in process, compiling per test.
const HOST_SWITCH_ENV: &str = "EDGE_TEST_HOST";

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
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
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

impl ForkedSession {
    /// `Err(Ok(e))`: the service itself is at fault (reported to the test). `Err(Err(e))`:
    /// the host could not be reached, and the caller may run the test in process instead.
    pub(crate) fn start(spec: SessionSpec) -> Result<Self, Result<EdgeError, EdgeError>> {
        // A host that was just killed can still hold its socket for a moment (its threads
        // exit one by one) and then drop the connection: try again, and start a new one.
        let mut attempts = 0;
        loop {
            match Self::handshake(spec.clone()) {
                Err(Err(_)) if attempts < 3 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50 * attempts));
                }
                result => return result,
            }
        }
    }

    fn handshake(spec: SessionSpec) -> Result<Self, Result<EdgeError, EdgeError>> {
        let mut stream = connect_or_start_host().map_err(Err)?;
        let io = |e: std::io::Error| {
            Err(EdgeError::Runtime(format!(
                "talking to the edge-test host: {e}"
            )))
        };
        protocol::send(
            &mut stream,
            &Hello {
                spec,
                client_pid: std::process::id(),
            },
        )
        .map_err(io)?;
        // Nothing follows the welcome until a request is sent, so this reader buffers no
        // more than the welcome.
        let mut reader = BufReader::new(stream.try_clone().map_err(io)?);
        let (worker_pid, template_id) =
            match protocol::receive::<Welcome>(&mut reader).map_err(io)? {
                Some(Welcome::Ready {
                    worker_pid,
                    template_id,
                }) => (worker_pid, template_id),
                Some(Welcome::Refused(error)) => return Err(Ok(error)),
                None => return Err(Err(EdgeError::Runtime("the edge-test host hung up".into()))),
            };
        Ok(Self {
            link: tokio::sync::Mutex::new(WorkerLink::new(stream, worker_pid).map_err(io)?),
            worker_pid,
            template_id,
        })
    }

    pub(crate) async fn run(&self, request: InvocationRequest) -> InvocationReport {
        // Awaited outside tokio (another executor), there is no runtime to wait on: the
        // caller's thread waits instead, as a blocking send would.
        let waiting = match tokio::runtime::Handle::try_current() {
            Ok(_) => Waiting::Async,
            Err(_) => Waiting::Blocking,
        };
        let mut link = self.link.lock().await;
        link.exchange(request, waiting).await
    }

    pub(crate) fn run_blocking(&self, request: InvocationRequest) -> InvocationReport {
        let mut link = self.link.blocking_lock();
        let exchange = std::pin::pin!(link.exchange(request, Waiting::Blocking));
        // A blocking exchange waits in poll(2), never on a waker: one poll finishes it.
        match exchange.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(report) => report,
            Poll::Pending => unreachable!("a blocking exchange never waits on a waker"),
        }
    }

    pub(crate) fn worker_pid(&self) -> u32 {
        self.worker_pid
    }

    pub(crate) fn template_id(&self) -> u64 {
        self.template_id
    }
}

/// Connects to this test binary's host, starting one if none is listening (a killed host
/// is replaced the same way).
fn connect_or_start_host() -> Result<UnixStream, EdgeError> {
    let paths = socket_dir::host_paths()?;
    if let Ok(stream) = UnixStream::connect(&paths.socket) {
        return Ok(stream);
    }
    let lock = std::fs::File::create(&paths.start_lock).map_err(|e| {
        EdgeError::Runtime(format!("cannot create {}: {e}", paths.start_lock.display()))
    })?;
    lock.lock().map_err(|e| {
        EdgeError::Runtime(format!("cannot lock {}: {e}", paths.start_lock.display()))
    })?;
    // Another test process may have started it while we waited for the lock.
    if let Ok(stream) = UnixStream::connect(&paths.socket) {
        return Ok(stream);
    }
    let _ = std::fs::remove_file(&paths.socket);
    socket_dir::remove_stale_logs(&paths);
    let exe = std::env::current_exe()
        .map_err(|e| EdgeError::Runtime(format!("cannot find the test binary: {e}")))?;
    let log = std::fs::File::create(&paths.log)
        .map_err(|e| EdgeError::Runtime(format!("cannot create {}: {e}", paths.log.display())))?;
    let log_err = log
        .try_clone()
        .map_err(|e| EdgeError::Runtime(e.to_string()))?;
    let mut command = Command::new(exe);
    command
        .env(HOST_SOCKET_ENV, &paths.socket)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // Its own session: the host outlives the test process that started it, and a runner
    // that kills the test's process group (or waits on its pipes) does not see it.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| EdgeError::Runtime(format!("cannot start the edge-test host: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = UnixStream::connect(&paths.socket) {
            // Reap it when it exits, should this process still be alive then.
            std::thread::spawn(move || child.wait());
            return Ok(stream);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&paths.log).unwrap_or_default();
            return Err(EdgeError::Runtime(format!(
                "the edge-test host exited at start ({status}): {log}"
            )));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(EdgeError::Runtime(
                "the edge-test host did not start listening within 30 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
