//! What the runner prints, in libtest's words (`running N tests`, `test x ... ok`, the
//! failures with what each printed, `test result: ...`), so that people and tools reading
//! `cargo test`'s output read the runner's the same way.

use std::io::Write;
use std::time::Duration;

use super::args::LibtestArgs;
use crate::executor::Outcome;
use crate::logs::LogLine;

/// Where a run's output goes: the runner's own stdout and stderr, or frames to a thin
/// runner, which writes them to its own (`thin_runner`).
pub(crate) struct Streams<'w> {
    pub out: Box<dyn Write + 'w>,
    pub err: Box<dyn Write + 'w>,
}

impl Streams<'_> {
    pub(crate) fn of_this_process() -> Self {
        Streams {
            out: Box::new(std::io::stdout()),
            err: Box::new(std::io::stderr()),
        }
    }
}

/// How one test (or one listing) ended.
#[derive(Debug, Clone)]
pub(super) struct TestResult {
    pub name: String,
    pub verdict: Verdict,
    pub output: Output,
    pub outcome: Outcome,
}

/// What a guest printed and logged.
#[derive(Debug, Clone, Default)]
pub(super) struct Output {
    /// Its stdout and stderr as written, interleaved, when the executor caught them (a
    /// forked worker); else they are among `lines`, one line a write.
    pub stdio: Option<String>,
    /// Its log lines (`<endpoint> :: <message>`), in order.
    pub lines: Vec<LogLine>,
}

