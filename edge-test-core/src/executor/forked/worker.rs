//! A worker: one test's guest, in a process forked from the compiled template (under the
//! contract in `fork`).

use std::io::BufReader;
use std::os::unix::net::UnixStream;

use super::protocol::{self, Invoke, Welcome};
use super::report_wire;
use super::stdio_capture::StdioCapture;
use crate::error::EdgeError;
use crate::executor::guest::{CompiledGuest, GuestRunner};
use crate::executor::{InvocationReport, InvocationRequest};

pub(super) fn run(
    stream: UnixStream,
    guest: CompiledGuest,
    template_id: u64,
    client_pid: u32,
) -> ! {
    super::name_this_process(c"edge-test guest");
    // A test process that dies takes its worker along: its end of the socket closes, and
    // the reader below exits. If the test process is already gone, do not even start.
    let client = rustix::process::Pid::from_raw(client_pid as i32);
    if client.is_none_or(|client| rustix::process::test_kill_process(client).is_err()) {
        exit(0);
    }
    let capture_stdio = guest.capture_stdio;
    let engine = guest.ctx.engine().clone();
    let mut runner = match GuestRunner::new(guest) {
        Ok(runner) => runner,
        Err(reason) => {
            let mut stream = stream;
            let _ = protocol::send(&mut stream, &Welcome::refused(&EdgeError::Host { reason }));
            exit(1);
        }
    };
    let mut writer = stream;
    if protocol::send(
        &mut writer,
        &Welcome::Ready {
            worker_pid: std::process::id(),
            template_id,
        },
    )
    .is_err()
    {
        exit(0);
    }
    let Ok(reader) = writer.try_clone() else {
        exit(1)
    };
    tick_until_the_test_hangs_up(&writer, move || engine.increment_epoch());

    // Requests are read and run on this thread: a hop to another thread per request would
    // cost more than the guest itself.
    let mut reader = BufReader::new(reader);
    while let Ok(Some(Invoke(request))) = protocol::receive(&mut reader, protocol::MAX_MESSAGE) {
        // A bug of edge-test's own must reach the test it fails, not the host's log: the
        // panic is caught, and reported as the reason the request did not run.
        let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inject_fault_when_asked();
            if capture_stdio && request.command.is_some() {
                run_capturing_stdio(&mut runner, request)
            } else {
                runner.run(request)
            }
        }))
        .unwrap_or_else(|panic| {
            InvocationReport::not_run(&format!(
                "the edge-test worker (pid {}) panicked while running it: {}; this is a bug \
                 in edge-test, please report it",
                std::process::id(),
                crate::mock::server::panic_message(&panic)
            ))
        });
        let timed_out = matches!(report.outcome, crate::executor::Outcome::TimedOut { .. });
        if report_wire::send(&mut writer, report).is_err() || timed_out {
            // A timed-out guest may still be running; this process is its only way out.
            exit(0);
        }
    }
    exit(0)
}

/// Runs a command with the worker's stdout and stderr caught: what the guest wrote, as it
/// wrote it.
fn run_capturing_stdio(runner: &mut GuestRunner, request: InvocationRequest) -> InvocationReport {
    let cap = request.max_log_bytes;
    let capture = match StdioCapture::begin(cap) {
        Ok(capture) => capture,
        Err(e) => {
            let mut report = runner.run(request);
            report.runtime_warnings.push(format!(
                "edge-test could not catch the guest's stdout and stderr ({e}): they are lost"
            ));
            return report;
        }
    };
    let mut report = runner.run(request);
    match capture.finish() {
        Ok(stdio) => report.stdio = Some(stdio),
        Err(e) => report.runtime_warnings.push(format!(
            "edge-test could not read the guest's stdout and stderr: {e}"
        )),
    }
    report
}

/// `EDGE_TEST_INJECT_FAULT=worker-panic`, in the environment of the process that starts
/// the host, makes every worker panic where it runs a request: the fault tests of edge-test
/// use it to show that such a panic reaches the test.
fn inject_fault_when_asked() {
    if std::env::var_os("EDGE_TEST_INJECT_FAULT").is_some_and(|fault| fault == "worker-panic") {
        panic!("a fault injected by EDGE_TEST_INJECT_FAULT=worker-panic");
    }
}

/// One thread, for two things a guest needs from outside while it runs: wasmtime's epoch
/// advanced every tick (viceroy's own epoch thread does not survive a fork, and without
/// ticks a guest never yields, so it could never be stopped), and a test process that dies
/// mid-request taking its worker along: the thread waits a tick at a time for the peer to
/// hang up (without reading what it sends), and exits. One thread rather than two: every
/// thread of a worker is one more start and exit, and one more CPU its copy-on-write faults
/// must flush.
fn tick_until_the_test_hangs_up(stream: &UnixStream, advance_epoch: impl Fn() + Send + 'static) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let Ok(watched) = stream.try_clone() else {
        exit(1)
    };
    let tick = crate::executor::guest::viceroy_compat::WORKER_EPOCH_TICK;
    let tick = Timespec {
        tv_sec: 0,
        tv_nsec: i64::from(tick.subsec_nanos()),
    };
    std::thread::spawn(move || {
        let gone = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
        loop {
            let mut watch = [PollFd::new(&watched, PollFlags::RDHUP)];
            if poll(&mut watch, Some(&tick)).is_ok() && watch[0].revents().intersects(gone) {
                exit(0);
            }
            advance_epoch();
        }
    });
}

/// Leaves without running the template's exit handlers or flushing buffers it inherited.
fn exit(code: i32) -> ! {
    super::fork::exit_now(code)
}
