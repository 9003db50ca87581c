//! The monitor's shared state: its configuration, database, metrics, each suite's queue of
//! runs, and the flags that drain and stop it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::config::{Config, Partition};
use super::metrics::Metrics;
use super::store::{self, Run, Store};

pub(crate) struct Monitor {
    pub config: Config,
    /// Whose runs these are in a database several monitors may share: a restart recovers
    /// only its own.
    pub owner: String,
    store: Mutex<Store>,
    pub metrics: Metrics,
    /// Set on shutdown: no test attempt starts, no run is scheduled.
    pub draining: AtomicBool,
    /// Set when the shutdown's grace is over: running attempts are stopped.
    pub stop_now: AtomicBool,
    queues: Mutex<BTreeMap<String, VecDeque<i64>>>,
    queued: Condvar,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Monitor {
    pub fn open(config: Config, owner: String) -> store::Result<Self> {
        let store = Store::open(&config.database)?;
        let metrics = Metrics::default();
        for suite in &config.suites {
            metrics.know_suite(&suite.name);
        }
        Ok(Self {
            owner,
            store: Mutex::new(store),
            metrics,
            draining: AtomicBool::new(false),
            stop_now: AtomicBool::new(false),
            queues: Mutex::new(
                config
                    .suites
                    .iter()
                    .map(|s| (s.name.clone(), VecDeque::new()))
                    .collect(),
            ),
            queued: Condvar::new(),
            config,
        })
    }

    pub fn store<T>(&self, f: impl FnOnce(&Store) -> store::Result<T>) -> store::Result<T> {
        f(&self.store.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Records a run of `suite` and queues it; with a `key` another request with the same
    /// key gets the same run (`false`) and queues nothing.
    pub fn request_run(
        &self,
        suite: &str,
        key: Option<&str>,
        trigger: &str,
        partition: Option<Partition>,
    ) -> Result<(Run, bool), String> {
        let suite = self.config.suite(suite)?;
        if self.draining() {
            return Err("the monitor is shutting down: it starts no run".to_owned());
        }
        let partition = partition.or(suite.partition).map(|p| p.to_string());
        let (run, created) = self.store(|s| {
            s.create_run(
                &suite.name,
                key,
                trigger,
                partition.as_deref(),
                &self.owner,
                now_ms(),
            )
        })?;
        if created {
            self.enqueue(&suite.name, run.id);
        }
        Ok((run, created))
    }

    pub fn enqueue(&self, suite: &str, run: i64) {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.entry(suite.to_owned()).or_default().push_back(run);
        self.queued.notify_all();
    }

    /// The next queued run of `suite`, waiting up to `wait`.
    pub fn next_run(&self, suite: &str, wait: Duration) -> Option<i64> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if queues.get(suite).is_none_or(|q| q.is_empty()) {
            queues = self
                .queued
                .wait_timeout(queues, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        queues.get_mut(suite).and_then(VecDeque::pop_front)
    }

    /// After a restart: this monitor's runs that were going on are resumed (queued again,
    /// the tests that had not ended to be run) or marked interrupted.
    pub fn recover(&self) -> store::Result<Vec<i64>> {
        let now = now_ms();
        let mut resumed = Vec::new();
        for run in self.store(|s| s.unfinished_runs(&self.owner))? {
            let known = self.config.suite(&run.suite).is_ok();
            let resume = self.config.resume_interrupted && known;
            self.store(|s| {
                s.recover_tests(run.id, resume, now)?;
                if resume {
                    s.note_run(run.id, "resumed after the monitor restarted")
                } else {
                    s.finish_run(
                        run.id,
                        "interrupted",
                        Some(if known {
                            "interrupted: the monitor stopped during it"
                        } else {
                            "interrupted: its suite is no longer configured"
                        }),
                        now,
                    )
                }
            })?;
            if resume {
                self.enqueue(&run.suite, run.id);
                resumed.push(run.id);
            }
        }
        Ok(resumed)
    }
}
