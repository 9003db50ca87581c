//! A test's end of its worker's socket: one request at a time, answered by one report.
//!
//! The test reads and writes the socket on its own thread (a hop through another thread per
//! request cost more than a small guest's whole request), and an async test awaits the
//! report on its own runtime, so that its other futures (a timeout around `send`, a
//! `select!`) keep running while the guest works. A request whose test stopped awaiting it
//! still runs to its end in the worker; the edge settles it (reads its report and judges it)
//! before the next request is sent, so reports never shift by one and nothing it did is
//! lost or counted as the next one's.

use std::io::{ErrorKind, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use rustix::event::{PollFd, PollFlags, Timespec};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::protocol::{self, Invoke};
use super::report_wire::IncomingReport;
use crate::executor::{InvocationReport, InvocationRequest, Outcome, SESSION_ENDED};

/// How much longer than the guest's own limit a test waits for its worker before killing it.
const WORKER_GRACE: Duration = Duration::from_secs(5);

pub(super) struct WorkerLink {
    /// Non-blocking: waits go through poll (blocking tests) or the test's runtime (async).
    stream: UnixStream,
    worker: WorkerProcess,
    /// The report being read, as far as it has arrived.
    incoming: IncomingReport,
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
    /// When the worker has had its own limit and the grace past it; `None` for a limit so
    /// far away that it cannot be written as an instant (`Duration::MAX`): no deadline.
    fn deadline(self) -> Option<Instant> {
        self.sent.checked_add(self.limit)?.checked_add(WORKER_GRACE)
    }
}

impl WorkerLink {
    pub(super) fn new(stream: UnixStream, worker_pid: u32) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            worker: WorkerProcess::open(worker_pid),
            incoming: IncomingReport::default(),
            outstanding: None,
            ended: None,
        })
    }

    /// Runs one request in the worker and waits on this thread, in poll(2), for its report.
    pub(super) fn exchange_blocking(&mut self, request: InvocationRequest) -> InvocationReport {
        // The edge settles an abandoned request before it sends the next; a link used
        // otherwise still never lets reports shift by one.
        let _abandoned = self.settle_blocking();
        if let Some(refused) = self.start(request) {
            return refused;
        }
        let answer = self.read_report_blocking();
        self.conclude(answer)
    }

    /// Runs one request in the worker and awaits its report on the current tokio runtime
    /// (which needs I/O and time enabled, as `#[edge_test]` and `#[tokio::test]` give).
    /// Cancelled mid-way (the test stopped awaiting), the request stays outstanding and
    /// what was read of its report stays in `incoming`.
    pub(super) async fn exchange_async(&mut self, request: InvocationRequest) -> InvocationReport {
        let _abandoned = self.settle_async().await;
        if let Some(refused) = self.start(request) {
            return refused;
        }
        let answer = self.read_report_async().await;
        self.conclude(answer)
    }

    /// The report of a request whose test stopped awaiting it, once the worker has finished
    /// it; `None` when no request is outstanding.
    pub(super) fn settle_blocking(&mut self) -> Option<InvocationReport> {
        self.outstanding?;
        let answer = self.read_report_blocking();
        Some(self.conclude(answer))
    }

    /// [`settle_blocking`](Self::settle_blocking), awaited on the current tokio runtime.
    pub(super) async fn settle_async(&mut self) -> Option<InvocationReport> {
        self.outstanding?;
        let answer = self.read_report_async().await;
        Some(self.conclude(answer))
    }

    /// Sends a request to the worker. `Some` is the report of a request that could not be
    /// sent (the worker ended or died); `None`, it is outstanding.
    fn start(&mut self, request: InvocationRequest) -> Option<InvocationReport> {
        if let Some(reason) = &self.ended {
            return Some(InvocationReport::not_run(reason));
        }
        let limit = request.guest_timeout;
        match self.send(&Invoke(request)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                // Alive but not reading: stuck, and of no more use to anyone.
                self.worker.kill();
                let reason = format!(
                    "the worker process running this test's guest (pid {}) did not take the \
                     request {e}; it was stopped",
                    self.worker.pid
                );
                self.ended = Some(reason.clone());
                return Some(InvocationReport::not_run(&reason));
            }
            Err(e) => {
                return Some(self.worker_died(&format!("before it took the request ({e})")));
            }
        }
        self.outstanding = Some(Outstanding {
            sent: Instant::now(),
            limit,
        });
        None
    }

    /// Settles what the read of the outstanding request's report says about the worker.
    fn conclude(&mut self, answer: std::io::Result<Option<InvocationReport>>) -> InvocationReport {
        let Some(request) = self.outstanding.take() else {
            return InvocationReport::not_run("no request is waiting for a report");
        };
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
                self.worker.kill();
                self.ended = Some(SESSION_ENDED.to_owned());
                InvocationReport {
                    outcome: Outcome::TimedOut {
                        limit: request.limit,
                    },
                    ..InvocationReport::not_run("")
                }
            }
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                let reason = format!(
                    "the worker process running this test's guest (pid {}) sent a report that \
                     cannot be read ({e}); it was stopped",
                    self.worker.pid
                );
                // A worker that breaks the protocol is not trusted further.
                self.worker.kill();
                self.ended = Some(reason.clone());
                InvocationReport::not_run(&reason)
            }
            Ok(None) | Err(_) => {
                self.worker_died(&format!("{:?} into the request", request.sent.elapsed()))
            }
        }
    }

    /// When the outstanding request's worker has had its limit and grace.
    fn deadline(&self) -> Option<Instant> {
        self.outstanding.and_then(Outstanding::deadline)
    }

    fn worker_died(&mut self, when: &str) -> InvocationReport {
        let reason = format!(
            "the worker process running this test's guest (pid {}) died {when}: it crashed or \
             was killed",
            self.worker.pid
        );
        self.ended = Some(reason.clone());
        self.outstanding = None;
        InvocationReport::not_run(&reason)
    }

    fn send(&mut self, message: &Invoke) -> std::io::Result<()> {
        let frame = protocol::encode(message)?;
        let mut written = 0;
        let deadline = Instant::now() + WORKER_GRACE;
        while written < frame.len() {
            match (&self.stream).write(&frame[written..]) {
                Ok(n) => written += n,
                // The worker reads as fast as it can; a large body fills the buffer.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(std::io::Error::new(
                            ErrorKind::TimedOut,
                            format!("within {WORKER_GRACE:?}"),
                        ));
                    }
                    poll(&self.stream, PollFlags::OUT, Some(left))?;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read_report_blocking(&mut self) -> std::io::Result<Option<InvocationReport>> {
        let deadline = self.deadline();
        loop {
            match self.read_some() {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                done => return done,
            }
            let left = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if left.is_some_and(|left| left.is_zero()) {
                return Err(ErrorKind::TimedOut.into());
            }
            poll(&self.stream, PollFlags::IN, left)?;
        }
    }

    async fn read_report_async(&mut self) -> std::io::Result<Option<InvocationReport>> {
        let deadline = self.deadline();
        let fd = SocketFd(self.stream.as_raw_fd());
        // SAFETY: the descriptor is `self.stream`'s, which stays open and unchanged while
        // this function holds `self`; `readiness` is dropped (deregistered) before it returns.
        #[allow(unsafe_code)]
        let readiness = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        let read = async {
            loop {
                let mut ready = readiness.readable().await?;
                match self.read_some() {
                    // Readiness can be stale: a read that would block clears it.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => ready.clear_ready(),
                    done => return done,
                }
            }
        };
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline.into(), read)
                .await
                .unwrap_or_else(|_| Err(ErrorKind::TimedOut.into())),
            None => read.await,
        }
    }

    /// Reads what the socket holds of the report: `Ok(Some)` once it is whole, `Ok(None)`
    /// when the worker hung up, `WouldBlock` when more is to come.
    fn read_some(&mut self) -> std::io::Result<Option<InvocationReport>> {
        match self.incoming.read_from(&mut &self.stream) {
            Ok(report) => Ok(Some(report)),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The worker process, held by a pidfd from the moment the test learns of it (while it
/// holds the test's connection, so the pid is surely its): a signal through the pidfd
/// reaches that process or none, even once its pid was reused. Kernels before 5.3 have no
/// pidfds; there the pid is used as it is.
struct WorkerProcess {
    pid: u32,
    pidfd: Option<OwnedFd>,
}

impl WorkerProcess {
    fn open(pid: u32) -> Self {
        let pidfd = rustix::process::Pid::from_raw(pid as i32).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        });
        Self { pid, pidfd }
    }

    fn kill(&self) {
        use rustix::process::{Pid, Signal, kill_process, pidfd_send_signal};
        let _ = match &self.pidfd {
            Some(pidfd) => pidfd_send_signal(pidfd, Signal::KILL),
            None => match Pid::from_raw(self.pid as i32) {
                Some(pid) => kill_process(pid, Signal::KILL),
                None => Ok(()),
            },
        };
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

/// Waits until `stream` is ready for `events` or `limit` passes (`None`: no limit). Errors
/// and hang-ups count as ready: the read or write that follows reports them.
fn poll(stream: &UnixStream, events: PollFlags, limit: Option<Duration>) -> std::io::Result<()> {
    let limit = limit.map(|left| {
        // Rounded up, so that a wait never ends just before its deadline.
        let left = left.saturating_add(Duration::from_micros(999));
        Timespec {
            tv_sec: left.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: left.subsec_nanos().into(),
        }
    });
    let mut watch = [PollFd::new(stream, events)];
    match rustix::event::poll(&mut watch, limit.as_ref()) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
