//! The todo guest's own unit tests (`guest/src/main.rs`, `mod tests`), run as a user runs
//! them: `cargo test` in the guest crate, whose `.cargo/config.toml` makes edge-test's
//! runner cargo's target runner. Each test gets a pristine instance: its KV write and cache
//! insert are never another test's.

use std::path::Path;

// edge-test's own tests build the thin runner the same way.
#[path = "../../../tests/tests/support/thin_runner.rs"]
mod thin_runner;

#[test]
fn the_guests_unit_tests_pass_each_in_its_own_instance() {
    let guest = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest");
    // Beside this binary's target directory, not in it: a nested cargo must not wait on the
    // lock of the build that is running this test.
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .unwrap()
        .join("edge-test/guest-tests");
    let mut cargo = thin_runner::nested_cargo(&guest, &target);
    cargo
        .arg("test")
        // The runner the guest's config names, built from edge-test's sources.
        .env(
            "CARGO_TARGET_WASM32_WASIP1_RUNNER",
            thin_runner::thin_runner_beside(Path::new(env!(
                "CARGO_BIN_EXE_todo-guest-test-runner-host"
            ))),
        );
    let output = cargo.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for test in [
        "the_cache_ttl_comes_from_the_settings_store",
        "a_note_put_in_kv_is_read_back",
        "the_declared_note_is_there_and_no_other",
        "a_todo_in_the_core_cache_is_served_without_the_origin",
    ] {
        assert!(
            stdout.contains(&format!("test tests::{test} ... ok")),
            "{stdout}"
        );
    }
    assert!(
        stdout
            .contains("test result: ok. 8 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"),
        "{stdout}"
    );
}
