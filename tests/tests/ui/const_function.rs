use edge_test::{Edge, edge_test};

#[edge_test(service = "todo")]
const fn constant(_edge: Edge) {}

fn main() {}
