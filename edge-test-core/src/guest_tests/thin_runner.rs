//! The runner server: the other side of the thin `edge-test-runner`.
//!
//! nextest starts a runner process for every test, and a process of the whole runner
//! (viceroy-lib and wasmtime linked in, 58 MB) cost more to start, set up (a runtime and a
//! mock hub with threads of their own) and end than the test's own instance. So the runner
//! users name as cargo's target runner is a small program (`edge-test-runner/`, a workspace
//! of its own, without even the C library on Linux) that hands its call to this server:
//! one long-lived process of the whole runner, which runs each call in a thread, exactly as
//! the whole runner would (the caller's arguments, environment and working directory), and
//! sends back what it printed and its exit status. Its tests run like any others: a session
//! each with the shared host, which forks every test's instance from the compiled template.
//!
//! The server is not the host: the host forks workers, and a worker forked while another
//! thread of the host held a runtime's locks or its process-wide descriptors (tokio's signal
//! pipe) would inherit them broken. The server forks nothing, so it may run mock hubs on a
//! runtime of its own.
//!
//! What the server does not run in place (a whole suite under `cargo test`, where one
//! process runs many tests anyway), and any call when no server answers, the thin runner
//! hands to the whole runner (`edge-test-runner-host`, installed beside it) instead, which
//! starts a server at the socket name the thin runner gave it (`start_server_for`).
//!
//! The wire, which the thin runner writes with system calls alone:
//! - thin runner -> server: [`CALL_MAGIC`] (u32 LE), the payload's length (u32 LE), and the
//!   payload: the working directory, the number of arguments (u32 LE) and each argument,
//!   the number of environment entries (u32 LE) and each as `NAME=VALUE`; every string is
//!   its length (u32 LE) and its bytes.
//! - server -> thin runner: frames of a kind byte, a length (u32 LE) and that many bytes:
//!   [`ACCEPTED`] (12 bytes: how many milliseconds, u64 LE, the call may take in all, and
//!   the server's pid, u32 LE, which the thin runner watches for being stopped meanwhile), [`STDOUT`] and [`STDERR`] (bytes to write there), [`EXIT`] (one byte: the
//!   exit status; the last frame), or [`RUN_IT_YOURSELF`] (nothing; the last frame).

use std::collections::BTreeMap;
use std::io::{LineWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{CallEnv, Instance, Streams, Suite, args, is_passed_through, pass_through_call};

/// The first four bytes of a thin runner's call.
pub(crate) const CALL_MAGIC: u32 = 0xED6E_7E57;
pub(crate) const ACCEPTED: u8 = 1;
pub(crate) const STDOUT: u8 = 2;
pub(crate) const STDERR: u8 = 3;
pub(crate) const EXIT: u8 = 4;
pub(crate) const RUN_IT_YOURSELF: u8 = 5;

/// The largest call read: arguments and an environment, many times over.
const MAX_CALL: usize = 4 << 20;
/// How long the thin runner may take to send its call once connected (it sends it at once).
const CALL_DEADLINE: Duration = Duration::from_secs(5);
/// Set by the thin runner when it runs the whole runner: where the thin runner looks for a
/// server (the whole runner starts one there).
const SOCKET_ENV: &str = "EDGE_TEST_RUNNER_SOCKET";
/// Set in the server's environment: the socket it listens on.
const SERVE_ENV: &str = "EDGE_TEST_RUNNER_SERVE";

/// In the whole runner's `main`: when asked (`EDGE_TEST_RUNNER_SERVE`), this process is the
/// runner server, and never returns.
pub(crate) fn serve_if_asked() {
    if let Some(socket) = std::env::var_os(SERVE_ENV) {
        serve_forever(PathBuf::from(socket))
    }
}

/// In the whole runner's `main`, when a thin runner ran it (`EDGE_TEST_RUNNER_SOCKET`):
/// starts a server there unless one answers already, so that the thin runner's next call
/// (the next test's, under nextest) is served. Best effort: without a server, every call
/// runs the whole runner, slower and the same.
pub(crate) fn start_server_for_thin_runner() {
    let Some(socket) = std::env::var_os(SOCKET_ENV).map(PathBuf::from) else {
        return;
    };
    // Only a socket in edge-test's private directory, as the thin runner names it.
    let Ok(dir) = crate::private_dir::private_dir() else {
        return;
    };
    if socket.parent() != Some(dir.as_path()) || UnixStream::connect(&socket).is_ok() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let Ok(log) = std::fs::File::create(socket.with_extension("log")) else {
        return;
    };
    let Ok(log_err) = log.try_clone() else {
        return;
    };
    // Its own process group, in the root: it outlives the test process that started it,
    // and a runner that kills the test's group (or waits on its pipes) does not see it.
    let started = std::process::Command::new(exe)
        .env(SERVE_ENV, &socket)
        .env_remove(SOCKET_ENV)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn();
    if let Ok(mut child) = started {
        // Reaped if it exits while this process lives (it should not).
        std::thread::spawn(move || child.wait());
    }
}

/// Calls served now, and when the last one ended.
struct Activity {
    serving: AtomicUsize,
    last: Mutex<Instant>,
}

fn serve_forever(socket: PathBuf) -> ! {
    let _ = rustix::thread::set_name(c"edge-test runs");
    let listener = match bind(&socket) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "edge-test runner server: not serving {}: {e}",
                socket.display()
            );
            std::process::exit(0)
        }
    };
    eprintln!(
        "edge-test runner server {} listening on {}",
        std::process::id(),
        socket.display()
    );
    remove_stale_servers(&socket);
    let activity = Arc::new(Activity {
        serving: AtomicUsize::new(0),
        last: Mutex::new(Instant::now()),
    });
    exit_when_idle(activity.clone(), socket);
    crate::staying_threads::serve_forever(listener, move |stream| {
        activity.serving.fetch_add(1, Ordering::SeqCst);
        // A panic (a bug of edge-test's) ends this call, whose thin runner then sees it cut
        // short, not the count.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(stream)));
        *crate::sync::lock(&activity.last) = Instant::now();
        activity.serving.fetch_sub(1, Ordering::SeqCst);
    })
}

