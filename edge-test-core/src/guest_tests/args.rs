//! The runner's command line: its own options, the test module cargo names, and the libtest
//! arguments after it, sorted into what the runner does itself (which tests run, how their
//! output is shown) and what it leaves to the guest's own libtest (which tests a filter
//! selects), so that filters mean exactly what they mean natively.

use std::path::PathBuf;
use std::time::Duration;

/// How long one test may run unless `--guest-timeout-ms` or `EDGE_TEST_GUEST_TIMEOUT_MS`
/// says otherwise: a debug build is slow, a loop should still fail within a CI step.
pub(crate) const DEFAULT_TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What `edge-test-runner [options] <module> [libtest args]` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunnerArgs {
    /// The test module cargo built (`target/wasm32-wasip1/<profile>/deps/<crate>-<hash>.wasm`).
    pub module: PathBuf,
    /// `--fastly-toml`, when given (else `EDGE_TEST_FASTLY_TOML`, else the crate's own).
    pub fastly_toml: Option<PathBuf>,
    /// `--guest-timeout-ms`, when given.
    pub timeout: Option<Duration>,
    /// `--no-http-cache`: the guest runs without edge-test's HTTP cache shim.
    pub no_http_cache: bool,
    pub libtest: LibtestArgs,
}

/// The libtest arguments, as the runner reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LibtestArgs {
    /// `--list`: the guest's own listing is passed through.
    pub list: bool,
    /// Arguments that choose tests (filters, `--exact`, `--skip X`) and any the runner does
    /// not know, handed to the guest's libtest when it lists the tests (which then rejects
    /// an unknown one with its own message).
    pub selection: Vec<String>,
    /// The positional filters among `selection`.
    pub filters: Vec<String>,
    pub exact: bool,
    /// `--skip` was given (it filters, so "filtered out" must be counted).
    pub skips: bool,
    pub ignored: Ignored,
    pub nocapture: bool,
    pub show_output: bool,
    pub quiet: bool,
    /// `--format`, passed to the guest when it lists.
    pub format: Option<String>,
    pub test_threads: Option<usize>,
}

/// Which of the ignored tests run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Ignored {
    /// Only the others (the default).
    #[default]
    Skip,
    /// Only the ignored ones (`--ignored`).
    Only,
    /// All (`--include-ignored`).
    Include,
}

impl Ignored {
    /// The libtest option that asks for it, if any.
    pub(crate) fn flag(self) -> Option<&'static str> {
        match self {
            Ignored::Skip => None,
            Ignored::Only => Some("--ignored"),
            Ignored::Include => Some("--include-ignored"),
        }
    }
}

impl LibtestArgs {
    /// One test named exactly (`<name> --exact`, how nextest runs each test): the guest's
    /// libtest is handed the arguments as they are, with nothing to list first.
    pub(crate) fn is_single_exact(&self) -> bool {
        self.exact && self.filters.len() == 1 && !self.skips && !self.list
    }

    /// The arguments as given, for the guest's libtest to run one test (nextest's call):
    /// its output is shown as it comes (`--nocapture`; a panic aborts the instance, and
    /// libtest's own capture would lose its message) and runs on the one thread a wasm
    /// guest has.
    pub(crate) fn for_single_run(&self) -> Vec<String> {
        let mut args = self.selection.clone();
        args.extend(self.ignored.flag().map(str::to_owned));
        args.extend(["--nocapture".into(), "--test-threads=1".into()]);
        args
    }
}

/// Reads the runner's arguments (after its program name). `Err` says what is wrong and how
/// to call it.
pub(crate) fn parse(args: &[String]) -> Result<RunnerArgs, String> {
    let mut fastly_toml = None;
    let mut timeout = None;
    let mut no_http_cache = false;
    let mut rest = args.iter();
    let module = loop {
        let Some(arg) = rest.next() else {
            return Err(format!(
                "no test module to run. {USAGE}\n(cargo passes the module when \
                 `edge-test-runner` is the target runner: see the README, \"unit tests inside \
                 the guest\")"
            ));
        };
        let (name, inline) = split_option(arg);
        match name {
            "--fastly-toml" => fastly_toml = Some(PathBuf::from(value(name, inline, &mut rest)?)),
            "--guest-timeout-ms" => {
                let text = value(name, inline, &mut rest)?;
                let ms: u64 = text.parse().map_err(|_| {
                    format!("--guest-timeout-ms takes a whole number of milliseconds, not {text:?}")
                })?;
                timeout = Some(Duration::from_millis(ms));
            }
            "--no-http-cache" => no_http_cache = true,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            option if option.starts_with('-') => {
                return Err(format!(
                    "unknown runner option {arg:?} before the test module. {USAGE}"
                ));
            }
            _ => break PathBuf::from(arg),
        }
    };
    let libtest = parse_libtest(rest.cloned().collect())?;
    Ok(RunnerArgs {
        module,
        fastly_toml,
        timeout,
        no_http_cache,
        libtest,
    })
}

