//! A worker: one test's guest, in a process forked from the compiled template.

use std::io::BufReader;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::host::LISTENER_FD;
use super::protocol::{self, Invoke, Report, Welcome};
use crate::executor::in_process::{CompiledGuest, InProcessSession};

/// How often the worker advances wasmtime's epoch: the fork left the template's epoch
/// thread behind, and without ticks a guest never yields, so it could never be stopped.
const EPOCH_TICK: Duration = Duration::from_millis(10);

pub(super) fn run(stream: UnixStream, guest: CompiledGuest, service: &str, client_pid: u32) -> ! {
    unsafe {
        libc::close(LISTENER_FD.load(Ordering::SeqCst));
    }
    // A test process that dies takes its worker along: its end of the socket closes, and
    // the reader below exits. If the test process is already gone, do not even start.
    if unsafe { libc::kill(client_pid as i32, 0) } != 0 {
        exit(0);
    }
    let engine = guest.ctx.engine().clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
        }
    });
    let session = match InProcessSession::serve(service, guest) {
        Ok(session) => session,
        Err(error) => {
            let mut stream = stream;
            let _ = protocol::send(&mut stream, &Welcome::Refused(error));
            exit(1);
        }
    };
    let mut writer = stream;
    if protocol::send(
        &mut writer,
        &Welcome::Ready {
            worker_pid: std::process::id(),
        },
    )
    .is_err()
    {
        exit(0);
    }
    let Ok(reader) = writer.try_clone() else {
        exit(1)
    };

    // Reading happens on its own thread so that a vanished test is noticed even while a
    // guest is running.
    let (requests, inbox) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        while let Ok(Some(Invoke(request))) = protocol::receive(&mut reader) {
            if requests.send(request).is_err() {
                break;
            }
        }
        exit(0);
    });
    while let Ok(request) = inbox.recv() {
        let report = session.invoke(request).wait_blocking();
        let timed_out = matches!(report.outcome, crate::executor::Outcome::TimedOut { .. });
        if protocol::send(&mut writer, &Report(report)).is_err() || timed_out {
            // A timed-out guest may still be running; this process is its only way out.
            exit(0);
        }
    }
    exit(0)
}

/// Leaves without running the template's exit handlers or flushing buffers it inherited.
fn exit(code: i32) -> ! {
    unsafe { libc::_exit(code) }
}
