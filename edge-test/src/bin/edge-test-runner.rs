//! `edge-test-runner`: cargo's target runner for a guest crate's own unit tests, each run in
//! a pristine instance forked from a module compiled once per machine. Set it in the guest
//! crate's `.cargo/config.toml`:
//!
//! ```toml
//! [target.wasm32-wasip1]
//! runner = "edge-test-runner"
//! ```
//!
//! and run `cargo test` or `cargo nextest run` there. See the README, "unit tests inside
//! the guest".
//!
//! This is the thin half of the runner, std alone: nextest starts one runner process per
//! test, and one of the whole runner (viceroy-lib and wasmtime in it) cost more to start and
//! end than the test's own instance. It hands each call to the runner server, a long-lived
//! process of the whole runner, which runs it as the whole runner would and sends back what
//! it printed and its exit status (edge-test-core's `guest_tests::thin_runner` is the other
//! side, and spells out the wire). What the server does not run in place, and every call
//! when no server answers, goes to the whole runner, `edge-test-runner-host` beside this
//! binary, which also starts a server at the socket this binary names.

use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// The first bytes of a call (`thin_runner::CALL_MAGIC`).
const CALL_MAGIC: u32 = 0xED6E_7E57;
/// The server's frames (`thin_runner`'s constants of the same names).
const ACCEPTED: u8 = 1;
const STDOUT: u8 = 2;
const STDERR: u8 = 3;
const EXIT: u8 = 4;
const RUN_IT_YOURSELF: u8 = 5;
/// The runner could not run the tests at all.
const CANNOT_RUN: u8 = 2;
/// Tells the whole runner where to start the runner server this binary looks for.
const SOCKET_ENV: &str = "EDGE_TEST_RUNNER_SOCKET";
/// How long the server may take to accept a call: it answers from a thread of its own
/// before any compile, so only a stopped or wedged one misses this
/// (`EDGE_TEST_HOST_ANSWER_MS`, as for the host).
const DEFAULT_HOST_ANSWER: Duration = Duration::from_secs(20);
/// The largest frame read: a test's output is capped far below it.
const MAX_FRAME: usize = 1 << 30;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let whole = match whole_runner() {
        Ok(whole) => whole,
        Err(why) => return cannot_run(&why),
    };
    let socket = if host_is_off() {
        None
    } else {
        server_socket(&whole)
    };
    if let Some(socket) = &socket {
        match hand_to_server(socket, &args) {
            Handed::Ran(code) => return ExitCode::from(code),
            Handed::Lost(why) => return cannot_run(&why),
            Handed::NotRun => {}
        }
    }
    let mut command = Command::new(&whole);
    command.args(&args);
    if let Some(socket) = &socket {
        command.env(SOCKET_ENV, socket);
    }
    let error = command.exec();
    cannot_run(&format!("cannot run {}: {error}", whole.display()))
}

fn cannot_run(why: &str) -> ExitCode {
    eprintln!("edge-test-runner: error: {why}");
    ExitCode::from(CANNOT_RUN)
}

/// The whole runner: this binary's name with `-host`, in its directory (`cargo install`
/// puts both there; cargo builds both in one directory).
fn whole_runner() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the runner's own binary: {e}"))?;
    let mut name = exe.file_name().unwrap_or_default().to_owned();
    name.push("-host");
    let whole = exe.with_file_name(name);
    if whole.is_file() {
        Ok(whole)
    } else {
        Err(format!(
            "{} is not there: edge-test-runner runs the tests through it, and it is installed \
             beside edge-test-runner. Install both with `cargo install edge-test` (or \
             `cargo install --path edge-test` from edge-test's repository)",
            whole.display()
        ))
    }
}

/// `EDGE_TEST_HOST=off`: every test in process, which only the whole runner does.
fn host_is_off() -> bool {
    std::env::var_os("EDGE_TEST_HOST").is_some_and(|v| v == "off" || v == "0" || v == "false")
}

/// Where the runner server of `whole` listens, in edge-test's private directory: named after
/// the whole runner's file (another build of it is another server) and the settings that
/// choose which host its sessions use. `None`: there is no private directory of this user's
/// yet, or it is not private (the whole runner says why).
fn server_socket(whole: &Path) -> Option<PathBuf> {
    // The owner of /proc/self is this process's user.
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(runtime) if !runtime.is_empty() => PathBuf::from(runtime).join("edge-test"),
        _ => std::env::temp_dir().join(format!("edge-test-{uid}")),
    };
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    if !meta.is_dir() || meta.uid() != uid || meta.permissions().mode() & 0o077 != 0 {
        return None;
    }
    let binary = std::fs::metadata(whole).ok()?;
    let mut settings = std::collections::hash_map::DefaultHasher::new();
    for name in ["EDGE_TEST_HOST_SCOPE", "EDGE_TEST_HOST_BUILD_ID"] {
        std::env::var_os(name).hash(&mut settings);
    }
    Some(dir.join(format!(
        "runner-{:x}-{:x}-{:x}-{:x}.{:x}-{:016x}.sock",
        binary.dev(),
        binary.ino(),
        binary.size(),
        binary.mtime(),
        binary.mtime_nsec(),
        settings.finish()
    )))
}

/// How handing a call to the server went.
enum Handed {
    /// The server ran it: the exit status.
    Ran(u8),
    /// The server did not run it (none answered, or it leaves this call to the whole
    /// runner), and nothing of it was written: the whole runner runs it.
    NotRun,
    /// The server stopped after writing some of the call's output: the call failed.
    Lost(String),
}