/// Listens at `socket`, unless another server answers there already; a socket left by one
/// that died is replaced.
fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    match UnixListener::bind(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(socket).is_ok() {
                return Err(std::io::Error::other("another server answers there"));
            }
            std::fs::remove_file(socket)?;
            UnixListener::bind(socket)
        }
        bound => bound,
    }
}

/// A server removes its socket and log when it exits idle; one that was killed leaves them.
/// Those a day old that no server answers go, so that the directory does not collect a pair
/// per killed server and per build of the runner.
fn remove_stale_servers(own: &Path) {
    const KEPT_FOR: Duration = Duration::from_secs(24 * 60 * 60);
    let Some(entries) = own.parent().and_then(|dir| std::fs::read_dir(dir).ok()) else {
        return;
    };
    for socket in entries.flatten().map(|entry| entry.path()) {
        let is_server = socket.extension().is_some_and(|ext| ext == "sock")
            && socket
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("runner-"));
        let old = std::fs::symlink_metadata(&socket)
            .and_then(|meta| meta.modified())
            .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age > KEPT_FOR));
        if is_server && old && socket != own && UnixStream::connect(&socket).is_err() {
            let _ = std::fs::remove_file(&socket);
            let _ = std::fs::remove_file(socket.with_extension("log"));
        }
    }
}

/// Exits once no call has come for the idle limit, removing its socket if it is still its
/// own (a server started after it may have replaced it).
fn exit_when_idle(activity: Arc<Activity>, socket: PathBuf) {
    // As the host's: the edit-run loop finds both still there.
    let idle = crate::executor::idle_limit();
    let own = std::fs::metadata(&socket).map(|meta| meta.ino()).ok();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep((idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)));
            let quiet = crate::sync::lock(&activity.last).elapsed();
            if activity.serving.load(Ordering::SeqCst) == 0 && quiet >= idle {
                if std::fs::metadata(&socket).map(|meta| meta.ino()).ok() == own {
                    let _ = std::fs::remove_file(&socket);
                    let _ = std::fs::remove_file(socket.with_extension("log"));
                }
                eprintln!("edge-test runner server: idle for {quiet:?}, exiting");
                std::process::exit(0);
            }
        }
    });
}

