//! The monitor's configuration: a TOML file, then environment variables, then flags, each
//! overriding the one before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::schedule::Schedule;

/// What the monitor runs, where it keeps results and where it listens.
#[derive(Clone, Debug)]
pub struct Config {
    /// The SQLite database of runs.
    pub database: PathBuf,
    /// Where the page, the API and `/metrics` are served.
    pub listen: String,
    /// POSTed a JSON summary of each failed run.
    pub webhook: Option<String>,
    /// How long one try of the webhook may take.
    pub webhook_timeout: Duration,
    /// The page's address as the webhook's readers reach it (links in its summary).
    pub public_url: Option<String>,
    /// After a restart, runs that were going on are resumed (`true`) or only marked
    /// interrupted.
    pub resume_interrupted: bool,
    /// On shutdown, how long running tests may go on before they are stopped.
    pub shutdown_grace: Duration,
    pub retention: Retention,
    pub suites: Vec<Suite>,
}

/// How long results are kept.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The most runs kept per suite (the newest).
    pub max_runs_per_suite: Option<u32>,
    /// Runs older than this many days are deleted.
    pub max_age_days: Option<u32>,
}

/// One e2e suite: test binaries, the environment that points them at a deployment, and when
/// and how they run.
#[derive(Clone, Debug)]
pub struct Suite {
    pub name: String,
    /// libtest test binaries (`cargo test --no-run` prints them).
    pub binaries: Vec<PathBuf>,
    /// Substrings a test's name must contain (any of them), as libtest's filters.
    pub filter: Vec<String>,
    /// Substrings of tests not to run.
    pub skip: Vec<String>,
    /// Set for the test binaries: `EDGE_TEST_TARGET_<SERVICE>` and the like.
    pub env: BTreeMap<String, String>,
    pub schedule: Option<Schedule>,
    /// How many times a failed test is run again; a test that passes on a retry is flaky.
    pub retries: u32,
    /// Substrings of tests whose failure is soft: recorded, shown, not failing the run.
    pub soft_fail: Vec<String>,
    /// How long one attempt of one test may take.
    pub test_timeout: Duration,
    /// How many tests run at once.
    pub jobs: usize,
    /// This monitor's share of the suite, as nextest's `count:M/N`.
    pub partition: Option<Partition>,
}

/// `count:M/N`: the M-th of N shares of each binary's tests, taken in turn (nextest's
/// counted partitioning).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub share: usize,
    pub of: usize,
}

impl std::str::FromStr for Partition {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "the partition `{text}` is not `count:M/N` with 1 <= M <= N (for example \
                 `count:1/3`)"
            )
        };
        let (m, n) = text
            .strip_prefix("count:")
            .and_then(|r| r.split_once('/'))
            .ok_or_else(bad)?;
        let (share, of) = (
            m.parse::<usize>().map_err(|_| bad())?,
            n.parse::<usize>().map_err(|_| bad())?,
        );
        if share == 0 || share > of {
            return Err(bad());
        }
        Ok(Self { share, of })
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "count:{}/{}", self.share, self.of)
    }
}

impl Partition {
    /// Whether the `index`-th test of a binary is in this share.
    pub fn takes(&self, index: usize) -> bool {
        index % self.of == self.share - 1
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    database: Option<PathBuf>,
    listen: Option<String>,
    webhook: Option<String>,
    webhook_timeout_secs: Option<u64>,
    public_url: Option<String>,
    resume_interrupted: Option<bool>,
    shutdown_grace_secs: Option<u64>,
    #[serde(default)]
    retention: Retention,
    #[serde(default, rename = "suite")]
    suites: Vec<SuiteFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    name: String,
    binaries: Vec<PathBuf>,
    #[serde(default)]
    filter: Vec<String>,
    #[serde(default)]
    skip: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    schedule: Option<String>,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    soft_fail: Vec<String>,
    test_timeout_secs: Option<u64>,
    jobs: Option<usize>,
    partition: Option<String>,
}

/// Overrides from the command line (flags) or the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub database: Option<PathBuf>,
    pub listen: Option<String>,
    pub webhook: Option<String>,
    pub partition: Option<Partition>,
}

/// The environment's overrides: `EDGE_TEST_MONITOR_DATABASE`, `_LISTEN`, `_WEBHOOK`,
/// `_PARTITION`.
pub fn from_env() -> Result<Overrides, String> {
    let var = |name: &str| std::env::var(format!("EDGE_TEST_MONITOR_{name}")).ok();
    Ok(Overrides {
        database: var("DATABASE").map(PathBuf::from),
        listen: var("LISTEN"),
        webhook: var("WEBHOOK"),
        partition: var("PARTITION")
            .map(|p| {
                p.parse()
                    .map_err(|e| format!("EDGE_TEST_MONITOR_PARTITION: {e}"))
            })
            .transpose()?,
    })
}

