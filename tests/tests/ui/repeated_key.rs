use edge_test::{Edge, edge_test};

#[edge_test(service = "todo", service = "other")]
async fn repeated(edge: Edge) {
    let _ = edge;
}

fn main() {}
