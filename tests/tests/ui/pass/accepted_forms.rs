//! Every form #[edge_test] accepts compiles (and its test functions exist).
use edge_test::{Edge, edge_test};

#[edge_test(service = "todo")]
async fn async_unit(_edge: Edge) {}

#[edge_test(service = "todo")]
fn blocking_unit(_edge: Edge) {}

#[edge_test(service = "todo", guest_timeout_ms = 2000)]
async fn with_a_time_limit(_edge: Edge) {}

#[edge_test(guest_timeout_ms = 1, service = "todo")]
async fn keys_in_any_order(_edge: Edge) {}

#[edge_test(service = "todo")]
async fn returns_a_result(_edge: Edge) -> Result<(), String> {
    Ok(())
}

#[edge_test(service = "todo")]
fn blocking_result(_edge: Edge) -> Result<(), std::io::Error> {
    Ok(())
}

/// A doc comment, kept on the test.
#[edge_test(service = "todo")]
#[ignore = "a reason"]
async fn ignored(_edge: Edge) {}

#[edge_test(service = "todo")]
#[should_panic(expected = "boom")]
async fn should_panic(_edge: Edge) {}

#[edge_test(service = "todo")]
#[cfg_attr(not(target_os = "linux"), ignore)]
async fn conditionally_ignored(_edge: Edge) {}

// `track_caller` is not a test attribute: it stays on the function, where it applies.
#[edge_test(service = "todo")]
#[track_caller]
fn keeps_its_own_attributes(_edge: Edge) {}

#[edge_test(service = "todo")]
#[allow(unused_variables)]
async fn lints_stay_on_the_function(edge: Edge) {
    let unused = edge;
}

#[edge_test(service = "todo")]
pub(crate) async fn with_visibility(_edge: Edge) {}

#[edge_test(service = "todo")]
async fn with_a_path_type(_edge: edge_test::Edge) {}

fn main() {}
