use edge_test::{Edge, edge_test};

#[edge_test(service = "  ")]
async fn empty_service(edge: Edge) {
    let _ = edge;
}

fn main() {}