/// Serves one thin runner's call on `stream`.
fn serve(mut stream: UnixStream) {
    if stream.set_read_timeout(Some(CALL_DEADLINE)).is_err() {
        return;
    }
    let (args, env) = match read_call(&mut stream) {
        Ok(call) => call,
        Err(e) => {
            eprintln!("edge-test runner server: a call was refused: {e}");
            return;
        }
    };
    eprintln!("edge-test runner server: running `{}`", args.join(" "));
    let parsed = args::parse(&args);
    if parsed
        .as_ref()
        .is_ok_and(|args| !is_passed_through(&args.libtest))
    {
        let _ = send_frame(&stream, RUN_IT_YOURSELF, &[]);
        return;
    }
    let prepared = server_parts().and_then(|server| {
        let args = parsed?;
        let suite = Suite::new(&args, &env, Some(server))?;
        Ok((suite, args))
    });
    if let Ok((suite, _)) = &prepared {
        // The template may have to be compiled first; past that the test's own limit
        // bounds it. A thin runner that waits longer is facing a stuck server.
        let patience = crate::executor::TEMPLATE_COMPILE_LIMIT + suite.timeout * 2;
        let millis = u64::try_from(patience.as_millis()).unwrap_or(u64::MAX);
        let mut accepted = millis.to_le_bytes().to_vec();
        accepted.extend_from_slice(&std::process::id().to_le_bytes());
        if send_frame(&stream, ACCEPTED, &accepted).is_err() {
            return;
        }
    }
    let code = {
        // A frame a line, not a frame a write: `writeln!` writes a line in pieces. Lines
        // keep their order across the two streams, as they did in the runner's process.
        let mut streams = Streams {
            out: Box::new(LineWriter::new(Frames {
                stream: &stream,
                kind: STDOUT,
            })),
            err: Box::new(LineWriter::new(Frames {
                stream: &stream,
                kind: STDERR,
            })),
        };
        pass_through_call(&prepared, &mut streams)
    };
    // For whoever investigates a run: which calls this server ran, and how they ended.
    eprintln!(
        "edge-test runner server: ran `{}`: exit status {code}",
        args.join(" ")
    );
    let _ = send_frame(&stream, EXIT, &[code]);
    drop(stream);
    if let Ok((suite, _)) = &prepared {
        suite.lay_spare();
    }
}

/// What the server lends every suite it runs.
pub(crate) struct ServerParts {
    /// The runtime their mock hubs serve on: one for the server (a runtime per test would be
    /// a thread per test).
    pub mocks: tokio::runtime::Handle,
    pub spares: Spares,
}

fn server_parts() -> Result<&'static ServerParts, String> {
    static PARTS: OnceLock<Result<(tokio::runtime::Runtime, ServerParts), String>> =
        OnceLock::new();
    PARTS
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("edge-test mocks")
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the mock servers' runtime: {e}"))?;
            let parts = ServerParts {
                mocks: runtime.handle().clone(),
                spares: Spares(Mutex::new(Vec::new())),
            };
            Ok((runtime, parts))
        })
        .as_ref()
        .map(|(_, parts)| parts)
        .map_err(Clone::clone)
}

/// Instances forked ahead of the calls that will take them (`Suite::lay_spare`), each with
/// the key of the suite it serves. Two a suite, as many as nextest runs at once on a small
/// machine; a few in all, the oldest dropped (its worker exits with its connection).
pub(crate) struct Spares(Mutex<Vec<(Vec<u8>, Instance)>>);

impl Spares {
    const PER_SUITE: usize = 2;
    const IN_ALL: usize = 4;

    pub(super) fn take(&self, key: &[u8]) -> Option<Instance> {
        let mut spares = crate::sync::lock(&self.0);
        let found = spares.iter().position(|(of, _)| of == key)?;
        Some(spares.remove(found).1)
    }

    pub(super) fn wants(&self, key: &[u8]) -> bool {
        let spares = crate::sync::lock(&self.0);
        spares.iter().filter(|(of, _)| of == key).count() < Self::PER_SUITE
    }

    pub(super) fn keep(&self, key: Vec<u8>, spare: Instance) {
        let dropped = {
            let mut spares = crate::sync::lock(&self.0);
            spares.push((key, spare));
            (spares.len() > Self::IN_ALL).then(|| spares.remove(0))
        };
        // Outside the lock: dropping an instance waits for its hub to stop.
        drop(dropped);
    }
}

fn read_call(stream: &mut UnixStream) -> std::io::Result<(Vec<String>, CallEnv)> {
    let mut magic = [0; 4];
    stream.read_exact(&mut magic)?;
    if u32::from_le_bytes(magic) != CALL_MAGIC {
        return Err(invalid("not a thin runner's call".to_owned()));
    }
    let mut length = [0; 4];
    stream.read_exact(&mut length)?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_CALL {
        return Err(invalid(format!(
            "a call of {length} bytes is larger than the {MAX_CALL} accepted"
        )));
    }
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload)?;
    let mut fields = Fields(&payload);
    let cwd = PathBuf::from(fields.string()?);
    let args = (0..fields.count()?)
        .map(|_| fields.string())
        .collect::<Result<Vec<_>, _>>()?;
    let mut vars = BTreeMap::new();
    for _ in 0..fields.count()? {
        let entry = fields.string()?;
        if let Some((name, value)) = entry.split_once('=') {
            vars.insert(name.to_owned(), value.to_owned());
        }
    }
    Ok((args, CallEnv::new(vars, cwd)))
}

