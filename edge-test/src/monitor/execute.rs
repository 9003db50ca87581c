//! Running libtest test binaries: listing their tests, and one test per process (its own
//! output, duration and time limit), the way nextest does.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::config::Suite;

/// What one attempt at one test came to.
#[derive(Debug)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub duration: Duration,
    /// stdout then stderr, cut to [`OUTPUT_LIMIT`].
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// edge-test skipped it (in e2e mode it needs what only a local run has): why.
    Skipped(String),
    Failed,
    TimedOut,
    /// The monitor is shutting down: the attempt was stopped.
    Interrupted,
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Skipped(_) => "skipped",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// How much of an attempt's output is kept: the start and the end of it.
const OUTPUT_LIMIT: usize = 64 * 1024;
/// The line edge-test writes for a test it skipped.
const SKIP_PREFIX: &str = "edge-test: SKIPPED ";

/// The tests of `binary` the suite selects, in the binary's order, within the suite's
/// partition.
pub fn list(suite: &Suite, binary: &Path, stop: &AtomicBool) -> Result<Vec<String>, String> {
    let listed = |ignored: bool| -> Result<Vec<String>, String> {
        let mut args = vec!["--list", "--format", "terse"];
        if ignored {
            args.push("--ignored");
        }
        let ran = run_bounded(suite, binary, &args, stop).map_err(|e| {
            format!(
                "suite `{}`: cannot run the test binary {}: {e} (build it with `cargo test \
                 --no-run` and name the path it prints)",
                suite.name,
                binary.display()
            )
        })?;
        match ran.status {
            Some(status) if status.success() => Ok(ran
                .stdout
                .lines()
                .filter_map(|l| l.strip_suffix(": test"))
                .map(str::to_owned)
                .collect()),
            Some(status) => Err(format!(
                "suite `{}`: {} --list failed ({status}): {}",
                suite.name,
                binary.display(),
                ran.stderr.trim()
            )),
            None => Err(format!(
                "suite `{}`: {} --list did not end within {:?} (the suite's \
                 test_timeout_secs), or the monitor is shutting down",
                suite.name,
                binary.display(),
                suite.test_timeout
            )),
        }
    };
    let ignored = listed(true)?;
    let tests: Vec<String> = listed(false)?
        .into_iter()
        .filter(|t| !ignored.contains(t) && suite.selects(t))
        .collect();
    Ok(tests
        .into_iter()
        .enumerate()
        .filter(|(i, _)| suite.partition.is_none_or(|p| p.takes(*i)))
        .map(|(_, t)| t)
        .collect())
}

/// A test binary's process, run to its end or stopped.
struct Ran {
    /// `None`: stopped (`stopped` says why) or lost.
    status: Option<std::process::ExitStatus>,
    stopped: Option<Outcome>,
    stdout: String,
    stderr: String,
}

/// Runs `binary` with `args` and the suite's environment, killed past the suite's time
/// limit (`TimedOut`) or once `stop` is set (`Interrupted`).
fn run_bounded(
    suite: &Suite,
    binary: &Path,
    args: &[&str],
    stop: &AtomicBool,
) -> std::io::Result<Ran> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(args)
        .envs(&suite.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let readers = [
        Drain::start(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        Drain::start(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ];
    let mut stopped = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        if started.elapsed() > suite.test_timeout {
            stopped = Some(Outcome::TimedOut);
        } else if stop.load(Ordering::SeqCst) {
            stopped = Some(Outcome::Interrupted);
        }
        if stopped.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A process the test started may hold the pipes past the test's end: what it wrote
    // by then is kept, and the run goes on.
    let deadline = Instant::now() + PIPE_GRACE;
    let [stdout, stderr] = readers.map(|r| r.finish(deadline));
    Ok(Ran {
        status,
        stopped,
        stdout,
        stderr,
    })
}

/// Runs `test` of `binary` alone, within the suite's time limit; stops it early when
/// `stop` is set.
pub fn attempt(suite: &Suite, binary: &Path, test: &str, stop: &AtomicBool) -> AttemptResult {
    let started = Instant::now();
    let ran = run_bounded(
        suite,
        binary,
        &[test, "--exact", "--test-threads", "1"],
        stop,
    );
    let duration = started.elapsed();
    let ran = match ran {
        Ok(ran) => ran,
        Err(e) => {
            return AttemptResult {
                outcome: Outcome::Failed,
                duration,
                output: format!("cannot run the test binary {}: {e}", binary.display()),
            };
        }
    };
    let mut output = format!("{}{}", ran.stdout, ran.stderr);
    let outcome = match ran.stopped {
        Some(Outcome::TimedOut) => {
            output.push_str(&format!(
                "\nedge-test-monitor: stopped after {:?}, the suite's test_timeout_secs\n",
                suite.test_timeout
            ));
            Outcome::TimedOut
        }
        Some(other) => {
            output.push_str("\nedge-test-monitor: stopped, the monitor is shutting down\n");
            other
        }
        None => match ran.status {
            Some(s) if s.success() => {
                let ran_one = ran.stdout.contains("test result: ok. 1 passed");
                match ran.stderr.lines().find_map(|l| l.strip_prefix(SKIP_PREFIX)) {
                    Some(line) => Outcome::Skipped(
                        line.split_once(": ")
                            .map_or(line, |(_, why)| why)
                            .to_owned(),
                    ),
                    None if ran_one => Outcome::Passed,
                    None => {
                        output.push_str(
                            "\nedge-test-monitor: the binary exited 0 without running the \
                             test (was it renamed or removed?)\n",
                        );
                        Outcome::Failed
                    }
                }
            }
            Some(s) => {
                output.push_str(&format!(
                    "\nedge-test-monitor: the test process ended: {s}\n"
                ));
                Outcome::Failed
            }
            None => Outcome::Failed,
        },
    };
    AttemptResult {
        outcome,
        duration,
        output: cut(output),
    }
}

/// How long a pipe may stay open once its test process has ended.
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// A pipe read to its end on a thread of its own.
struct Drain {
    read: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Drain {
    fn start(stream: Option<Box<dyn Read + Send>>) -> Self {
        let read = std::sync::Arc::<std::sync::Mutex<Vec<u8>>>::default();
        let sink = read.clone();
        let thread = std::thread::spawn(move || {
            let Some(mut stream) = stream else { return };
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = stream.read(&mut chunk) {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        });
        Self { read, thread }
    }

    /// What was read: all of it, or what had come by `deadline` if the pipe is still open
    /// then (its thread is left to end with the pipe).
    fn finish(self, deadline: Instant) -> String {
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let bytes = self.read.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Keeps the start and the end of a long output (the panic is usually at the end).
fn cut(output: String) -> String {
    if output.len() <= OUTPUT_LIMIT {
        return output;
    }
    let half = OUTPUT_LIMIT / 2;
    let start = output.floor_char_boundary(half);
    let end = output.ceil_char_boundary(output.len() - half);
    format!(
        "{}\n[... {} bytes not kept ...]\n{}",
        &output[..start],
        end - start,
        &output[end..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_output_keeps_its_start_and_end() {
        let long = format!("start{}end", "x".repeat(OUTPUT_LIMIT));
        let kept = cut(long);
        assert!(kept.starts_with("start") && kept.ends_with("end"));
        assert!(kept.contains("bytes not kept") && kept.len() < OUTPUT_LIMIT + 100);
    }
}
