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
            let mut out = Family::default();
            out.start(
                "handoff_testsuites_running",
                "gauge",
                "Runs of a suite going on now.",
            );
            for (suite, n) in &m.running {
                out.sample(&[("suite", suite)], *n as f64);
            }
            out.start(
                "handoff_testsuites_started_total",
                "counter",
                "Runs of a suite started since the monitor started.",
            );
            for (suite, n) in &m.started {
                out.sample(&[("suite", suite)], *n as f64);
            }
            out.start(
                "handoff_tests_run_total",
                "counter",
                "Tests run to an end, by result (passed, failed, flaky, soft_failed, skipped).",
            );
            for ((suite, result), n) in &m.tests_run {
                out.sample(&[("suite", suite), ("result", result)], *n as f64);
            }
            out.start(
                "handoff_test_duration_seconds",
                "gauge",
                "How long a test's last attempt took.",
            );
            for ((suite, test), seconds) in &m.duration {
                out.sample(&[("suite", suite), ("test", test)], *seconds);
            }
            out.start(
                "edge_test_monitor_schedule_skipped_total",
                "counter",
                "Scheduled runs not started because the suite's previous run had not ended.",
            );
            for (suite, n) in &m.schedule_skipped {
                out.sample(&[("suite", suite)], *n as f64);
            }
            out.text
        })
    }
}

/// The text format, one metric family after another.
#[derive(Default)]
struct Family {
    text: String,
    name: String,
}

impl Family {
    fn start(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        self.name = name.to_owned();
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        let _ = writeln!(self.text, "{}{{{}}} {value}", self.name, labels.join(","));
    }
}

/// A label value as Prometheus's text format writes it.
fn esc(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_prometheus_text_with_escaped_labels() {
        let m = Metrics::default();
        m.know_suite("staging");
        m.run_started("staging");
        m.test_ran("staging", "odd \"name\"\\", "flaky", 0.25);
        let text = m.render();
        assert!(text.contains("# TYPE handoff_testsuites_running gauge\n"));
        assert!(text.contains("handoff_testsuites_running{suite=\"staging\"} 1\n"));
        assert!(text.contains("handoff_tests_run_total{suite=\"staging\",result=\"flaky\"} 1\n"));
        assert!(text.contains(
            "handoff_test_duration_seconds{suite=\"staging\",test=\"odd \\\"name\\\"\\\\\"} 0.25\n"
        ));
    }
}
