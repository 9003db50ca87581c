//! A local process as a backend: a program the test binary starts on a free loopback port,
//! waits for, and routes a backend to ([`Edge::route_process`](crate::Edge::route_process)).
//!
//! A shared process is one per declaration for every test process of the user at once
//! (cargo nextest's included): a supervisor (`supervisor`) owns it and stops it once no
//! test process has held its lease for a second. An [`isolated`](Process::isolated) one
//! belongs to one test and stops with its edge. Every process is started from one
//! long-lived thread with `PR_SET_PDEATHSIG`, so it dies with whoever started it (the
//! supervisor, or the test process for an isolated one) however that ends, a kill included:
//! the kernel delivers the signal when the thread that started it goes, and that thread
//! lives as long as its process.
//!
//! Its stdout and stderr are kept (the last [`KEPT_LINES`] lines), shown when it fails to
//! start, when it dies under a request, and in the output of a failing test that used it.

mod supervisor;

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How many lines of a process's output are kept.
pub const KEPT_LINES: usize = 200;

/// How a process says it is ready to serve.
#[derive(Debug, Clone)]
enum Readiness {
    /// Its port accepts a TCP connection.
    Listening,
    /// `GET <path>` on its port answers 2xx.
    HttpOk(String),
    /// A line of its stdout or stderr contains this text.
    Output(String),
}

/// A program to run as a backend, declared once (a `static` or a function) and routed to by
/// any test: `edge.route_process("origin", &api())`.
///
/// ```no_run
/// use std::time::Duration;
/// use edge_test_core::Process;
///
/// fn api() -> Process {
///     Process::new("api", "target/debug/api-server")
///         .arg("--port={port}")                  // or told by $PORT, always set
///         .env("RUST_LOG", "info")
///         .ready_when_http_ok("/health")
///         .start_timeout(Duration::from_secs(20))
/// }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a Process does nothing until a test routes a backend to it"]
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    current_dir: Option<PathBuf>,
    port: Option<u16>,
    ready: Readiness,
    start_timeout: Duration,
    isolated: bool,
}

impl Process {
    /// `program`, called `name` in messages. It learns its port from `$PORT` and from
    /// `{port}` in its arguments; it is ready once the port accepts a connection.
    pub fn new(name: &str, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
            port: None,
            ready: Readiness::Listening,
            start_timeout: Duration::from_secs(10),
            isolated: false,
        }
    }

    /// An argument; `{port}` in it becomes the process's port.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// An environment variable; `{port}` in its value becomes the process's port.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The directory it runs in (default: the test's).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// A fixed port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Ready once `GET path` on its port answers 2xx.
    pub fn ready_when_http_ok(mut self, path: impl Into<String>) -> Self {
        self.ready = Readiness::HttpOk(path.into());
        self
    }

    /// Ready once a line of its output contains `text`.
    pub fn ready_when_output_contains(mut self, text: impl Into<String>) -> Self {
        self.ready = Readiness::Output(text.into());
        self
    }

    /// How long it may take to become ready (default 10 s).
    pub fn start_timeout(mut self, limit: Duration) -> Self {
        self.start_timeout = limit;
        self
    }

    /// One process for this test alone, stopped when the test's edge goes (instead of one
    /// shared by every test of the test process that routes to the same declaration).
    pub fn isolated(mut self) -> Self {
        self.isolated = true;
        self
    }

    /// What makes two declarations one shared process: everything but `isolated`.
    fn key(&self) -> String {
        format!(
            "{}\0{}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}",
            self.name,
            self.program.display(),
            self.args,
            self.env,
            self.current_dir,
            self.port,
            self.ready,
            self.start_timeout
        )
    }

    fn command_line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A process serving a backend: what a test can read of it.
#[derive(Clone)]
pub struct ProcessHandle {
    running: Arc<Running>,
}

impl ProcessHandle {
    pub fn pid(&self) -> u32 {
        self.running.pid
    }

    pub fn port(&self) -> u16 {
        self.running.addr.port()
    }

    /// What it printed so far (the last [`KEPT_LINES`] lines, stdout and stderr interleaved).
    pub fn output(&self) -> Vec<String> {
        self.running.lines()
    }

