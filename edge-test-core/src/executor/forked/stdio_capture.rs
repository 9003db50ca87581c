//! A worker's stdout and stderr, caught while its guest runs a command
//! (`SessionSpec::capture_stdio`): the guest writes to the process's own (its context
//! inherits them), which point at an anonymous memory file meanwhile. A worker is alone in
//! its process, so nothing else writes there; in process the guest's output goes to the log
//! sink instead.
//!
//! A file, not a pipe: a pipe needs a thread to drain it as the guest writes (or a guest
//! printing more than the pipe holds blocks forever), and a second thread running in the
//! worker makes every copy-on-write fault of its guest a TLB shootdown on the other core.
//! The file is bounded instead: the worker's file size limit (`RLIMIT_FSIZE`) is the cap
//! plus one byte while the command runs, so a guest printing in a loop gets `EFBIG` (its
//! `println!` panics) once it has written past the cap, and never fills memory.

use std::io::{Read, Seek, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use rustix::fs::{MemfdFlags, memfd_create};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use crate::wire::CapturedStdio;

/// The descriptors a capture points at its file.
const STDOUT: i32 = 1;
const STDERR: i32 = 2;

pub(super) struct StdioCapture {
    file: std::fs::File,
    cap: usize,
    saved_stdout: OwnedFd,
    saved_stderr: OwnedFd,
    saved_limit: Rlimit,
}

impl StdioCapture {
    /// Points stdout and stderr at a memory file that takes `cap` bytes and one more. On
    /// `Err` stdout, stderr and the file size limit are as they were.
    pub(super) fn begin(cap: usize) -> std::io::Result<Self> {
        let file = std::fs::File::from(memfd_create("edge-test stdio", MemfdFlags::CLOEXEC)?);
        let capture = Self {
            file,
            cap,
            saved_stdout: rustix::io::dup(std::io::stdout().as_fd())?,
            saved_stderr: rustix::io::dup(std::io::stderr().as_fd())?,
            saved_limit: getrlimit(Resource::Fsize),
        };
        ignore_file_size_signal();
        // One byte past the cap tells a guest that reached it from one that stopped at it.
        let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
        setrlimit(
            Resource::Fsize,
            Rlimit {
                current: Some(limit),
                maximum: capture.saved_limit.maximum,
            },
        )?;
        let pointed =
            point(STDOUT, capture.file.as_fd()).and_then(|()| point(STDERR, capture.file.as_fd()));
        if let Err(e) = pointed {
            let _ = capture.restore();
            return Err(e);
        }
        Ok(capture)
    }

    /// Gives stdout and stderr back, and what the guest wrote to them.
    pub(super) fn finish(mut self) -> std::io::Result<CapturedStdio> {
        // wasmtime-wasi writes a guest's output through std's handles: what they buffered
        // is the guest's too.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        self.restore()?;
        let written = self.file.metadata()?.len();
        let kept = written.min(self.cap as u64);
        let mut bytes = Vec::with_capacity(kept as usize);
        self.file.rewind()?;
        (&mut self.file).take(kept).read_to_end(&mut bytes)?;
        Ok(CapturedStdio {
            bytes,
            // The limit refused the rest: at least this much was written past the cap.
            dropped: written - kept,
        })
    }

    /// The file size limit, stdout and stderr as they were before the capture.
    fn restore(&self) -> std::io::Result<()> {
        setrlimit(Resource::Fsize, self.saved_limit)?;
        point(STDOUT, self.saved_stdout.as_fd())?;
        point(STDERR, self.saved_stderr.as_fd())
    }
}

/// A write past the file size limit raises SIGXFSZ, which ends the process unless ignored;
/// ignored, the write fails with `EFBIG`, which the guest sees.
fn ignore_file_size_signal() {
    // SAFETY: SIG_IGN installs no handler code; a worker runs no code of its own that
    // expects SIGXFSZ (it only ever writes files through this capture's limit).
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
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
