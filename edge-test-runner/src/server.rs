//! Handing a call to the runner server, and relaying what it sends back.

// A lost call's reason is text on the stack (there is no heap), carried back once per call.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

use core::fmt::Write;
use core::time::Duration;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use rustix::net::sockopt::Timeout;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::Process;
use crate::process::{stderr, stdout, write_all};
use crate::whole_runner::PathText;
use edge_test_runner::text::{OsError, Shown, Text};

/// The server's frames (`thin_runner`'s constants of the same names).
const ACCEPTED: u8 = 1;
const STDOUT: u8 = 2;
const STDERR: u8 = 3;
const EXIT: u8 = 4;
const RUN_IT_YOURSELF: u8 = 5;
/// How long the server may take to accept a call: it answers from a thread of its own
/// before any compile, so only a stopped or wedged one misses this
/// (`EDGE_TEST_HOST_ANSWER_MS`, as for the host).
const DEFAULT_ANSWER: Duration = Duration::from_secs(20);
/// The largest frame read: a test's output is capped far below it.
const MAX_FRAME: usize = 1 << 30;

/// How handing a call to the server went.
pub enum Handed {
    /// The server ran it: the exit status.
    Ran(u8),
    /// The server did not run it (none answered, or it leaves this call to the whole
    /// runner), and nothing of it was written: the whole runner runs it.
    NotRun,
    /// The server stopped after writing some of the call's output: the call failed, why.
    Lost(Text<2048>),
}

pub fn hand_over(socket: &PathText, process: &Process) -> Handed {
    let Some(path) = socket.as_c_str() else {
        return Handed::NotRun;
    };
    let Ok(address) = SocketAddrUnix::new(path) else {
        return Handed::NotRun;
    };
    let Ok(stream) = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    ) else {
        return Handed::NotRun;
    };
    if rustix::net::connect(&stream, &address).is_err() {
        return Handed::NotRun;
    }
    let answer = answer_limit(process);
    if crate::call::send(stream.as_fd(), process).is_err()
        || rustix::net::sockopt::set_socket_timeout(&stream, Timeout::Recv, Some(answer)).is_err()
    {
        return Handed::NotRun;
    }
    let mut relay = Relay {
        stream,
        socket,
        answer,
        slice: answer,
        wrote: false,
        accepted: None,
        silent: Duration::ZERO,
        stopped_for: None,
    };
    match relay.run() {
        Ok(code) => Handed::Ran(code),
        Err(handed) => handed,
    }
}

/// One call's answer, read frame by frame.
struct Relay<'a> {
    stream: OwnedFd,
    socket: &'a PathText,
    /// How long the server may take to accept, and to come back from being stopped.
    answer: Duration,
    /// The read timeout: the answer limit until the server accepts, then a second, so that
    /// a server stopped meanwhile is noticed.
    slice: Duration,
    /// Whether any of the call's output has been written (then the call cannot be run
    /// again).
    wrote: bool,
    /// Once the server has accepted: its pid, and how long the call may take.
    accepted: Option<(u32, Duration)>,
    /// How long the server has been silent since it accepted, read timeouts added up.
    silent: Duration,
    /// How long the server has been seen stopped, if it is.
    stopped_for: Option<Duration>,
}