impl Output {
    /// What it wrote to `stream` (`"stdout"`, `"stderr"`), line by line: a listing, a
    /// panic's message. Caught stdio holds both streams together.
    pub(super) fn lines_of(&self, stream: &str) -> Vec<&str> {
        match &self.stdio {
            Some(stdio) => stdio.lines().collect(),
            None => self
                .lines
                .iter()
                .filter(|l| l.endpoint == stream)
                .map(|l| l.message.as_str())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    Passed,
    /// Why, in words.
    Failed(String),
    Ignored,
}

impl TestResult {
    pub(super) fn ignored(name: String) -> Self {
        Self {
            name,
            verdict: Verdict::Ignored,
            output: Output::default(),
            outcome: Outcome::Completed,
        }
    }

    pub(super) fn failed(name: String, why: String) -> Self {
        Self {
            name,
            verdict: Verdict::Failed(why),
            output: Output::default(),
            outcome: Outcome::NotRun {
                reason: String::new(),
            },
        }
    }
}

/// How much of a guest's output is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filter {
    /// Everything (a listing, or nextest's single test: the guest's libtest speaks).
    Nothing,
    /// The guest's libtest ran one test quietly for the runner, which reports it: its
    /// `running 1 test`, progress mark and summary are left out.
    LibtestFraming,
}

/// What is left of a quiet libtest run of one test once its own framing is taken out:
/// `\nrunning 1 test\n`, then the test's output, then (unless the guest stopped) a progress
/// mark (`.`, `F`, `i`) written straight after it, failures named, and `test result: ...`.
fn without_framing(stdio: &str) -> &str {
    let body = stdio
        .strip_prefix("\nrunning 1 test\n")
        .or_else(|| stdio.strip_prefix("running 1 test\n"))
        .unwrap_or(stdio);
    let Some(summary) = body.rfind("\ntest result: ") else {
        // The guest stopped mid-test: all of it is the test's.
        return body;
    };
    let mut head = body[..summary].trim_end_matches('\n');
    // `failures:` blocks name the test; with --nocapture they hold nothing else.
    while let Some(block) = head.rfind("\nfailures:") {
        let tail = &head[block + "\nfailures:".len()..];
        if tail.lines().all(|l| l.is_empty() || l.starts_with("    ")) {
            head = head[..block].trim_end_matches('\n');
        } else {
            break;
        }
    }
    // Quiet libtest marks the result after the test's output: a character, or a line
    // naming a failure.
    let last_line = head.rfind('\n').map_or(0, |i| i + 1);
    if head[last_line..].ends_with(" --- FAILED") {
        return &head[..last_line];
    }
    head.strip_suffix(['.', 'F', 'i']).unwrap_or(head)
}

fn is_framing(line: &LogLine) -> bool {
    let message = line.message.as_str();
    line.endpoint == "stdout"
        && (matches!(message, "running 1 test" | "." | "F" | "i" | "failures:")
            || message.starts_with("test result: ")
            || message.starts_with("    ") && !message.trim().contains(' '))
}

/// Writes a guest's output where it wrote it: its stdio as it was (to stdout when caught
/// together, else stdout lines to stdout and stderr lines to stderr), log endpoints to
/// stdout as viceroy writes them (`<endpoint> :: <message>`).
pub(super) fn print_output(output: &Output, filter: Filter, to: &mut Streams) {
    let Streams {
        out: stdout,
        err: stderr,
    } = to;
    if let Some(stdio) = &output.stdio {
        let shown = match filter {
            Filter::Nothing => stdio.as_str(),
            Filter::LibtestFraming => without_framing(stdio),
        };
        let _ = stdout.write_all(shown.as_bytes());
        if !shown.is_empty() && !shown.ends_with('\n') {
            let _ = writeln!(stdout);
        }
    }
    for line in &output.lines {
        if filter == Filter::LibtestFraming && is_framing(line) {
            continue;
        }
        let _ = match line.endpoint.as_str() {
            "stdout" => writeln!(stdout, "{}", line.message),
            "stderr" => writeln!(stderr, "{}", line.message),
            endpoint => writeln!(stdout, "{endpoint} :: {}", line.message),
        };
    }
    let _ = stdout.flush();
}

/// The output as one block of text, for a failure's section.
fn as_text(output: &Output) -> String {
    let mut text = String::new();
    if let Some(stdio) = &output.stdio {
        text.push_str(without_framing(stdio));
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
    }
    for line in output.lines.iter().filter(|l| !is_framing(l)) {
        match line.endpoint.as_str() {
            "stdout" | "stderr" => text.push_str(&line.message),
            endpoint => {
                text.push_str(endpoint);
                text.push_str(" :: ");
                text.push_str(&line.message);
            }
        }
        text.push('\n');
    }
    text
}

/// Prints the results as they arrive, then the summary.
pub(super) struct Printer {
    quiet: bool,
    nocapture: bool,
    show_output: bool,
    filtered_out: usize,
    passed: Vec<TestResult>,
    failed: Vec<TestResult>,
    ignored: usize,
    /// Progress marks on the current line, in quiet mode.
    marks: usize,
}

impl Printer {
    pub(super) fn new(args: &LibtestArgs, tests: usize, filtered_out: usize) -> Self {
        println!(
            "\nrunning {tests} test{}",
            if tests == 1 { "" } else { "s" }
        );
        Self {
            quiet: args.quiet,
            nocapture: args.nocapture,
            show_output: args.show_output,
            filtered_out,
            passed: Vec::new(),
            failed: Vec::new(),
            ignored: 0,
            marks: 0,
        }
    }

    pub(super) fn print(&mut self, result: TestResult) {
        if self.nocapture {
            print_output(
                &result.output,
                Filter::LibtestFraming,
                &mut Streams::of_this_process(),
            );
        }
        let (word, mark) = match &result.verdict {
            Verdict::Passed => ("ok", "."),
            Verdict::Failed(_) => ("FAILED", "F"),
            Verdict::Ignored => ("ignored", "i"),
        };
        if self.quiet {
            print!("{mark}");
            self.marks += 1;
            if self.marks == 88 {
                println!();
                self.marks = 0;
            }
        } else {
            println!("test {} ... {word}", result.name);
        }
        let _ = std::io::stdout().flush();
        match result.verdict {
            Verdict::Passed => self.passed.push(result),
            Verdict::Failed(_) => self.failed.push(result),
            Verdict::Ignored => self.ignored += 1,
        }
    }

