//! A guest crate is rebuilt when its sources change, and only then: test processes skip
//! cargo when the last build is newer than every source it was built from.
//!
//! Each step runs in a child process (this binary's ignored `helper_*` test), as a test
//! process resolves a service once.

#[path = "support/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;

use edge_test::{Edge, Service};

/// A guest crate written by the test into the target directory, so that it can be edited.
fn probe_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rebuild-probe")
}

edge_test::register_service!("rebuild-probe", || Service::guest_crate(probe_dir()));

fn write_probe(dir: &Path, body: &str) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("src/main.rs"),
        format!(
            "#[fastly::main]\nfn main(_req: fastly::Request) -> Result<fastly::Response, fastly::Error> {{\n    \
             Ok(fastly::Response::from_body({body:?}))\n}}\n"
        ),
    )
    .unwrap();
    if dir.join("Cargo.lock").exists() {
        return;
    }
    // First time: the misbehave guest's manifest and lock file under another name, so that
    // its dependencies are already built in the guests' target directory.
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/misbehave");
    for file in ["Cargo.toml", "Cargo.lock"] {
        let text = std::fs::read_to_string(guests.join(file)).unwrap();
        std::fs::write(
            dir.join(file),
            text.replace("misbehave-guest", "edge-test-rebuild-probe"),
        )
        .unwrap();
    }
    // The renamed package sorts elsewhere: let cargo put the lock file in its own order now,
    // not during the first build (which would make the next process build again).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "update",
            "--workspace",
            "--offline",
            "--quiet",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo update --workspace on the probe");
}

/// Returns once the file system's clock (coarser than the system's on most machines) has
/// moved past the probe's last change, as it has by the time anyone runs tests after an
/// edit: a build that starts in the same tick as an edit is, rightly, not trusted to
/// include it.
fn let_the_file_clock_pass(dir: &Path) {
    let modified = |file: &Path| std::fs::metadata(file).unwrap().modified().unwrap();
    let edited = ["src/main.rs", "Cargo.toml", "Cargo.lock"]
        .map(|file| modified(&dir.join(file)))
        .into_iter()
        .max()
        .unwrap();
    let marker = dir.join("clock");
    for _ in 0..100_000 {
        std::fs::write(&marker, b"").unwrap();
        if modified(&marker) > edited {
            return;
        }
        std::thread::yield_now();
    }
    panic!(
        "the file clock did not move past the edits in {}",
        dir.display()
    );
}

/// Runs the helper in a fresh test process: what it printed, and whether cargo ran.
fn serve_once() -> (String, bool) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "helper_print_body", "--nocapture"])
        .env(process::HELPER_ENV, "helper_print_body")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "helper failed:\n{stdout}{stderr}");
    let body = stdout
        .lines()
        .find_map(|l| l.strip_prefix("body: "))
        .unwrap_or_else(|| panic!("no body in:\n{stdout}"))
        .to_owned();
    (
        body,
        stderr.contains("edge-test: building guest `rebuild-probe`"),
    )
}

#[test]
fn an_edited_guest_is_rebuilt_and_an_unchanged_one_is_not() {
    let dir = probe_dir();
    let first = format!("first {}", std::process::id());
    write_probe(&dir, &first);
    let_the_file_clock_pass(&dir);
    let (body, _) = serve_once();
    assert_eq!(body, first);

    let (body, built) = serve_once();
    assert_eq!(body, first);
    assert!(
        !built,
        "nothing changed, yet cargo was asked to build the guest"
    );

    let second = format!("second {}", std::process::id());
    write_probe(&dir, &second);
    let_the_file_clock_pass(&dir);
    let (body, built) = serve_once();
    assert!(built, "the guest's source changed, yet it was not rebuilt");
    // The running host compiled the first module; the new one gets a template of its own.
    assert_eq!(body, second);
}

#[test]
#[ignore = "run by an_edited_guest_is_rebuilt_and_an_unchanged_one_is_not"]
fn helper_print_body() {
    if !process::asked_to_run("helper_print_body") {
        return;
    }
    let edge = Edge::start("rebuild-probe", "probe").expect("the probe guest starts");
    println!("body: {}", edge.get("/").send_blocking().text());
}
