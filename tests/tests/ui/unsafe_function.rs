use edge_test::{Edge, edge_test};

#[edge_test(service = "todo")]
unsafe fn not_safe(_edge: Edge) {}

fn main() {}
