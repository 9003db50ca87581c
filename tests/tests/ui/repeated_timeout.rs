use edge_test::{Edge, edge_test};

#[edge_test(service = "todo", guest_timeout_ms = 100, guest_timeout_ms = 200)]
async fn twice(_edge: Edge) {}

fn main() {}
