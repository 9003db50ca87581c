use edge_test::{Edge, edge_test};

// SAFETY: never compiled into a program: this case shows the attribute rejecting `unsafe`.
#[edge_test(service = "todo")]
unsafe fn not_safe(_edge: Edge) {}

fn main() {}