    pub(crate) fn running(&self) -> Arc<Running> {
        self.running.clone()
    }
}

pub(crate) struct Running {
    pub name: String,
    pub pid: u32,
    pub addr: SocketAddr,
    owner: Owner,
    isolated: bool,
}

/// Who runs the process, and so where its exit and its output are read.
enum Owner {
    /// This process: its child, and the lines its two readers keep.
    Here {
        child: Mutex<Child>,
        output: Arc<Mutex<VecDeque<String>>>,
        /// How many of the readers still read (they end when it closes its pipes).
        readers: Arc<std::sync::atomic::AtomicUsize>,
    },
    /// A supervisor, which writes its state and its output into this directory.
    Supervised(PathBuf),
}

impl Running {
    /// How it ended, if it has; once it has, its last lines are all kept (its readers are
    /// given a second to reach the end of its pipes).
    pub(crate) fn exit(&self) -> Option<String> {
        match &self.owner {
            Owner::Here { child, readers, .. } => {
                let status = crate::sync::lock(child).try_wait().ok().flatten()?;
                let deadline = Instant::now() + Duration::from_secs(1);
                while readers.load(std::sync::atomic::Ordering::SeqCst) > 0
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Some(describe(status))
            }
            Owner::Supervised(dir) => supervisor::exit_of(dir, self.pid),
        }
    }

    /// Every kept line of its output.
    pub(crate) fn lines(&self) -> Vec<String> {
        match &self.owner {
            Owner::Here { output, .. } => crate::sync::lock(output).iter().cloned().collect(),
            Owner::Supervised(dir) => supervisor::output_of(dir),
        }
    }

