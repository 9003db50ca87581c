//! A test's end of its worker's socket: one request at a time, answered by one report.
//!
//! The test reads and writes the socket on its own thread (a hop through another thread per
//! request cost more than a small guest's whole request), and an async test awaits the
//! report on its own runtime, so that its other futures (a timeout around `send`, a
//! `select!`) keep running while the guest works. A request whose test stopped awaiting it
//! still runs to its end in the worker; its report is read and dropped before the next
//! request is sent, so reports never shift by one.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::protocol::{self, Invoke, Report};
use crate::executor::{InvocationReport, InvocationRequest, Outcome, SESSION_ENDED};

/// How much longer than the guest's own limit a test waits for its worker before killing it.
const WORKER_GRACE: Duration = Duration::from_secs(5);

pub(super) struct WorkerLink {
    /// Non-blocking: waits go through poll (blocking tests) or the test's runtime (async).
    stream: UnixStream,
    worker_pid: u32,
    /// Bytes of reports read from the socket and not yet taken.
    received: Vec<u8>,
    /// A request was sent and its report not yet read.
    outstanding: Option<Outstanding>,
    /// Why later requests cannot run: the worker timed out, crashed or was killed.
    ended: Option<String>,
}

/// A request in the worker: when it was sent, and the guest's time limit for it.
#[derive(Clone, Copy)]
struct Outstanding {
    sent: Instant,
    limit: Duration,
}

impl Outstanding {
    /// When the worker has had its own limit and the grace past it.
    fn deadline(self) -> Instant {
        self.sent + self.limit + WORKER_GRACE
    }
}

/// How to wait for the worker: on the caller's thread, or on its tokio runtime.
#[derive(Clone, Copy)]
pub(super) enum Waiting {
    Blocking,
    Async,
}

impl WorkerLink {
    pub(super) fn new(stream: UnixStream, worker_pid: u32) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            worker_pid,
            received: Vec::new(),
            outstanding: None,
            ended: None,
        })
    }

    /// Runs one request in the worker and returns its report. `Waiting::Async` needs the
    /// current tokio runtime to have I/O and time enabled (as `#[edge_test]` and
    /// `#[tokio::test]` give).
    pub(super) async fn exchange(
        &mut self,
        request: InvocationRequest,
        waiting: Waiting,
    ) -> InvocationReport {
        if self.outstanding.is_some() {
            // An earlier request its test stopped awaiting: its report comes first.
            let _abandoned = self.receive(waiting).await;
        }
        if let Some(reason) = &self.ended {
            return InvocationReport::not_run(reason);
        }
        let limit = request.guest_timeout;
        if let Err(e) = self.send(&Invoke(request)) {
            return self.worker_died(&e.to_string());
        }
        self.outstanding = Some(Outstanding {
            sent: Instant::now(),
            limit,
        });
        self.receive(waiting).await
    }

    /// Waits for the outstanding request's report and settles what it says about the
    /// worker. Cancelled mid-way (the test stopped awaiting), it leaves the request
    /// outstanding and what was read so far in `received`.
    async fn receive(&mut self, waiting: Waiting) -> InvocationReport {
        let Some(request) = self.outstanding else {
            return InvocationReport::not_run("no request is waiting for a report");
        };
        let answer = match waiting {
            Waiting::Blocking => self.read_report_blocking(request.deadline()),
            Waiting::Async => self.read_report_async(request.deadline()).await,
        };
        self.outstanding = None;
        match answer {
            Ok(Some(report)) => {
                if matches!(report.outcome, Outcome::TimedOut { .. }) {
                    self.ended = Some(SESSION_ENDED.to_owned());
                }
                report
            }
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                // The worker's own clock should have stopped the guest; it is stuck in a
                // way that did not yield. Kill it.
                unsafe { libc::kill(self.worker_pid as i32, libc::SIGKILL) };
                self.ended = Some(SESSION_ENDED.to_owned());
                InvocationReport {
                    response: None,
                    log_lines: Vec::new(),
                    outcome: Outcome::TimedOut {
                        limit: request.limit,
                    },
                    refused_connections: Vec::new(),
                }
            }
            Ok(None) | Err(_) => {
                self.worker_died(&format!("{:?} into the request", request.sent.elapsed()))
            }
        }
    }

    fn worker_died(&mut self, when: &str) -> InvocationReport {
        let reason = format!(
            "the worker process running this test's guest (pid {}) died {when}: it crashed or \
             was killed",
            self.worker_pid
        );
        self.ended = Some(reason.clone());
        self.outstanding = None;
        InvocationReport::not_run(&reason)
    }

    fn send(&mut self, message: &Invoke) -> std::io::Result<()> {
        let line = protocol::encode(message)?;
        let mut written = 0;
        while written < line.len() {
            match (&self.stream).write(&line[written..]) {
                Ok(n) => written += n,
                // The worker reads as fast as it can; a large body fills the buffer.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    poll(self.stream.as_raw_fd(), libc::POLLOUT, None)?;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read_report_blocking(
        &mut self,
        deadline: Instant,
    ) -> std::io::Result<Option<InvocationReport>> {
        loop {
            if let Some(report) = self.take_report() {
                return report.map(Some);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            poll(self.stream.as_raw_fd(), libc::POLLIN, Some(left))?;
            match self.read_available() {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                // Woken by the limit, not by data: the loop checks the deadline.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    async fn read_report_async(
        &mut self,
        deadline: Instant,
    ) -> std::io::Result<Option<InvocationReport>> {
        let fd = SocketFd(self.stream.as_raw_fd());
        // SAFETY: the descriptor is `self.stream`'s, which stays open and unchanged while
        // this function holds `self`; `readiness` is dropped (deregistered) before it returns.
        let readiness = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        let read = async {
            loop {
                if let Some(report) = self.take_report() {
                    return report.map(Some);
                }
                let mut ready = readiness.readable().await?;
                // Readiness can be stale: a read that would block clears it.
                match self.read_available() {
                    Ok(true) => {}
                    Ok(false) => return Ok(None),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => ready.clear_ready(),
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::time::timeout_at(deadline.into(), read)
            .await
            .unwrap_or_else(|_| Err(ErrorKind::TimedOut.into()))
    }

    /// Reads what the socket holds; `Ok(false)` at end of stream, `WouldBlock` when it holds
    /// nothing yet.
    fn read_available(&mut self) -> std::io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match (&self.stream).read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.received.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next whole report in `received`, if one has arrived.
    fn take_report(&mut self) -> Option<std::io::Result<InvocationReport>> {
        let end = self.received.iter().position(|&b| b == b'\n')?;
        let line: Vec<u8> = self.received.drain(..=end).collect();
        Some(protocol::decode(&line).map(|Report(report)| report))
    }
}

/// The socket's descriptor, registered with the test's runtime for one wait (the stream
/// itself stays with the link).
struct SocketFd(RawFd);

impl AsRawFd for SocketFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Waits until `fd` is ready for `events` or `limit` passes (`None`: no limit). Errors and
/// hang-ups count as ready: the read or write that follows reports them.
fn poll(fd: RawFd, events: libc::c_short, limit: Option<Duration>) -> std::io::Result<()> {
    let timeout_ms = limit.map_or(-1, |left| {
        i32::try_from(left.as_millis().saturating_add(1)).unwrap_or(i32::MAX)
    });
    let mut watch = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    if unsafe { libc::poll(&mut watch, 1, timeout_ms) } < 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() != ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}
