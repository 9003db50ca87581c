use edge_test::{Edge, edge_test};

#[edge_test(service = todo, guest_timeout_ms = "soon")]
async fn not_literals(edge: Edge) {
    let _ = edge;
}

fn main() {}
