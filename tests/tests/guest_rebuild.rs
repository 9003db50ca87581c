//! A guest crate is rebuilt when its sources change, and only then: test processes skip
//! cargo when the last build is newer than every source it was built from.
//!
//! Each step runs in a child process (this binary's ignored `helper_*` test), as a test
//! process resolves a service once.

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
    let guests = Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/misbehave");
    let manifest = std::fs::read_to_string(guests.join("Cargo.toml"))
        .unwrap()
        .replace("misbehave-guest", "edge-test-rebuild-probe");
    let lock = std::fs::read_to_string(guests.join("Cargo.lock"))
        .unwrap()
        .replace("misbehave-guest", "edge-test-rebuild-probe");
    for (file, text) in [("Cargo.toml", manifest), ("Cargo.lock", lock)] {
        // Rewritten only when different: an unchanged manifest must not force a build.
        if std::fs::read_to_string(dir.join(file)).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(dir.join(file), text).unwrap();
        }
    }
    std::fs::write(
        dir.join("src/main.rs"),
        format!(
            "#[fastly::main]\nfn main(_req: fastly::Request) -> Result<fastly::Response, fastly::Error> {{\n    \
             Ok(fastly::Response::from_body({body:?}))\n}}\n"
        ),
    )
    .unwrap();
}

/// Runs the helper in a fresh test process: what it printed, and whether cargo ran.
fn serve_once() -> (String, bool) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "helper_print_body", "--nocapture"])
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
    let (body, built) = serve_once();
    assert!(built, "the guest's source changed, yet it was not rebuilt");
    // The running host compiled the first module; the new one gets a template of its own.
    assert_eq!(body, second);
}

#[test]
#[ignore = "run by an_edited_guest_is_rebuilt_and_an_unchanged_one_is_not"]
fn helper_print_body() {
    let edge = Edge::start("rebuild-probe", "probe").expect("the probe guest starts");
    println!("body: {}", edge.get("/").send_blocking().text());
}