    /// Its last `n` lines, indented, for a failure message.
    pub(crate) fn last_output(&self, n: usize) -> String {
        let lines = self.lines();
        if lines.is_empty() {
            return "    (no output)".to_owned();
        }
        let skip = lines.len().saturating_sub(n);
        lines
            .iter()
            .skip(skip)
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Who it is, for messages: `process backend `name` (pid N)`.
    pub(crate) fn describe(&self) -> String {
        format!("process backend `{}` (pid {})", self.name, self.pid)
    }

    /// Stops it, if this process runs it (isolated processes, when their edge goes).
    pub(crate) fn stop(&self) {
        if let Owner::Here { child, .. } = &self.owner {
            let mut child = crate::sync::lock(child);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn is_isolated(&self) -> bool {
        self.isolated
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended ({status})"),
    }
}

/// The process for `process`: a new isolated one, or the shared one (started by a
/// supervisor if no test process runs it), once it is ready. `Err` names the process, what
/// went wrong, and its last output.
pub(crate) fn start(process: &Process) -> Result<ProcessHandle, String> {
    static SHARED: OnceLock<Mutex<HashMap<String, Arc<Running>>>> = OnceLock::new();
    if process.isolated {
        return launch(process, None).map(|running| ProcessHandle { running });
    }
    // Tests of this process racing to the same declaration wait for the first one.
    let mut shared = crate::sync::lock(SHARED.get_or_init(Default::default));
    let key = process.key();
    if let Some(running) = shared.get(&key) {
        if running.exit().is_none() {
            return Ok(ProcessHandle {
                running: running.clone(),
            });
        }
        // It ended (a crash in an earlier test): started again for this one.
        shared.remove(&key);
    }
    let running = Arc::new(supervisor::start_shared(process)?);
    shared.insert(key, running.clone());
    Ok(ProcessHandle { running })
}

/// Starts `process` here and waits until it is ready; its output lines also go to `log`.
fn launch(process: &Process, log: Option<std::fs::File>) -> Result<Arc<Running>, String> {
    let port = match process.port {
        Some(port) => port,
        None => free_port().map_err(|e| format!("cannot find a free loopback port: {e}"))?,
    };
    let with_port = |text: &str| text.replace("{port}", &port.to_string());
    let mut command = Command::new(&process.program);
    command
        .args(process.args.iter().map(|a| with_port(a)))
        .env("PORT", port.to_string())
        .envs(process.env.iter().map(|(k, v)| (k, with_port(v))))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &process.current_dir {
        command.current_dir(dir);
    }
    let mut child = spawn(command).map_err(|e| {
        format!(
            "process backend `{}` (`{}`) could not start: {e}",
            process.name,
            process.command_line()
        )
    })?;
    let output = Arc::new(Mutex::new(VecDeque::new()));
    let readers = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let log = log.map(|file| Arc::new(Mutex::new(file)));
    let (seen_tx, seen_rx) = mpsc::channel::<String>();
    if let Some(stdout) = child.stdout.take() {
        let kept = (output.clone(), readers.clone(), log.clone());
        keep_lines(stdout, kept, seen_tx.clone());
    }
    if let Some(stderr) = child.stderr.take() {
        keep_lines(stderr, (output.clone(), readers.clone(), log), seen_tx);
    }
    let running = Arc::new(Running {
        name: process.name.clone(),
        pid: child.id(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        owner: Owner::Here {
            child: Mutex::new(child),
            output,
            readers,
        },
        isolated: process.isolated,
    });
    wait_until_ready(process, &running, &seen_rx)?;
    Ok(running)
}

/// Polls the readiness check until it passes, the process ends, or the start time-out.
fn wait_until_ready(
    process: &Process,
    running: &Running,
    seen: &mpsc::Receiver<String>,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Some(exit) = running.exit() {
            return Err(format!(
                "{} (`{}`) {exit} before it was ready; its last output:\n{}",
                running.describe(),
                process.command_line(),
                running.last_output(20)
            ));
        }
        let ready = match &process.ready {
            Readiness::Listening => TcpStream::connect(running.addr).is_ok(),
            Readiness::HttpOk(path) => http_ok(running.addr, path),
            Readiness::Output(text) => seen.try_iter().any(|line| line.contains(text.as_str())),
        };
        if ready {
            return Ok(());
        }
        if started.elapsed() > process.start_timeout {
            running.stop();
            let waited_for = match &process.ready {
                Readiness::Listening => {
                    format!("port {} to accept a connection", running.addr.port())
                }
                Readiness::HttpOk(path) => format!("GET {path} to answer 2xx"),
                Readiness::Output(text) => format!("a line of output containing {text:?}"),
            };
            return Err(format!(
                "{} (`{}`) was not ready within {:?}: it waited for {waited_for}, and stopped \
                 it; its last output:\n{}",
                running.describe(),
                process.command_line(),
                process.start_timeout,
                running.last_output(20)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_ok(addr: SocketAddr, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && head[9] == b'2'
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where a reader keeps lines: the last [`KEPT_LINES`], its count of readers, and a log file.
type Kept = (
    Arc<Mutex<VecDeque<String>>>,
    Arc<std::sync::atomic::AtomicUsize>,
    Option<Arc<Mutex<std::fs::File>>>,
);

/// Keeps each line `from` writes, and tells `seen` of it.
fn keep_lines(from: impl std::io::Read + Send + 'static, kept: Kept, seen: mpsc::Sender<String>) {
    use std::io::Write;
    let (output, readers, log) = kept;
    readers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Some(log) = &log {
                let _ = writeln!(crate::sync::lock(log), "{line}");
            }
            let mut kept = crate::sync::lock(&output);
            if kept.len() == KEPT_LINES {
                kept.pop_front();
            }
            kept.push_back(line.clone());
            drop(kept);
            let _ = seen.send(line);
        }
        readers.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    });
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `command` from the one thread that starts every process, with
/// `PR_SET_PDEATHSIG`: the kernel kills the process when that thread ends, which is when the
/// test process ends, however it ends.
#[allow(unsafe_code)]
fn spawn(mut command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("edge-test procs".into())
            .spawn(move || {
                // The sender is a static: this loop, and the thread, last as long as the
                // test process.
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("a thread for starting process backends");
        Mutex::new(tx)
    });
    // SAFETY: runs in the child between fork and exec, where only async-signal-safe calls
    // are allowed: `prctl` is a single system call, with no allocation and no lock.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    crate::sync::lock(spawner)
        .send((command, reply_tx))
        .map_err(|_| std::io::Error::other("the process starter thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the process starter thread is gone"))?
}