const USAGE: &str = "usage: edge-test-runner [--fastly-toml PATH] [--guest-timeout-ms N] \
                     [--no-http-cache] <test module.wasm> [libtest arguments]";

fn split_option(arg: &str) -> (&str, Option<&str>) {
    match arg.split_once('=') {
        Some((name, value)) if name.starts_with("--") => (name, Some(value)),
        _ => (arg, None),
    }
}

fn value<'a>(
    name: &str,
    inline: Option<&'a str>,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<&'a str, String> {
    inline
        .or_else(|| rest.next().map(String::as_str))
        .ok_or_else(|| format!("{name} needs a value"))
}

fn parse_libtest(args: Vec<String>) -> Result<LibtestArgs, String> {
    let mut parsed = LibtestArgs {
        nocapture: std::env::var_os("RUST_TEST_NOCAPTURE").is_some_and(|v| v != "0"),
        ..LibtestArgs::default()
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (name, inline) = split_option(arg);
        match name {
            "--list" => parsed.list = true,
            "--ignored" => parsed.ignored = Ignored::Only,
            "--include-ignored" => parsed.ignored = Ignored::Include,
            "--nocapture" | "--no-capture" => parsed.nocapture = true,
            "--show-output" => parsed.show_output = true,
            "-q" | "--quiet" => parsed.quiet = true,
            // Already the case for a wasm test binary.
            "--test" => {}
            "--format" => parsed.format = Some(value(name, inline, &mut rest)?.to_owned()),
            "--color" => {
                value(name, inline, &mut rest)?;
            }
            "--test-threads" => {
                let text = value(name, inline, &mut rest)?;
                let threads = text
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .ok_or_else(|| {
                        format!("--test-threads takes a number of threads above 0, not {text:?}")
                    })?;
                parsed.test_threads = Some(threads);
            }
            "--exact" => {
                parsed.exact = true;
                parsed.selection.push(arg.clone());
            }
            "--skip" => {
                let skipped = value(name, inline, &mut rest)?;
                parsed.skips = true;
                parsed
                    .selection
                    .extend(["--skip".to_owned(), skipped.to_owned()]);
            }
            filter if !filter.starts_with('-') => {
                parsed.filters.push(arg.clone());
                parsed.selection.push(arg.clone());
            }
            // libtest's to judge: it names an unknown option itself.
            _ => parsed.selection.push(arg.clone()),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn runner_options_come_before_the_module_and_libtests_after() {
        let args = parse(&strings(&[
            "--fastly-toml",
            "conf/fastly.toml",
            "--guest-timeout-ms=1500",
            "t.wasm",
            "cache",
            "--skip",
            "slow",
            "--nocapture",
            "--test-threads",
            "2",
        ]))
        .unwrap();
        assert_eq!(args.module, PathBuf::from("t.wasm"));
        assert_eq!(args.fastly_toml, Some(PathBuf::from("conf/fastly.toml")));
        assert_eq!(args.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(
            args.libtest.selection,
            strings(&["cache", "--skip", "slow"])
        );
        assert_eq!(args.libtest.filters, strings(&["cache"]));
        assert!(args.libtest.skips && args.libtest.nocapture);
        assert_eq!(args.libtest.test_threads, Some(2));
    }

    #[test]
    fn nextests_calls_are_a_listing_and_a_single_exact_run() {
        let list = parse(&strings(&[
            "t.wasm",
            "--list",
            "--format",
            "terse",
            "--ignored",
        ]));
        let list = list.unwrap().libtest;
        assert!(list.list && list.ignored == Ignored::Only);
        assert_eq!(list.format.as_deref(), Some("terse"));
        let run = parse(&strings(&["t.wasm", "tests::a", "--exact", "--nocapture"]));
        let run = run.unwrap().libtest;
        assert!(run.is_single_exact());
        assert_eq!(
            run.for_single_run(),
            strings(&["tests::a", "--exact", "--nocapture", "--test-threads=1"])
        );
    }

    #[test]
    fn bad_arguments_are_named_with_the_fix() {
        assert!(parse(&[]).unwrap_err().contains("no test module to run"));
        let error = parse(&strings(&["--bogus", "t.wasm"])).unwrap_err();
        assert!(
            error.contains("unknown runner option \"--bogus\""),
            "{error}"
        );
        assert!(error.contains("usage: edge-test-runner"), "{error}");
        let error = parse(&strings(&["--guest-timeout-ms", "soon", "t.wasm"])).unwrap_err();
        assert!(error.contains("not \"soon\""), "{error}");
        let error = parse(&strings(&["t.wasm", "--test-threads=0"])).unwrap_err();
        assert!(error.contains("above 0"), "{error}");
    }
}