fn hand_to_server(socket: &Path, args: &[OsString]) -> Handed {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return Handed::NotRun;
    };
    let answer = host_answer();
    if stream.write_all(&call(args)).is_err() || stream.set_read_timeout(Some(answer)).is_err() {
        return Handed::NotRun;
    }
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    let mut wrote = false;
    // Once the server has accepted: its pid, how long the call may take, and how long the
    // server has been seen stopped.
    let mut accepted: Option<(u32, Duration)> = None;
    let started = Instant::now();
    let mut stopped_since: Option<Instant> = None;
    let lost = |why: &str| {
        Handed::Lost(format!(
            "{why}; its log is {}",
            socket.with_extension("log").display()
        ))
    };
    loop {
        let (kind, bytes) = match frame(&mut stream) {
            Ok(frame) => frame,
            Err(e) if is_timeout(&e) => {
                let stuck = match accepted {
                    // It did not even accept the call within the answer limit.
                    None => true,
                    Some((_, patience)) if started.elapsed() > patience => true,
                    // Stopped (SIGSTOP, a debugger) for the answer limit: it will not finish.
                    Some((pid, _)) => match (is_stopped(pid), stopped_since) {
                        (false, _) => {
                            stopped_since = None;
                            false
                        }
                        (true, None) => {
                            stopped_since = Some(Instant::now());
                            false
                        }
                        (true, Some(since)) => since.elapsed() >= answer,
                    },
                };
                if !stuck {
                    continue;
                }
                replace_stuck_server(socket, accepted.map(|(pid, _)| pid));
                if !wrote {
                    return Handed::NotRun;
                }
                return lost(
                    "the edge-test runner server did not finish the test: it is stuck (stopped \
                     or wedged), and was stopped",
                );
            }
            Err(_) if !wrote => return Handed::NotRun,
            Err(e) => {
                return lost(&format!(
                    "the edge-test runner server stopped before the test finished ({e})"
                ));
            }
        };
        match kind {
            ACCEPTED => {
                let patience = bytes
                    .first_chunk::<8>()
                    .map_or(u64::MAX, |ms| u64::from_le_bytes(*ms));
                let pid = bytes
                    .get(8..12)
                    .and_then(|pid| pid.try_into().ok())
                    .map_or(0, u32::from_le_bytes);
                accepted = Some((pid, Duration::from_millis(patience)));
                // From now on the server is watched a second at a time (a test may run long).
                let slice = answer
                    .min(Duration::from_secs(1))
                    .max(Duration::from_millis(1));
                if stream.set_read_timeout(Some(slice)).is_err() {
                    return Handed::NotRun;
                }
            }
            STDOUT | STDERR => {
                wrote = true;
                let to: &mut dyn Write = if kind == STDOUT {
                    &mut stdout
                } else {
                    &mut stderr
                };
                // As the whole runner would: output nobody reads does not fail the test.
                let _ = to.write_all(&bytes);
            }
            EXIT => {
                let _ = stdout.flush();
                return Handed::Ran(bytes.first().copied().unwrap_or(CANNOT_RUN));
            }
            RUN_IT_YOURSELF if !wrote => return Handed::NotRun,
            other => {
                return lost(&format!(
                    "the edge-test runner server sent a frame of unknown kind {other}"
                ));
            }
        }
    }
}

/// Whether process `pid` is stopped (its state in /proc: `T`, or `t` under a tracer).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
    })
}

/// A server that is stuck: its socket removed (the whole runner starts another in its
/// place) and, when it is known and still a runner server, the process killed, as the host's
/// clients replace a stuck host: stopped, it would never leave on its own.
fn replace_stuck_server(socket: &Path, pid: Option<u32>) {
    let _ = std::fs::remove_file(socket);
    // Before it accepted anything, its pid is the first line of its log.
    let pid = pid.filter(|pid| *pid != 0).or_else(|| {
        let log = std::fs::read_to_string(socket.with_extension("log")).ok()?;
        log.lines()
            .next()?
            .strip_prefix("edge-test runner server ")?
            .split(' ')
            .next()?
            .parse()
            .ok()
    });
    let Some(pid) = pid else { return };
    let is_server = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end() == "edge-test runs");
    if let (true, Some(pid)) = (is_server, rustix::process::Pid::from_raw(pid as i32)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn host_answer() -> Duration {
    std::env::var("EDGE_TEST_HOST_ANSWER_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(DEFAULT_HOST_ANSWER, Duration::from_millis)
}

/// The call as it goes on the wire: the magic, the payload's length, the payload (the
/// working directory, the arguments, the environment).
fn call(args: &[OsString]) -> Vec<u8> {
    fn string(payload: &mut Vec<u8>, bytes: &[u8]) {
        payload.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        payload.extend_from_slice(bytes);
    }
    let mut payload = Vec::new();
    let cwd = std::env::current_dir().unwrap_or_default();
    string(&mut payload, cwd.as_os_str().as_bytes());
    payload.extend_from_slice(&(args.len() as u32).to_le_bytes());
    for arg in args {
        string(&mut payload, arg.as_bytes());
    }
    let vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    payload.extend_from_slice(&(vars.len() as u32).to_le_bytes());
    for (name, value) in &vars {
        let mut entry = name.as_bytes().to_vec();
        entry.push(b'=');
        entry.extend_from_slice(value.as_bytes());
        string(&mut payload, &entry);
    }
    let mut message = CALL_MAGIC.to_le_bytes().to_vec();
    message.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    message.extend_from_slice(&payload);
    message
}

/// One frame from the server: its kind and its bytes.
fn frame(stream: &mut UnixStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0; 5];
    stream.read_exact(&mut header)?;
    let length = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if length > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {length} bytes")));
    }
    let mut bytes = vec![0; length];
    stream.read_exact(&mut bytes)?;
    Ok((header[0], bytes))
}
