use edge_test::{Edge, edge_test};

#[edge_test(service = "todo")]
async fn generic<T: Default>(edge: Edge) {
    let _ = (edge, T::default());
}

fn main() {}
