//! A worker's stdout and stderr, caught while its guest runs a command
//! (`SessionSpec::capture_stdio`): the guest writes to the process's own (its context
//! inherits them), which point at a pipe meanwhile. A worker is alone in its process, so
//! nothing else writes there; in process the guest's output goes to the log sink instead.
//!
//! A thread drains the pipe as the guest writes, so a guest printing in a loop never blocks
//! on a full pipe, and keeps at most the invocation's cap; the rest is counted and dropped.

use std::io::{PipeReader, Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;

use crate::wire::CapturedStdio;

/// The descriptors a capture points at its pipe.
const STDOUT: i32 = 1;
const STDERR: i32 = 2;

pub(super) struct StdioCapture {
    saved_stdout: OwnedFd,
    saved_stderr: OwnedFd,
    reader: JoinHandle<CapturedStdio>,
}

impl StdioCapture {
    /// Points stdout and stderr at a pipe, keeping at most `cap` bytes of what arrives.
    pub(super) fn begin(cap: usize) -> std::io::Result<Self> {
        let (read, write) = std::io::pipe()?;
        let saved_stdout = rustix::io::dup(std::io::stdout().as_fd())?;
        let saved_stderr = rustix::io::dup(std::io::stderr().as_fd())?;
        point(STDOUT, write.as_fd())?;
        point(STDERR, write.as_fd())?;
        // Only descriptors 1 and 2 now write to the pipe: restoring them ends it.
        drop(write);
        let reader = std::thread::Builder::new()
            .name("edge-test stdio".into())
            .spawn(move || drain(read, cap))?;
        Ok(Self {
            saved_stdout,
            saved_stderr,
            reader,
        })
    }

    /// Gives stdout and stderr back, and what the guest wrote to them.
    pub(super) fn finish(self) -> std::io::Result<CapturedStdio> {
        // wasmtime-wasi writes a guest's output through std's handles: what they buffered
        // is the guest's too.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        point(STDOUT, self.saved_stdout.as_fd())?;
        point(STDERR, self.saved_stderr.as_fd())?;
        self.reader
            .join()
            .map_err(|_| std::io::Error::other("the thread reading the guest's output panicked"))
    }
}

/// Makes descriptor `target` (stdout or stderr) a copy of `source`.
fn point(target: i32, source: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    // SAFETY: descriptors 1 and 2 are open for the whole life of a worker (it inherits them
    // from the host, and nothing closes them); the `OwnedFd` only names one as the target
    // of dup2, which replaces it atomically, and `ManuallyDrop` keeps it from being closed.
    #[allow(unsafe_code)]
    let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(target) });
    rustix::io::dup2(source, &mut target)?;
    Ok(())
}

fn drain(mut pipe: PipeReader, cap: usize) -> CapturedStdio {
    let mut captured = CapturedStdio::default();
    let mut buffer = [0u8; 16 << 10];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => return captured,
            Ok(n) => {
                let room = cap.saturating_sub(captured.bytes.len()).min(n);
                captured.bytes.extend_from_slice(&buffer[..room]);
                captured.dropped += (n - room) as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return captured,
        }
    }
}
