use edge_test::{Edge, edge_test};

#[edge_test("todo")]
async fn positional(_edge: Edge) {}

fn main() {}
