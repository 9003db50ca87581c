use edge_test::{Edge, edge_test};

#[edge_test(service = "todo", servce = "todo")]
async fn misspelt_key(edge: Edge) {
    let _ = edge;
}

fn main() {}