impl Config {
    /// Reads `path`, then applies `overrides` in order (the environment's, then the flags').
    pub fn load(path: &Path, overrides: &[Overrides]) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the monitor's configuration {}: {e} (name it with --config or \
                 EDGE_TEST_MONITOR_CONFIG)",
                path.display()
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, overrides)
            .map_err(|e| format!("the monitor's configuration {}: {e}", path.display()))
    }

    /// Parses a configuration's text; relative paths in it are from `base`.
    pub fn parse(text: &str, base: &Path, overrides: &[Overrides]) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut config = Config {
            database: base.join(
                file.database
                    .unwrap_or_else(|| "edge-test-monitor.sqlite".into()),
            ),
            listen: file.listen.unwrap_or_else(|| "127.0.0.1:7878".to_owned()),
            webhook: file.webhook,
            webhook_timeout: Duration::from_secs(file.webhook_timeout_secs.unwrap_or(10)),
            public_url: file.public_url,
            resume_interrupted: file.resume_interrupted.unwrap_or(true),
            shutdown_grace: Duration::from_secs(file.shutdown_grace_secs.unwrap_or(30)),
            retention: file.retention,
            suites: Vec::new(),
        };
        if file.suites.is_empty() {
            return Err("it names no suite: add a [[suite]] with a name and its binaries".into());
        }
        for suite in file.suites {
            if config.suites.iter().any(|s| s.name == suite.name) {
                return Err(format!("two suites are named `{}`", suite.name));
            }
            config.suites.push(suite.into_suite(base)?);
        }
        for o in overrides {
            if let Some(database) = &o.database {
                config.database = database.clone();
            }
            if let Some(listen) = &o.listen {
                config.listen = listen.clone();
            }
            if let Some(webhook) = &o.webhook {
                config.webhook = Some(webhook.clone());
            }
            if let Some(partition) = o.partition {
                for suite in &mut config.suites {
                    suite.partition = Some(partition);
                }
            }
        }
        Ok(config)
    }

    pub fn suite(&self, name: &str) -> Result<&Suite, String> {
        self.suites.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.suites.iter().map(|s| s.name.as_str()).collect();
            format!(
                "no suite is named `{name}`: the configuration has {}",
                names.join(", ")
            )
        })
    }
}

impl SuiteFile {
    fn into_suite(self, base: &Path) -> Result<Suite, String> {
        let name = self.name;
        if name.is_empty() || name.contains(['/', '?', '#', '"', '<', '>']) {
            return Err(format!(
                "the suite name `{name}` is empty or has one of / ? # \" < >"
            ));
        }
        if self.binaries.is_empty() {
            return Err(format!("suite `{name}` names no test binary in `binaries`"));
        }
        let schedule = self
            .schedule
            .map(|s| s.parse::<Schedule>())
            .transpose()
            .map_err(|e| format!("suite `{name}`: {e}"))?;
        let partition = self
            .partition
            .map(|p| p.parse::<Partition>())
            .transpose()
            .map_err(|e| format!("suite `{name}`: {e}"))?;
        let jobs = self.jobs.unwrap_or(1);
        if jobs == 0 {
            return Err(format!("suite `{name}`: `jobs` must be at least 1"));
        }
        Ok(Suite {
            binaries: self.binaries.iter().map(|b| base.join(b)).collect(),
            filter: self.filter,
            skip: self.skip,
            env: self.env,
            schedule,
            retries: self.retries,
            soft_fail: self.soft_fail,
            test_timeout: Duration::from_secs(self.test_timeout_secs.unwrap_or(300)),
            jobs,
            partition,
            name,
        })
    }
}

impl Suite {
    pub(crate) fn selects(&self, test: &str) -> bool {
        (self.filter.is_empty() || self.filter.iter().any(|f| test.contains(f.as_str())))
            && !self.skip.iter().any(|s| test.contains(s.as_str()))
    }

    pub(crate) fn is_soft(&self, test: &str) -> bool {
        self.soft_fail.iter().any(|s| test.contains(s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_reads_its_suites_and_the_overrides_win() {
        let text = r#"
            database = "runs.sqlite"
            webhook = "http://127.0.0.1:9/hook"
            [retention]
            max_runs_per_suite = 10
            [[suite]]
            name = "staging"
            binaries = ["bin/e2e"]
            env = { EDGE_TEST_TARGET_TODO = "https://staging.example" }
            schedule = "*/5 * * * *"
            retries = 2
        "#;
        let flags = Overrides {
            listen: Some("127.0.0.1:1".into()),
            partition: Some("count:2/3".parse().unwrap()),
            ..Overrides::default()
        };
        let c = Config::parse(text, Path::new("/etc/m"), &[flags]).unwrap();
        assert_eq!(c.database, Path::new("/etc/m/runs.sqlite"));
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.retention.max_runs_per_suite, Some(10));
        let s = c.suite("staging").unwrap();
        assert_eq!(s.binaries, [Path::new("/etc/m/bin/e2e")]);
        assert_eq!(s.retries, 2);
        assert_eq!(s.partition, Some(Partition { share: 2, of: 3 }));
        assert!(c.suite("prod").unwrap_err().contains("has staging"));
    }

    #[test]
    fn bad_configurations_name_the_problem() {
        for (text, says) in [
            ("", "names no suite"),
            (
                "[[suite]]\nname = \"a\"\nbinaries = []",
                "names no test binary",
            ),
            (
                "[[suite]]\nname = \"a\"\nbinaries = [\"x\"]\nschedule = \"* *\"",
                "has 2 fields",
            ),
            (
                "[[suite]]\nname = \"a\"\nbinaries = [\"x\"]\npartition = \"hash:1/2\"",
                "count:M/N",
            ),
            (
                "[[suite]]\nname = \"a\"\nbinary = [\"x\"]",
                "unknown field `binary`",
            ),
        ] {
            let e = Config::parse(text, Path::new("."), &[]).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_partition_takes_every_nth_test() {
        let p: Partition = "count:2/3".parse().unwrap();
        let taken: Vec<usize> = (0..7).filter(|i| p.takes(*i)).collect();
        assert_eq!(taken, [1, 4]);
        assert!("count:0/2".parse::<Partition>().is_err());
        assert!("count:3/2".parse::<Partition>().is_err());
    }
}
