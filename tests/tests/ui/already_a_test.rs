use edge_test::{Edge, edge_test};

#[edge_test(service = "todo")]
#[test]
async fn twice_a_test(edge: Edge) {
    let _ = edge;
}

fn main() {}