/// The payload of a call, read field by field.
struct Fields<'p>(&'p [u8]);

impl Fields<'_> {
    fn count(&mut self) -> std::io::Result<u32> {
        let Some((count, rest)) = self.0.split_first_chunk::<4>() else {
            return Err(invalid("a call ends inside a count".to_owned()));
        };
        self.0 = rest;
        Ok(u32::from_le_bytes(*count))
    }

    fn string(&mut self) -> std::io::Result<String> {
        let length = self.count()? as usize;
        if length > self.0.len() {
            return Err(invalid("a call ends inside a string".to_owned()));
        }
        let (bytes, rest) = self.0.split_at(length);
        self.0 = rest;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            invalid("a call holds an argument or variable that is not UTF-8".to_owned())
        })
    }
}

fn invalid(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

fn send_frame(mut stream: &UnixStream, kind: u8, bytes: &[u8]) -> std::io::Result<()> {
    let length = u32::try_from(bytes.len()).map_err(|_| invalid("a frame of 4 GiB".into()))?;
    let mut frame = Vec::with_capacity(5 + bytes.len());
    frame.push(kind);
    frame.extend_from_slice(&length.to_le_bytes());
    frame.extend_from_slice(bytes);
    stream.write_all(&frame)
}

/// One of the thin runner's streams, as frames on its connection.
struct Frames<'s> {
    stream: &'s UnixStream,
    kind: u8,
}

impl Write for Frames<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        send_frame(self.stream, self.kind, bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call as `edge-test-runner` writes it (`call` in its source).
    fn call_bytes(cwd: &str, args: &[&str], vars: &[&str]) -> Vec<u8> {
        fn string(to: &mut Vec<u8>, text: &str) {
            to.extend_from_slice(&(text.len() as u32).to_le_bytes());
            to.extend_from_slice(text.as_bytes());
        }
        let mut payload = Vec::new();
        string(&mut payload, cwd);
        payload.extend_from_slice(&(args.len() as u32).to_le_bytes());
        args.iter().for_each(|arg| string(&mut payload, arg));
        payload.extend_from_slice(&(vars.len() as u32).to_le_bytes());
        vars.iter().for_each(|var| string(&mut payload, var));
        let mut call = CALL_MAGIC.to_le_bytes().to_vec();
        call.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        call.extend_from_slice(&payload);
        call
    }

    fn read(bytes: &[u8]) -> std::io::Result<(Vec<String>, CallEnv)> {
        let (mut ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(bytes).unwrap();
        drop(theirs);
        read_call(&mut ours)
    }

    #[test]
    fn a_call_is_read_as_the_thin_runner_wrote_it() {
        let (args, env) = read(&call_bytes(
            "/crate",
            &["t.wasm", "tests::a", "--exact"],
            &["CARGO_MANIFEST_DIR=/crate", "EMPTY=", "A=b=c"],
        ))
        .unwrap();
        assert_eq!(args, ["t.wasm", "tests::a", "--exact"]);
        assert_eq!(env.var("CARGO_MANIFEST_DIR"), Some("/crate"));
        assert_eq!(env.var("EMPTY"), Some(""));
        assert_eq!(env.var("A"), Some("b=c"));
        assert_eq!(
            env.path(Path::new("fastly.toml")),
            Path::new("/crate/fastly.toml")
        );
        assert_eq!(env.path(Path::new("/abs/t.wasm")), Path::new("/abs/t.wasm"));
    }

    #[test]
    fn a_broken_call_is_refused_with_what_is_wrong() {
        let whole = call_bytes("/crate", &["t.wasm"], &[]);
        let mut other = whole.clone();
        other[0] ^= 0xff;
        let error = read(&other).unwrap_err();
        assert!(
            error.to_string().contains("not a thin runner's call"),
            "{error}"
        );

        // Cut inside the argument (before the environment's count), the payload's length
        // saying so: the argument's length says more than is there.
        let mut cut = whole.clone();
        cut.truncate(whole.len() - 4 - 3);
        let payload = (cut.len() - 8) as u32;
        cut[4..8].copy_from_slice(&payload.to_le_bytes());
        let error = read(&cut).unwrap_err();
        assert!(
            error.to_string().contains("ends inside a string"),
            "{error}"
        );

        let mut huge = CALL_MAGIC.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let error = read(&huge).unwrap_err();
        assert!(error.to_string().contains("larger than the"), "{error}");

        let error = read(&call_bytes("/crate", &["\u{fffd}"], &[])[..20]).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
