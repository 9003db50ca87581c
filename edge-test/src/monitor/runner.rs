//! A run of a suite: list its tests (once; a resumed run keeps its list), run those not yet
//! ended with retries, record each attempt, then judge the run, call the webhook and apply
//! the retention policy.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use super::config::Suite;
use super::execute::{self, Outcome};
use super::state::{Monitor, now_ms};
use super::store::{Attempt, Test};

/// How a run ended, for the command line.
pub(crate) struct Ended {
    pub status: String,
    pub counts: super::store::Counts,
}

/// Runs run `id` to its end, or until the monitor drains (then it stays unfinished, for
/// the next start to resume).
pub(crate) fn execute(monitor: &Monitor, id: i64) -> Result<Ended, String> {
    let run = monitor
        .store(|s| s.run(id))?
        .ok_or_else(|| format!("run {id} is not in the database"))?;
    let suite = monitor.config.suite(&run.suite)?.clone();
    let partition = run.partition.as_deref().map(str::parse).transpose()?;
    let suite = Suite { partition, ..suite };
    monitor.store(|s| s.start_run(id, now_ms()))?;
    monitor.metrics.run_started(&suite.name);
    let ended = run_tests(monitor, id, &suite);
    monitor.metrics.run_ended(&suite.name);
    let ended = match ended {
        Ok(Some(ended)) => ended,
        Ok(None) => {
            let note = if monitor.config.resume_interrupted {
                "the monitor shut down during this run: its next start resumes it"
            } else {
                "the monitor shut down during this run: its next start marks it interrupted"
            };
            monitor.store(|s| s.note_run(id, note))?;
            return Ok(Ended {
                status: "interrupted".into(),
                counts: monitor.store(|s| s.counts(id))?,
            });
        }
        Err(why) => {
            monitor.store(|s| s.finish_run(id, "failed", Some(&why), now_ms()))?;
            Ended {
                status: "failed".into(),
                counts: monitor.store(|s| s.counts(id))?,
            }
        }
    };
    if ended.status == "failed" {
        super::webhook::notify(monitor, id);
    }
    let pruned = monitor.store(|s| s.prune(&monitor.config.retention, now_ms()))?;
    if pruned > 0 {
        eprintln!("edge-test-monitor: retention deleted {pruned} old run(s)");
    }
    Ok(ended)
}

/// `Ok(None)`: the monitor drained before every test ended.
fn run_tests(monitor: &Monitor, id: i64, suite: &Suite) -> Result<Option<Ended>, String> {
    let mut tests = monitor.store(|s| s.tests(id))?;
    if tests.is_empty() {
        let mut listed = Vec::new();
        for binary in &suite.binaries {
            for name in execute::list(suite, binary, &monitor.stop_now)? {
                listed.push((binary.display().to_string(), name));
            }
        }
        if listed.is_empty() {
            return Err(format!(
                "suite `{}` selects no test in its binaries (check `filter`, `skip` and \
                 `partition`)",
                suite.name
            ));
        }
        monitor.store(|s| s.add_tests(id, &listed))?;
        tests = monitor.store(|s| s.tests(id))?;
    }
    let pending = Mutex::new(
        tests
            .into_iter()
            .filter(|t| t.result == "pending")
            .collect::<Vec<_>>()
            .into_iter(),
    );
    let failure: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..suite.jobs {
            scope.spawn(|| {
                loop {
                    if monitor.draining() {
                        return;
                    }
                    let Some(test) = pending.lock().unwrap_or_else(|p| p.into_inner()).next()
                    else {
                        return;
                    };
                    if let Err(e) = run_test(monitor, suite, &test) {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let counts = monitor.store(|s| s.counts(id))?;
    if counts.pending > 0 {
        return Ok(None);
    }
    let status = if counts.failed > 0 {
        "failed"
    } else {
        "passed"
    };
    monitor.store(|s| s.finish_run(id, status, None, now_ms()))?;
    Ok(Some(Ended {
        status: status.into(),
        counts,
    }))
}

/// Runs one test, again after a failure as the suite's `retries` allow, and records its
/// result: passed, flaky (passed on a retry), failed or soft_failed, skipped.
fn run_test(monitor: &Monitor, suite: &Suite, test: &Test) -> Result<(), String> {
    monitor.store(|s| s.set_result(test.id, "running", None, None))?;
    let binary = PathBuf::from(&test.binary);
    let earlier = monitor.store(|s| s.attempts(test.id))?.len() as i64;
    let mut failures = 0;
    let (result, duration, detail) = loop {
        let started_at = now_ms();
        let attempt = execute::attempt(suite, &binary, &test.name, &monitor.stop_now);
        let number = earlier + i64::from(failures) + 1;
        monitor.store(|s| {
            s.add_attempt(
                test.id,
                &Attempt {
                    number,
                    outcome: attempt.outcome.name().to_owned(),
                    duration_ms: attempt.duration.as_millis() as i64,
                    output: attempt.output.clone(),
                    started_at,
                },
            )
        })?;
        let ms = Some(attempt.duration.as_millis() as i64);
        match attempt.outcome {
            Outcome::Passed if failures > 0 => break ("flaky", ms, None),
            Outcome::Passed => break ("passed", ms, None),
            Outcome::Skipped(why) => break ("skipped", ms, Some(why)),
            Outcome::Interrupted => {
                // Not a result: the test runs again when the run is resumed.
                monitor.store(|s| s.set_result(test.id, "pending", None, None))?;
                return Ok(());
            }
            Outcome::Failed | Outcome::TimedOut => {
                failures += 1;
                if failures <= suite.retries && monitor.draining() {
                    // No new attempt while draining: the retry happens on resume.
                    monitor.store(|s| s.set_result(test.id, "pending", None, None))?;
                    return Ok(());
                }
                if failures > suite.retries || monitor.stop_now.load(Ordering::SeqCst) {
                    let timed_out = attempt.outcome == Outcome::TimedOut;
                    let detail = timed_out.then(|| "timed out".to_owned());
                    if suite.is_soft(&test.name) {
                        break ("soft_failed", ms, detail);
                    }
                    break ("failed", ms, detail);
                }
            }
        }
    };
    monitor.store(|s| s.set_result(test.id, result, duration, detail.as_deref()))?;
    let seconds = duration.unwrap_or(0) as f64 / 1000.0;
    monitor
        .metrics
        .test_ran(&suite.name, &test.name, result, seconds);
    Ok(())
}
