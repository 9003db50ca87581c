use edge_test::{Edge, edge_test};

#[edge_test(service = "todo")]
async fn too_many(edge: Edge, other: u32) {
    let _ = (edge, other);
}

fn main() {}
