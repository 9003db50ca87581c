use edge_test::{Edge, edge_test};

#[edge_test(service = "todo", guest_timeout_ms = 0)]
async fn no_time(_edge: Edge) {}

fn main() {}