impl Relay<'_> {
    fn run(&mut self) -> Result<u8, Handed> {
        // Output is relayed a chunk at a time through this one buffer.
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let mut header = [0u8; 5];
            self.fill(&mut header)?;
            let length = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if length > MAX_FRAME {
                return Err(self.gone(format_args!("a frame of {length} bytes")));
            }
            match header[0] {
                ACCEPTED => {
                    let mut bytes = [0u8; 12];
                    let kept = length.min(bytes.len());
                    self.fill(&mut bytes[..kept])?;
                    self.skip(length - kept)?;
                    let patience = bytes[..kept]
                        .first_chunk::<8>()
                        .map_or(u64::MAX, |ms| u64::from_le_bytes(*ms));
                    let pid = bytes[..kept]
                        .get(8..12)
                        .and_then(|pid| pid.try_into().ok())
                        .map_or(0, u32::from_le_bytes);
                    self.accepted = Some((pid, Duration::from_millis(patience)));
                    // From now on the server is watched a second at a time (a test may run
                    // long).
                    self.slice = self
                        .answer
                        .min(Duration::from_secs(1))
                        .max(Duration::from_millis(1));
                    if rustix::net::sockopt::set_socket_timeout(
                        &self.stream,
                        Timeout::Recv,
                        Some(self.slice),
                    )
                    .is_err()
                    {
                        return Err(Handed::NotRun);
                    }
                }
                kind @ (STDOUT | STDERR) => {
                    self.wrote = true;
                    let to = if kind == STDOUT { stdout() } else { stderr() };
                    let mut left = length;
                    while left > 0 {
                        let part = left.min(chunk.len());
                        self.fill(&mut chunk[..part])?;
                        write_all(to, &chunk[..part]);
                        left -= part;
                    }
                }
                EXIT => {
                    let mut code = [crate::CANNOT_RUN];
                    let kept = length.min(1);
                    self.fill(&mut code[..kept])?;
                    return Ok(code[0]);
                }
                RUN_IT_YOURSELF if !self.wrote => return Err(Handed::NotRun),
                other => {
                    return Err(self.lost(format_args!(
                        "the edge-test runner server sent a frame of unknown kind {other}"
                    )));
                }
            }
        }
    }

    /// Reads exactly `buffer`'s length, waiting out a slow server and giving up on a stuck
    /// or stopped one.
    fn fill(&mut self, buffer: &mut [u8]) -> Result<(), Handed> {
        let mut at = 0;
        while at < buffer.len() {
            match rustix::io::read(&self.stream, &mut buffer[at..]) {
                Ok(0) => return Err(self.gone(format_args!("it closed the connection"))),
                Ok(read) => at += read,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => self.waited()?,
                Err(e) => return Err(self.gone(format_args!("{}", OsError(e.raw_os_error())))),
            }
        }
        Ok(())
    }

    fn skip(&mut self, mut length: usize) -> Result<(), Handed> {
        let mut chunk = [0u8; 256];
        while length > 0 {
            let part = length.min(chunk.len());
            self.fill(&mut chunk[..part])?;
            length -= part;
        }
        Ok(())
    }

    /// A read timed out: whether the server is stuck, and if so what becomes of the call.
    fn waited(&mut self) -> Result<(), Handed> {
        let stuck = match self.accepted {
            // It did not even accept the call within the answer limit.
            None => true,
            Some((pid, patience)) => {
                self.silent += self.slice;
                if self.silent > patience {
                    true
                } else if is_stopped(pid) {
                    // Stopped (SIGSTOP, a debugger) for the answer limit: it will not finish.
                    let stopped_for = self.stopped_for.map_or(Duration::ZERO, |d| d + self.slice);
                    self.stopped_for = Some(stopped_for);
                    stopped_for >= self.answer
                } else {
                    self.stopped_for = None;
                    false
                }
            }
        };
        if !stuck {
            return Ok(());
        }
        replace_stuck_server(self.socket, self.accepted.map(|(pid, _)| pid));
        if !self.wrote {
            return Err(Handed::NotRun);
        }
        Err(self.lost(format_args!(
            "the edge-test runner server did not finish the test: it is stuck (stopped or \
             wedged), and was stopped"
        )))
    }

    /// The server is gone: the whole runner runs the call if nothing of it was written.
    fn gone(&self, why: core::fmt::Arguments<'_>) -> Handed {
        if !self.wrote {
            return Handed::NotRun;
        }
        self.lost(format_args!(
            "the edge-test runner server stopped before the test finished ({why})"
        ))
    }

    fn lost(&self, why: core::fmt::Arguments<'_>) -> Handed {
        let mut message = Text::<2048>::new();
        let log = log_of(self.socket);
        let _ = write!(message, "{why}; its log is {}", Shown(log.bytes()));
        Handed::Lost(message)
    }
}

fn answer_limit(process: &Process) -> Duration {
    process
        .var(b"EDGE_TEST_HOST_ANSWER_MS")
        .and_then(|ms| core::str::from_utf8(ms).ok()?.parse().ok())
        .map_or(DEFAULT_ANSWER, Duration::from_millis)
}

/// Whether process `pid` is stopped (its state in /proc: `T`, or `t` under a tracer).
fn is_stopped(pid: u32) -> bool {
    let mut stat = [0u8; 512];
    let Some(stat) = read_proc(pid, "stat", &mut stat) else {
        return false;
    };
    // The state follows the command's name, which is in parentheses and may hold any byte.
    let Some(end) = stat.iter().rposition(|&b| b == b')') else {
        return false;
    };
    matches!(stat.get(end + 1..end + 3), Some(b" T" | b" t"))
}

/// A server that is stuck: its socket removed (the whole runner starts another in its
/// place) and, when it is known and still a runner server, the process killed, as the host's
/// clients replace a stuck host: stopped, it would never leave on its own.
fn replace_stuck_server(socket: &PathText, pid: Option<u32>) {
    if let Some(path) = socket.as_c_str() {
        let _ = rustix::fs::unlinkat(CWD, path, rustix::fs::AtFlags::empty());
    }
    // Before it accepted anything, its pid is the first line of its log.
    let pid = pid.filter(|pid| *pid != 0).or_else(|| pid_in_log(socket));
    let Some(pid) = pid else { return };
    let mut comm = [0u8; 64];
    let is_server = read_proc(pid, "comm", &mut comm)
        .is_some_and(|comm| comm.strip_suffix(b"\n").unwrap_or(comm) == b"edge-test runs");
    if let (true, Some(pid)) = (is_server, rustix::process::Pid::from_raw(pid as i32)) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

/// The server's log, beside its socket (`runner-<id>.log`).
fn log_of(socket: &PathText) -> PathText {
    let mut log = PathText::new();
    log.push(socket.bytes());
    log.strip_suffix(b".sock");
    log.push(b".log");
    log
}

/// The pid in the first line of the server's log: `edge-test runner server <pid> ...`.
fn pid_in_log(socket: &PathText) -> Option<u32> {
    let mut start = [0u8; 256];
    let line = read_file(log_of(socket).as_c_str()?, &mut start)?;
    let rest = line.strip_prefix(b"edge-test runner server ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    core::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn read_proc<'b>(pid: u32, file: &str, buffer: &'b mut [u8]) -> Option<&'b [u8]> {
    let mut path = Text::<64>::new();
    write!(path, "/proc/{pid}/{file}").ok()?;
    read_file(path.as_c_str()?, buffer)
}

/// The start of a file, as much as fits in `buffer`.
fn read_file<'b>(path: &core::ffi::CStr, buffer: &'b mut [u8]) -> Option<&'b [u8]> {
    let file =
        rustix::fs::openat(CWD, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut at = 0;
    while at < buffer.len() {
        match rustix::io::read(&file, &mut buffer[at..]) {
            Ok(0) => break,
            Ok(read) => at += read,
            Err(Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    Some(&buffer[..at])
}