    /// Prints the failures (with what each printed) and the summary; the exit status.
    pub(super) fn finish(mut self, elapsed: Duration) -> u8 {
        if self.quiet && self.marks > 0 {
            println!();
        }
        if self.show_output && !self.passed.is_empty() {
            println!("\nsuccesses:\n");
            self.passed.sort_by(|a, b| a.name.cmp(&b.name));
            for result in &self.passed {
                println!(
                    "---- {} stdout ----\n{}",
                    result.name,
                    as_text(&result.output)
                );
            }
        }
        self.failed.sort_by(|a, b| a.name.cmp(&b.name));
        if !self.failed.is_empty() {
            println!("\nfailures:\n");
            for result in &self.failed {
                let Verdict::Failed(why) = &result.verdict else {
                    continue;
                };
                let output = if self.nocapture {
                    String::new()
                } else {
                    as_text(&result.output)
                };
                println!("---- {} stdout ----\n{output}{why}\n", result.name);
            }
            println!("\nfailures:");
            for result in &self.failed {
                println!("    {}", result.name);
            }
        }
        println!(
            "\ntest result: {}. {} passed; {} failed; {} ignored; 0 measured; {} filtered out; \
             finished in {:.2}s\n",
            if self.failed.is_empty() {
                "ok"
            } else {
                "FAILED"
            },
            self.passed.len(),
            self.failed.len(),
            self.ignored,
            self.filtered_out,
            elapsed.as_secs_f64()
        );
        if self.failed.is_empty() {
            0
        } else {
            super::TESTS_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(endpoint: &str, message: &str) -> LogLine {
        LogLine {
            endpoint: endpoint.into(),
            message: message.into(),
        }
    }

    #[test]
    fn libtests_framing_is_left_out_of_caught_output() {
        // A pass, as the guest's libtest writes it with --quiet --nocapture.
        let passed = "\nrunning 1 test\ncomputing the key\n.\n\ntest result: ok. 1 passed; 0 \
                      failed; 0 ignored; 0 measured; 15 filtered out; finished in 0.00s\n\n";
        assert_eq!(without_framing(passed), "computing the key\n");
        // A test returning an error: its message, then libtest naming it.
        let failed = "\nrunning 1 test\nError: \"went wrong\"\nfailing::returns_an_error --- FAILED\n\
                      \nfailures:\n\nfailures:\n    failing::returns_an_error\n\n\
                      test result: FAILED. 0 passed; 1 failed\n\n";
        assert_eq!(without_framing(failed), "Error: \"went wrong\"\n");
        let marked = "\nrunning 1 test\nError: \"went wrong\"\nF\n\nfailures:\n\nfailures:\n    \
                      failing::returns_an_error\n\ntest result: FAILED. 0 passed; 1 failed\n\n";
        assert_eq!(without_framing(marked), "Error: \"went wrong\"\n");
        // Output that ends without a newline keeps its own last character.
        assert_eq!(
            without_framing("\nrunning 1 test\ndone..\n\ntest result: ok.\n"),
            "done."
        );
        // A guest that stopped (a panic aborts it) wrote no summary: all of it is the test's.
        let stopped = "\nrunning 1 test\nthread 'main' panicked at src/main.rs:3:5:\nboom\n";
        assert_eq!(
            without_framing(stopped),
            "thread 'main' panicked at src/main.rs:3:5:\nboom\n"
        );
    }

    #[test]
    fn libtests_framing_is_left_out_of_log_lines() {
        let output = Output {
            stdio: None,
            lines: vec![
                line("stdout", "running 1 test"),
                line("stdout", "computing the key"),
                line("audit", "key computed"),
                line("stderr", "thread 'tests::a' panicked at src/main.rs:3:5:"),
                line("stdout", "."),
                line("stdout", "test result: ok. 1 passed; 0 failed"),
            ],
        };
        assert_eq!(
            as_text(&output),
            "computing the key\naudit :: key computed\n\
             thread 'tests::a' panicked at src/main.rs:3:5:\n"
        );
    }
}
