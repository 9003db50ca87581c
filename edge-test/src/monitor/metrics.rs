//! `/metrics`: what the monitor did since it started, in Prometheus's text format. The
//! names are Handoff's, so that dashboards made for it read these too.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    running: BTreeMap<String, i64>,
    started: BTreeMap<String, u64>,
    /// (suite, result) -> tests.
    tests_run: BTreeMap<(String, String), u64>,
    /// (suite, test) -> the last attempt's seconds.
    duration: BTreeMap<(String, String), f64>,
    schedule_skipped: BTreeMap<String, u64>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every suite appears from the start, at zero.
    pub fn know_suite(&self, suite: &str) {
        self.with(|m| {
            m.running.entry(suite.to_owned()).or_default();
            m.started.entry(suite.to_owned()).or_default();
            m.schedule_skipped.entry(suite.to_owned()).or_default();
        });
    }

    pub fn run_started(&self, suite: &str) {
        self.with(|m| {
            *m.running.entry(suite.to_owned()).or_default() += 1;
            *m.started.entry(suite.to_owned()).or_default() += 1;
        });
    }

    pub fn run_ended(&self, suite: &str) {
        self.with(|m| *m.running.entry(suite.to_owned()).or_default() -= 1);
    }

    pub fn test_ran(&self, suite: &str, test: &str, result: &str, seconds: f64) {
        self.with(|m| {
            *m.tests_run
                .entry((suite.to_owned(), result.to_owned()))
                .or_default() += 1;
            m.duration
                .insert((suite.to_owned(), test.to_owned()), seconds);
        });
    }

    pub fn schedule_skipped(&self, suite: &str) {
        self.with(|m| *m.schedule_skipped.entry(suite.to_owned()).or_default() += 1);
    }

    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            family(
                &mut out,
                "handoff_testsuites_running",
                "gauge",
                "Runs of a suite going on now.",
            );
            for (suite, n) in &m.running {
                let _ = writeln!(
                    out,
                    "handoff_testsuites_running{{suite=\"{}\"}} {n}",
                    esc(suite)
                );
            }
            family(
                &mut out,
                "handoff_testsuites_started_total",
                "counter",
                "Runs of a suite started since the monitor started.",
            );
            for (suite, n) in &m.started {
                let _ = writeln!(
                    out,
                    "handoff_testsuites_started_total{{suite=\"{}\"}} {n}",
                    esc(suite)
                );
            }
            family(
                &mut out,
                "handoff_tests_run_total",
                "counter",
                "Tests run to an end, by result (passed, failed, flaky, soft_failed, skipped).",
            );
            for ((suite, result), n) in &m.tests_run {
                let _ = writeln!(
                    out,
                    "handoff_tests_run_total{{suite=\"{}\",result=\"{}\"}} {n}",
                    esc(suite),
                    esc(result)
                );
            }
            family(
                &mut out,
                "handoff_test_duration_seconds",
                "gauge",
                "How long a test's last attempt took.",
            );
            for ((suite, test), seconds) in &m.duration {
                let _ = writeln!(
                    out,
                    "handoff_test_duration_seconds{{suite=\"{}\",test=\"{}\"}} {seconds}",
                    esc(suite),
                    esc(test)
                );
            }
            family(
                &mut out,
                "edge_test_monitor_schedule_skipped_total",
                "counter",
                "Scheduled runs not started because the suite's previous run had not ended.",
            );
            for (suite, n) in &m.schedule_skipped {
                let _ = writeln!(
                    out,
                    "edge_test_monitor_schedule_skipped_total{{suite=\"{}\"}} {n}",
                    esc(suite)
                );
            }
            out
        })
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value as Prometheus's text format writes it.
fn esc(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
