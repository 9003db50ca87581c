use edge_test::{Edge, edge_test};

#[edge_test]
async fn no_service(edge: Edge) {
    let _ = edge;
}

fn main() {}
