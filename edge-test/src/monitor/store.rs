//! The monitor's record of runs, tests and attempts: one SQLite database, which several
//! monitors on one machine may share (WAL, and a busy timeout for the writers).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::config::Retention;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    suite TEXT NOT NULL,
    key TEXT UNIQUE,
    trigger TEXT NOT NULL,
    partition TEXT,
    status TEXT NOT NULL,
    note TEXT,
    queued_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_suite ON runs (suite, id);
CREATE TABLE IF NOT EXISTS tests (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    binary TEXT NOT NULL,
    name TEXT NOT NULL,
    result TEXT NOT NULL,
    duration_ms INTEGER,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS tests_by_run ON tests (run_id);
CREATE INDEX IF NOT EXISTS tests_by_name ON tests (name, run_id);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    test_id INTEGER NOT NULL REFERENCES tests (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    duration_ms INTEGER NOT NULL,
    output TEXT NOT NULL,
    started_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_test ON attempts (test_id);
";

/// A run of a suite. `status`: queued, running, passed, failed, interrupted.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub id: i64,
    pub suite: String,
    pub key: Option<String>,
    /// `cli`, `api`, `page`, `schedule`.
    pub trigger: String,
    pub partition: Option<String>,
    pub status: String,
    pub note: Option<String>,
    pub queued_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// A test of a run. `result`: pending, running, passed, failed, flaky, soft_failed,
/// skipped, interrupted.
#[derive(Clone, Debug, Serialize)]
pub struct Test {
    pub id: i64,
    pub run_id: i64,
    pub binary: String,
    pub name: String,
    pub result: String,
    pub duration_ms: Option<i64>,
    /// Why it was skipped, or what stopped it.
    pub detail: Option<String>,
}

/// One run of one test. `outcome`: passed, failed, timed_out, skipped, interrupted.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub number: i64,
    pub outcome: String,
    pub duration_ms: i64,
    pub output: String,
    pub started_at: i64,
}

/// How a run's tests ended.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub passed: i64,
    pub failed: i64,
    pub flaky: i64,
    pub soft_failed: i64,
    pub skipped: i64,
    pub interrupted: i64,
    pub pending: i64,
}

pub struct Store {
    db: Connection,
}

pub type Result<T> = std::result::Result<T, String>;

fn sql(e: rusqlite::Error) -> String {
    format!("the monitor's database: {e}")
}

const RUN_COLUMNS: &str =
    "id, suite, key, trigger, partition, status, note, queued_at, started_at, finished_at";

fn run_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        id: row.get(0)?,
        suite: row.get(1)?,
        key: row.get(2)?,
        trigger: row.get(3)?,
        partition: row.get(4)?,
        status: row.get(5)?,
        note: row.get(6)?,
        queued_at: row.get(7)?,
        started_at: row.get(8)?,
        finished_at: row.get(9)?,
    })
}

fn test_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Test> {
    Ok(Test {
        id: row.get(0)?,
        run_id: row.get(1)?,
        binary: row.get(2)?,
        name: row.get(3)?,
        result: row.get(4)?,
        duration_ms: row.get(5)?,
        detail: row.get(6)?,
    })
}

const TEST_COLUMNS: &str = "id, run_id, binary, name, result, duration_ms, detail";

