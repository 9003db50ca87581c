//! On a failed run, a JSON summary POSTed to the configured webhook: the suite, the run's
//! page, its counts, and each failed test with the end of its last attempt's output.

use std::time::Duration;

use serde_json::json;

use super::state::Monitor;

/// How much of a failed test's output the summary carries (its end: the panic).
const OUTPUT_TAIL: usize = 4096;
const ATTEMPTS: u32 = 3;

/// The summary of run `id`.
pub(crate) fn summary(monitor: &Monitor, id: i64) -> Result<serde_json::Value, String> {
    monitor.store(|s| {
        let run = s.run(id)?.ok_or("the run is gone")?;
        let tests = s.tests(id)?;
        let mut failed = Vec::new();
        for t in tests.iter().filter(|t| t.result == "failed") {
            let attempts = s.attempts(t.id)?;
            let output = attempts.last().map_or("", |a| a.output.as_str());
            let start = output.ceil_char_boundary(output.len().saturating_sub(OUTPUT_TAIL));
            failed.push(json!({
                "test": t.name,
                "binary": t.binary,
                "attempts": attempts.len(),
                "detail": t.detail,
                "output": &output[start..],
            }));
        }
        let named = |result: &str| -> Vec<&str> {
            tests
                .iter()
                .filter(|t| t.result == result)
                .map(|t| t.name.as_str())
                .collect()
        };
        let page = monitor
            .config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", monitor.config.listen));
        Ok(json!({
            "event": "run_failed",
            "suite": run.suite,
            "run": run.id,
            "status": run.status,
            "trigger": run.trigger,
            "partition": run.partition,
            "note": run.note,
            "url": format!("{}/runs/{}", page.trim_end_matches('/'), run.id),
            "counts": s.counts(id)?,
            "failed": failed,
            "flaky": named("flaky"),
            "soft_failed": named("soft_failed"),
        }))
    })
}

/// POSTs run `id`'s summary to the webhook, trying again twice; a webhook that stays
/// down is said on stderr and does not stop the monitor.
pub(crate) fn notify(monitor: &Monitor, id: i64) {
    let Some(url) = monitor.config.webhook.clone() else {
        return;
    };
    let body = match summary(monitor, id) {
        Ok(summary) => summary.to_string().into_bytes(),
        Err(e) => {
            eprintln!("edge-test-monitor: no webhook for run {id}: {e}");
            return;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("edge-test-monitor: no webhook for run {id}: no runtime: {e}");
            return;
        }
    };
    let mut why = String::new();
    for attempt in 1..=ATTEMPTS {
        let sent = runtime.block_on(edge_test_core::__private::post(
            &url,
            "application/json",
            body.clone(),
            monitor.config.webhook_timeout,
        ));
        match sent {
            Ok(status) if (200..300).contains(&status) => return,
            Ok(status) => why = format!("it answered {status}"),
            Err(e) => why = e,
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
        }
    }
    eprintln!("edge-test-monitor: the webhook {url} for failed run {id}: {why} ({ATTEMPTS} tries)");
}
