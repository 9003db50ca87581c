//! The results page, rendered on the server: plain HTML and CSS, forms for the buttons, no
//! script. `/` lists the suites, `/suites/<name>` a suite's runs and each test's history as
//! a timeline, `/runs/<id>` a run's tests with the output of every failed attempt.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::schedule::format_utc;
use super::state::{Monitor, now_ms};
use super::store::{Counts, Run};

/// How many runs a timeline shows.
const TIMELINE_RUNS: i64 = 40;

const STYLE: &str = "
body { font: 15px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f5f6f8; }
header { background: #1d2330; color: #fff; padding: 12px 24px; }
header a { color: #fff; text-decoration: none; font-weight: 600; }
main { padding: 16px 24px; max-width: 1200px; }
table { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 20px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e3e5ea; vertical-align: top; }
th { background: #eceef2; font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 13px; }
.passed { background: #2e8540; } .failed { background: #c62828; } .flaky { background: #ef8a00; }
.soft_failed { background: #8e5ec4; } .skipped { background: #8a909c; }
.interrupted { background: #4a4f59; } .pending, .running, .queued { background: #3f73c9; }
.timeline { display: flex; gap: 2px; flex-wrap: wrap; }
.timeline a { display: block; width: 14px; height: 22px; border-radius: 2px; }
pre { background: #10141c; color: #e8eaf0; padding: 10px; overflow-x: auto; font-size: 13px; white-space: pre-wrap; }
form.inline { display: inline; margin: 0; }
details.failure summary { font-weight: 600; margin: 12px 0 4px; cursor: pointer; }
button { background: #3f73c9; color: #fff; border: 0; border-radius: 4px; padding: 5px 12px; font-size: 14px; cursor: pointer; }
.muted { color: #6b7280; }
";

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{} - edge-test monitor</title><style>{STYLE}</style></head>\
         <body><header><a href=\"/\">edge-test monitor</a></header><main>{body}</main></body></html>\n",
        escape(title)
    )
}

fn badge(result: &str) -> String {
    format!(
        "<span class=\"badge {0}\">{1}</span>",
        escape(result),
        escape(&result.replace('_', " "))
    )
}

/// A key for a form's one submission: pressing the button twice starts one run.
fn fresh_key() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "page-{}-{}-{}",
        now_ms(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn run_button(suite: &str, label: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"/suites/{0}/runs\">\
         <input type=\"hidden\" name=\"key\" value=\"{1}\"><button type=\"submit\">{2}</button></form>",
        escape(suite),
        fresh_key(),
        escape(label)
    )
}

fn counts_text(c: &Counts) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (c.passed, "passed"),
        (c.failed, "failed"),
        (c.flaky, "flaky"),
        (c.soft_failed, "soft failed"),
        (c.skipped, "skipped"),
        (c.interrupted, "interrupted"),
        (c.pending, "to run"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), format_utc)
}

fn took(run: &Run) -> String {
    match (run.started_at, run.finished_at) {
        (Some(a), Some(b)) => format!("{:.1} s", (b - a) as f64 / 1000.0),
        _ => "-".to_owned(),
    }
}

fn runs_table(monitor: &Monitor, runs: &[Run]) -> Result<String, String> {
    let mut html = String::from(
        "<table class=\"runs\"><tr><th>Run</th><th>Status</th><th>Tests</th><th>Trigger</th>\
         <th>Queued</th><th>Took</th><th>Note</th></tr>",
    );
    for run in runs {
        let counts = monitor.store(|s| s.counts(run.id))?;
        let _ = write!(
            html,
            "<tr><td><a href=\"/runs/{0}\">#{0}</a></td><td>{1}</td><td>{2}</td><td>{3}{4}</td>\
             <td>{5}</td><td>{6}</td><td class=\"muted\">{7}</td></tr>",
            run.id,
            badge(&run.status),
            escape(&counts_text(&counts)),
            escape(&run.trigger),
            run.partition
                .as_deref()
                .map(|p| format!(" ({})", escape(p)))
                .unwrap_or_default(),
            when(Some(run.queued_at)),
            took(run),
            escape(run.note.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</table>");
    Ok(html)
}

pub(crate) fn index(monitor: &Monitor) -> Result<String, String> {
    let mut body = String::from(
        "<h1>Suites</h1><table class=\"suites\"><tr><th>Suite</th><th>Last run</th>\
         <th>Schedule</th><th>Next scheduled</th><th></th></tr>",
    );
    let now = now_ms() / 1000;
    for suite in &monitor.config.suites {
        let last = monitor.store(|s| s.runs(Some(&suite.name), 1))?;
        let last = match last.first() {
            Some(run) => format!(
                "<a href=\"/runs/{0}\">#{0}</a> {1} <span class=\"muted\">{2}</span>",
                run.id,
                badge(&run.status),
                when(Some(run.queued_at))
            ),
            None => "<span class=\"muted\">never run</span>".to_owned(),
        };
        let (schedule, next) = match &suite.schedule {
            Some(s) => (
                format!("<code>{}</code>", escape(&s.to_string())),
                s.next_after(now as u64)
                    .map_or_else(|| "never".to_owned(), |t| format_utc(t as i64 * 1000)),
            ),
            None => ("on demand".to_owned(), "-".to_owned()),
        };
        let _ = write!(
            body,
            "<tr><td><a href=\"/suites/{0}\">{1}</a></td><td>{last}</td><td>{schedule}</td>\
             <td>{next}</td><td>{2}</td></tr>",
            escape(&suite.name),
            escape(&suite.name),
            run_button(&suite.name, "Run now"),
        );
    }
    body.push_str("</table><h2>Latest runs</h2>");
    let runs = monitor.store(|s| s.runs(None, 20))?;
    body.push_str(&runs_table(monitor, &runs)?);
    Ok(layout("Suites", &body))
}

pub(crate) fn suite(monitor: &Monitor, name: &str) -> Result<Option<String>, String> {
    let Ok(suite) = monitor.config.suite(name) else {
        return Ok(None);
    };
    let mut body = format!(
        "<h1>{} {}</h1><h2>Tests</h2><table class=\"tests\"><tr><th>Test</th><th>Flake rate</th>\
         <th>History (newest first)</th></tr>",
        escape(&suite.name),
        run_button(&suite.name, "Run now")
    );
    for test in monitor.store(|s| s.test_names(name))? {
        let (flaky, finished) = monitor.store(|s| s.flake_rate(name, &test))?;
        let rate = if finished == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.0}% ({flaky} of {finished})",
                100.0 * flaky as f64 / finished as f64
            )
        };
        let mut timeline = String::from("<div class=\"timeline\">");
        for (run, test_id, result) in monitor.store(|s| s.history(name, &test, TIMELINE_RUNS))? {
            let _ = write!(
                timeline,
                "<a class=\"{0}\" href=\"/runs/{run}#test-{test_id}\" title=\"run #{run}: {0}\"></a>",
                escape(&result)
            );
        }
        timeline.push_str("</div>");
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{rate}</td><td>{timeline}</td></tr>",
            escape(&test)
        );
    }
    body.push_str("</table><h2>Runs</h2>");
    let runs = monitor.store(|s| s.runs(Some(name), 50))?;
    body.push_str(&runs_table(monitor, &runs)?);
    Ok(Some(layout(&suite.name, &body)))
}

pub(crate) fn run(monitor: &Monitor, id: i64) -> Result<Option<String>, String> {
    let Some(run) = monitor.store(|s| s.run(id))? else {
        return Ok(None);
    };
    let tests = monitor.store(|s| s.tests(id))?;
    let counts = monitor.store(|s| s.counts(id))?;
    let mut body = format!(
        "<h1>Run #{0} of <a href=\"/suites/{1}\">{2}</a> {3}</h1>\
         <p>{4}. Triggered by {5}{6}, queued {7}, took {8}. {9}</p><p>{10}</p>",
        run.id,
        escape(&run.suite),
        escape(&run.suite),
        badge(&run.status),
        escape(&counts_text(&counts)),
        escape(&run.trigger),
        run.partition
            .as_deref()
            .map(|p| format!(", partition {}", escape(p)))
            .unwrap_or_default(),
        when(Some(run.queued_at)),
        took(&run),
        escape(run.note.as_deref().unwrap_or("")),
        if monitor.config.suite(&run.suite).is_ok() {
            run_button(&run.suite, "Run again")
        } else {
            String::new()
        },
    );
    body.push_str(
        "<table class=\"tests\"><tr><th>Test</th><th>Result</th><th>Attempts</th>\
         <th>Duration</th></tr>",
    );
    let mut failures = String::new();
    for test in &tests {
        let attempts = monitor.store(|s| s.attempts(test.id))?;
        let _ = write!(
            body,
            "<tr id=\"test-{0}\"><td>{1}</td><td>{2} <span class=\"muted\">{3}</span></td>\
             <td>{4}</td><td>{5}</td></tr>",
            test.id,
            escape(&test.name),
            badge(&test.result),
            escape(test.detail.as_deref().unwrap_or("")),
            attempts.len(),
            test.duration_ms.map_or_else(
                || "-".to_owned(),
                |ms| format!("{:.2} s", ms as f64 / 1000.0)
            ),
        );
        let last = attempts.len();
        for attempt in attempts
            .iter()
            .filter(|a| a.outcome != "passed" && a.outcome != "skipped")
        {
            // The last attempt open, earlier ones a click away.
            let open = if attempt.number as usize == last {
                " open"
            } else {
                ""
            };
            let _ = write!(
                failures,
                "<details class=\"failure\" id=\"attempt-{0}-{1}\"{open}><summary>{2}: attempt \
                 {1} {3}</summary><pre>{4}</pre></details>",
                test.id,
                attempt.number,
                escape(&test.name),
                badge(&attempt.outcome),
                escape(&attempt.output)
            );
        }
    }
    body.push_str("</table>");
    if !failures.is_empty() {
        body.push_str("<h2>Failed attempts</h2>");
        body.push_str(&failures);
    }
    Ok(Some(layout(&format!("Run #{}", run.id), &body)))
}