impl Store {
    /// Every row `query` gives, each made a `T` by `row`.
    fn all<T>(
        &self,
        query: &str,
        params: impl rusqlite::Params,
        row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut q = self.db.prepare(query).map_err(sql)?;
        q.query_map(params, row)
            .map_err(sql)?
            .collect::<rusqlite::Result<_>>()
            .map_err(sql)
    }

    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let db = Connection::open(path)
            .map_err(|e| format!("cannot open the database {}: {e}", path.display()))?;
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        db.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        db.pragma_update(None, "foreign_keys", "ON").map_err(sql)?;
        db.execute_batch(SCHEMA).map_err(sql)?;
        Ok(Self { db })
    }

    /// A new queued run of `owner`'s, or the run `key` already names (`false`): a key
    /// makes a request to run idempotent, also between monitors sharing the database.
    pub fn create_run(
        &self,
        suite: &str,
        key: Option<&str>,
        trigger: &str,
        partition: Option<&str>,
        owner: &str,
        now: i64,
    ) -> Result<(Run, bool)> {
        let inserted = self
            .db
            .execute(
                "INSERT INTO runs (suite, key, trigger, partition, owner, status, queued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6) ON CONFLICT (key) DO NOTHING",
                params![suite, key, trigger, partition, owner, now],
            )
            .map_err(sql)?;
        let run = match (inserted, key) {
            (0, Some(key)) => self.run_by_key(key)?,
            _ => self.run(self.db.last_insert_rowid())?,
        };
        Ok((
            run.ok_or("the run just written is not in the database")?,
            inserted == 1,
        ))
    }

    fn run_by_key(&self, key: &str) -> Result<Option<Run>> {
        self.db
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE key = ?1"),
                [key],
                run_row,
            )
            .optional()
            .map_err(sql)
    }

    pub fn run(&self, id: i64) -> Result<Option<Run>> {
        self.db
            .query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_row,
            )
            .optional()
            .map_err(sql)
    }

    /// The newest `limit` runs, of one suite or of all.
    pub fn runs(&self, suite: Option<&str>, limit: i64) -> Result<Vec<Run>> {
        self.all(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE ?1 IS NULL OR suite = ?1
                 ORDER BY id DESC LIMIT ?2"
            ),
            params![suite, limit],
            run_row,
        )
    }

    /// `owner`'s runs queued or running: after a restart, those it did not finish.
    pub fn unfinished_runs(&self, owner: &str) -> Result<Vec<Run>> {
        self.all(
            &format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE status IN ('queued', 'running')
                 AND owner = ?1 ORDER BY id"
            ),
            [owner],
            run_row,
        )
    }

    /// Whether `owner` has a run of `suite` queued or going on.
    pub fn suite_is_busy(&self, suite: &str, owner: &str) -> Result<bool> {
        self.db
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE suite = ?1 AND owner = ?2
                 AND status IN ('queued', 'running'))",
                [suite, owner],
                |r| r.get(0),
            )
            .map_err(sql)
    }

    pub fn start_run(&self, id: i64, now: i64) -> Result<()> {
        self.db
            .execute(
                "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, ?2)
                 WHERE id = ?1",
                params![id, now],
            )
            .map(drop)
            .map_err(sql)
    }

    pub fn finish_run(&self, id: i64, status: &str, note: Option<&str>, now: i64) -> Result<()> {
        if status == "interrupted" {
            self.db
                .execute(
                    "UPDATE tests SET result = 'interrupted'
                     WHERE run_id = ?1 AND result IN ('pending', 'running')",
                    [id],
                )
                .map_err(sql)?;
        }
        self.db
            .execute(
                "UPDATE runs SET status = ?2, note = COALESCE(?3, note), finished_at = ?4
                 WHERE id = ?1",
                params![id, status, note, now],
            )
            .map(drop)
            .map_err(sql)
    }

    pub fn note_run(&self, id: i64, note: &str) -> Result<()> {
        self.db
            .execute("UPDATE runs SET note = ?2 WHERE id = ?1", params![id, note])
            .map(drop)
            .map_err(sql)
    }

    pub fn add_tests(&self, run_id: i64, tests: &[(String, String)]) -> Result<()> {
        let tx = self.db.unchecked_transaction().map_err(sql)?;
        for (binary, name) in tests {
            tx.execute(
                "INSERT INTO tests (run_id, binary, name, result) VALUES (?1, ?2, ?3, 'pending')",
                params![run_id, binary, name],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    pub fn tests(&self, run_id: i64) -> Result<Vec<Test>> {
        self.all(
            &format!("SELECT {TEST_COLUMNS} FROM tests WHERE run_id = ?1 ORDER BY id"),
            [run_id],
            test_row,
        )
    }

    pub fn set_result(
        &self,
        test_id: i64,
        result: &str,
        duration_ms: Option<i64>,
        detail: Option<&str>,
    ) -> Result<()> {
        self.db
            .execute(
                "UPDATE tests SET result = ?2, duration_ms = ?3, detail = ?4 WHERE id = ?1",
                params![test_id, result, duration_ms, detail],
            )
            .map(drop)
            .map_err(sql)
    }

    /// Tests a monitor left running when it stopped: each gets an `interrupted` attempt
    /// saying so, and is pending again (to be resumed) or interrupted.
    pub fn recover_tests(&self, run_id: i64, resume: bool, now: i64) -> Result<()> {
        let running: Vec<i64> = self.all(
            "SELECT id FROM tests WHERE run_id = ?1 AND result = 'running'",
            [run_id],
            |r| r.get(0),
        )?;
        for test in running {
            let number = self.attempts(test)?.len() as i64 + 1;
            self.add_attempt(
                test,
                &Attempt {
                    number,
                    outcome: "interrupted".into(),
                    duration_ms: 0,
                    output: "the monitor stopped while this attempt ran (a restart or a crash); \
                             its output is lost"
                        .into(),
                    started_at: now,
                },
            )?;
            self.set_result(
                test,
                if resume { "pending" } else { "interrupted" },
                None,
                None,
            )?;
        }
        Ok(())
    }

    pub fn add_attempt(&self, test_id: i64, attempt: &Attempt) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO attempts (test_id, number, outcome, duration_ms, output, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    test_id,
                    attempt.number,
                    attempt.outcome,
                    attempt.duration_ms,
                    attempt.output,
                    attempt.started_at
                ],
            )
            .map(drop)
            .map_err(sql)
    }

    pub fn attempts(&self, test_id: i64) -> Result<Vec<Attempt>> {
        self.all(
            "SELECT number, outcome, duration_ms, output, started_at FROM attempts
                 WHERE test_id = ?1 ORDER BY number",
            [test_id],
            |r| {
                Ok(Attempt {
                    number: r.get(0)?,
                    outcome: r.get(1)?,
                    duration_ms: r.get(2)?,
                    output: r.get(3)?,
                    started_at: r.get(4)?,
                })
            },
        )
    }

    pub fn counts(&self, run_id: i64) -> Result<Counts> {
        let mut counts = Counts::default();
        let rows: Vec<(String, i64)> = self.all(
            "SELECT result, COUNT(*) FROM tests WHERE run_id = ?1 GROUP BY result",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        for (result, n) in rows {
            match result.as_str() {
                "passed" => counts.passed = n,
                "failed" => counts.failed = n,
                "flaky" => counts.flaky = n,
                "soft_failed" => counts.soft_failed = n,
                "skipped" => counts.skipped = n,
                "interrupted" => counts.interrupted = n,
                _ => counts.pending += n,
            }
        }
        Ok(counts)
    }

    /// A test's results over its suite's newest `limit` runs, newest first: (run, test
    /// id, result).
    pub fn history(&self, suite: &str, name: &str, limit: i64) -> Result<Vec<(i64, i64, String)>> {
        self.all(
            "SELECT t.run_id, t.id, t.result FROM tests t JOIN runs r ON r.id = t.run_id
             WHERE r.suite = ?1 AND t.name = ?2 ORDER BY t.run_id DESC LIMIT ?3",
            params![suite, name, limit],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
    }

    /// The names of the tests a suite has run, most recently run first.
    pub fn test_names(&self, suite: &str) -> Result<Vec<String>> {
        self.all(
            "SELECT t.name FROM tests t JOIN runs r ON r.id = t.run_id WHERE r.suite = ?1
                 GROUP BY t.name ORDER BY MAX(t.run_id) DESC, t.name",
            [suite],
            |r| r.get(0),
        )
    }

    /// Of a test's finished results over its suite's newest 100 runs, the share that was
    /// flaky: (flaky, finished).
    pub fn flake_rate(&self, suite: &str, name: &str) -> Result<(i64, i64)> {
        let history = self.history(suite, name, 100)?;
        let finished = history
            .iter()
            .filter(|(_, _, r)| matches!(r.as_str(), "passed" | "failed" | "flaky" | "soft_failed"))
            .count() as i64;
        let flaky = history.iter().filter(|(_, _, r)| r == "flaky").count() as i64;
        Ok((flaky, finished))
    }

    /// Deletes finished runs past the retention policy (their tests and attempts with
    /// them); returns how many.
    pub fn prune(&self, retention: &Retention, now: i64) -> Result<usize> {
        let mut deleted = 0;
        if let Some(days) = retention.max_age_days {
            let before = now - i64::from(days) * 86_400_000;
            deleted += self
                .db
                .execute(
                    "DELETE FROM runs WHERE status NOT IN ('queued', 'running')
                     AND queued_at < ?1",
                    [before],
                )
                .map_err(sql)?;
        }
        if let Some(keep) = retention.max_runs_per_suite {
            deleted += self
                .db
                .execute(
                    "DELETE FROM runs WHERE status NOT IN ('queued', 'running') AND id IN (
                         SELECT id FROM (SELECT id, ROW_NUMBER() OVER (
                             PARTITION BY suite ORDER BY id DESC) AS n FROM runs)
                         WHERE n > ?1)",
                    [keep],
                )
                .map_err(sql)?;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (Store, Scratch) {
        let dir = std::env::temp_dir().join(format!(
            "edge-test-monitor-store-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open(&dir.join("m.sqlite")).unwrap(), Scratch(dir))
    }

    /// A test's database directory, removed when the test is done with it.
    struct Scratch(std::path::PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_key_names_one_run() {
        let (s, _dir) = store();
        let (a, created) = s.create_run("x", Some("k1"), "api", None, "me", 1).unwrap();
        assert!(created);
        let (b, again) = s
            .create_run("x", Some("k1"), "api", None, "other", 2)
            .unwrap();
        assert!(!again);
        assert_eq!(a.id, b.id);
        let (c, _) = s.create_run("x", None, "cli", None, "me", 3).unwrap();
        assert_ne!(c.id, a.id);
    }

    #[test]
    fn retention_deletes_old_and_surplus_finished_runs_with_their_tests() {
        let (s, _dir) = store();
        let day = 86_400_000;
        let mut ids = Vec::new();
        for (i, queued) in [0, 5 * day, 20 * day, 21 * day].into_iter().enumerate() {
            let (run, _) = s.create_run("x", None, "cli", None, "me", queued).unwrap();
            s.add_tests(run.id, &[("b".into(), format!("t{i}"))])
                .unwrap();
            s.finish_run(run.id, "passed", None, queued).unwrap();
            ids.push(run.id);
        }
        // One still running, however old, is kept.
        let (running, _) = s.create_run("x", None, "cli", None, "me", 0).unwrap();
        s.start_run(running.id, 0).unwrap();

        let by_age = Retention {
            max_age_days: Some(15),
            max_runs_per_suite: None,
        };
        assert_eq!(s.prune(&by_age, 22 * day).unwrap(), 2);
        let by_count = Retention {
            max_age_days: None,
            max_runs_per_suite: Some(2),
        };
        // The newest two are the running one and the last finished.
        assert_eq!(s.prune(&by_count, 22 * day).unwrap(), 1);
        let left: Vec<i64> = s.runs(None, 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(left, [running.id, ids[3]]);
        let orphans: i64 =
            s.db.query_row(
                "SELECT COUNT(*) FROM tests WHERE run_id NOT IN (SELECT id FROM runs)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0);
    }
}
